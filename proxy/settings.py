"""Process settings of the proxy: flags, ``SEMCACHE_*`` environment variables, a config file.

Precedence, highest first: command-line flags (passed as init values),
environment variables, the ``--config`` YAML file, the defaults below. A
typo'd key in the config file is an error naming it, not a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from gpu_embed.settings import EmbedderSettings
from semcache.adaptive import PressureTargets
from semcache.config.default_policy import DEFAULT_POLICY_FILE
from proxy.upstream.routing.options import RoutingOptions, StrategyName
from semcache.errors import ConfigError

DEFAULT_UPSTREAM = "http://localhost:8000/v1"


class ProxySettings(BaseSettings):
    """Everything ``semcache serve`` needs to run one proxy process."""

    model_config = SettingsConfigDict(env_prefix="SEMCACHE_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8080, ge=0, le=65535, description="listen port")
    upstreams: list[str] = Field(
        default_factory=lambda: [DEFAULT_UPSTREAM],
        description="OpenAI-compatible base URL of an engine, e.g. http://localhost:8000/v1; repeat for several; "
                    "MODEL=URL pins one model to it",
        json_schema_extra={"flag": "--upstream", "metavar": "[MODEL=]URL",
                           "shown_default": "none: `semcache serve` starts the local SmolLM2 engine"},
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="sent upstream instead of the caller's Authorization (prefer the env variable)"
    )
    upstream_connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to an upstream")
    upstream_read_timeout: float = Field(600.0, gt=0, description="seconds to wait for an upstream's next bytes")
    upstream_max_connections: int = Field(512, ge=1, description="pooled connections to the upstreams")
    routing: StrategyName = Field(
        "least_loaded", description="how a miss picks among a model's replicas: round_robin, least_loaded, "
                                    "session (sticky per conversation), prefix (where its prompt prefix was "
                                    "sent), kv (ask the LMCache controller)")
    routing_by_model: dict[str, StrategyName] = Field(
        default_factory=dict, description="per-model override of routing, e.g. {large: kv, small: prefix}")
    routing_options: RoutingOptions = Field(default_factory=RoutingOptions,
                                            description="weights and limits of session/prefix/kv routing")

    store: Literal["sqlite", "redis"] = Field("sqlite", description="where entries live (redis: for several replicas)")
    sqlite_path: Path = Field(Path(".semcache/cache.db"), description="SQLite file of store sqlite")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL of store redis")
    redis_prefix: str = Field("semcache", description="prefix of every Redis key (several caches in one Redis)")
    store_breaker_failures: int = Field(
        3, ge=0, description="consecutive store failures or timeouts that open the store's circuit breaker: the "
                             "cache is then bypassed at once and the store probed in the background; 0 = no breaker")
    store_call_timeout_s: float = Field(1.0, gt=0, description="deadline of one store call behind the breaker")
    policies: Path | None = Field(
        None, description="category policy YAML; unset = the default policy shipped with semcache (the repository's "
                          "policies/default.yaml), whose /admin reloads are not written back",
        json_schema_extra={"shown_default": "the built-in default policy"})
    iccache: Path | None = Field(None, description="IC-Cache config YAML (models, roles, selection); unset = off")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="embedder knobs: see gpu_embed/settings.py")

    admin_token: SecretStr | None = Field(
        None, description="bearer token of /admin (prefer the env variable); unset = admin disabled")
    price_prompt_per_million: float = Field(2.5, ge=0, description="$ per million prompt tokens, for the "
                                                                   "dashboard's money-saved figure")
    price_completion_per_million: float = Field(10.0, ge=0, description="$ per million completion tokens, for "
                                                                        "the dashboard's money-saved figure")
    dashboard_interval_s: float = Field(2.0, ge=0.2, description="how often /admin/live (the dashboard) sends "
                                                                 "a stats snapshot")
    show_query_text: bool = Field(False, description="admin stats and the dashboard show the query text of the "
                                  "top missed near-duplicates; off = digests only (privacy)")
    lookup_log_size: int = Field(10_000, ge=0, description="recent lookups kept per category for what-if "
                                                           "replays (/admin/whatif); 0 = none")
    lookup_log_keep_text: bool = Field(False, description="keep query text in the lookup log (admin-only); "
                                                          "default: digests only")
    persist_policy_reloads: bool = Field(True, description="write a policy reloaded via /admin over the policies file")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    body_timeout_s: float = Field(60.0, gt=0, description="a request body must arrive within this long of its "
                                                         "first read (else 408)")
    max_header_bytes: int = Field(64 * 1024, ge=4096, description="request line + headers; larger: 431")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send a complete request head within "
                                                            "this long (else 408 / closed)")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="an idle connection between requests is closed after it")
    max_connections: int = Field(4096, ge=1, description="open client connections per process; past it new ones get 503")
    coalesce: bool = Field(True, description="one upstream call for identical concurrent misses")
    speculative_forward: bool | Literal["auto"] = Field(
        "auto", description="send a request that is not an exact repeat upstream while the cache searches; a "
                            "semantic hit cancels it: misses stop paying for embedding + search. 'auto': only to "
                            "upstreams whose /metrics show vLLM (it aborts a request whose client left) while their "
                            "queue is empty; true: to any upstream (llama.cpp finishes dropped calls, hosted APIs "
                            "bill them); false: never")
    speculative_max_in_flight: int = Field(
        4, ge=1, description="speculate only while the chosen upstream has fewer requests from this proxy in "
                             "flight: an idle engine loses nothing to an aborted call, a busy one would")
    upstream_metrics_interval_s: float = Field(
        1.0, ge=0, description="how often each upstream's /metrics (vLLM names: queue, KV use) is scraped; "
                               "0 = never (speculation then needs speculative_forward: true)")
    audits: bool = Field(True, description="re-ask the engine for a share of semantic hits (policy audit.fraction) "
                                           "while it is idle, to measure the live false-hit rate; false = never")
    audit_any_engine: bool = Field(False, description="also audit upstreams without vLLM metrics (llama.cpp, "
                                                      "hosted APIs: their queue is unknown and they bill every call)")
    audit_max_in_flight: int = Field(1, ge=1, description="audits running at once; more due ones are skipped")
    adaptive: bool = Field(True, description="load-adaptive policies for categories with under_load.enabled "
                                             "(false: global kill switch, every category serves its policy)")
    adaptive_dry_run: bool = Field(False, description="log the moves adaptive policies would make (/admin/stats "
                                                      "events) but serve the policies as written")
    pressure: PressureTargets = Field(default_factory=PressureTargets,
                                      description="per-model targets: pressure 1.0 = at target (max_waiting, "
                                                  "ttft_s, kv_usage, max_in_flight); env e.g. "
                                                  "SEMCACHE_PRESSURE__MAX_WAITING=16")
    verify_keys: bool = Field(True, description="check a caller's key upstream before serving it a cached answer "
                                                "(off when upstream_api_key is set)")
    key_check_ttl_s: float = Field(300.0, gt=0, description="how long an accepted key stays trusted")
    key_check_timeout_s: float = Field(2.0, gt=0, description="how long a hit waits for the key check's GET /models; "
                                                              "past it the hit is served and the key asked again "
                                                              "next time")
    tenant_salt: str = Field("", description="mixed into the API-key hash that names a tenant")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level (debug also logs every request)")

    @property
    def policy_file(self) -> Path:
        """The policy file in force: ``policies``, or the default shipped in the package."""
        return self.policies or DEFAULT_POLICY_FILE

    @field_validator("upstreams")
    @classmethod
    def _upstreams_are_urls(cls, value: list[str]) -> list[str]:
        for spec in value:
            url = spec.split("=", 1)[1] if "=" in spec.split("://", 1)[0] else spec
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {spec!r}: expected URL or MODEL=URL with http(s)://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if yaml_file:
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),)
        return sources


def load_settings(overrides: dict[str, Any] | None = None, config_file: Path | None = None) -> ProxySettings:
    """Build settings from flags (``overrides``), env and an optional YAML config file."""
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        if config_file is None:
            return ProxySettings(**values)
        if not Path(config_file).is_file():
            raise ConfigError(f"{config_file}: config file not found")

        class _FileSettings(ProxySettings):
            model_config = SettingsConfigDict(yaml_file=str(config_file))

        return _FileSettings(**values)
    except ValueError as exc:  # pydantic.ValidationError names every bad field
        where = f"{config_file}: " if config_file else ""
        raise ConfigError(f"{where}invalid settings: {exc}") from exc

"""``create_app(settings)``: the proxy as an ASGI app, everything built per app (no globals).

The lifespan builds, in order: the pooled upstream client, the embedder
(off the event loop: loading a model blocks), the store (behind a circuit
breaker, :mod:`semcache.stores.breaker`) and the cache. If the cache cannot
start (say Redis is down) the proxy serves at once, uncached
(``X-Semcache-Status: bypass``), and retries the start in the background
until the store answers; ``/readyz`` says which mode it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from proxy.admin.api import bearer_check, build_admin_router
from proxy.admin.dashboard import build_dashboard_router
from proxy.admin.tuning import build_tuning_router
from proxy.errors import install_error_handlers
from proxy.api.feedback import build_feedback_router
from proxy.upstream.engine_load import metrics_url
from proxy.api.iccache import ICCacheService
from proxy.api.keycheck import KeyCheck
from proxy.api.limits import BodySizeLimit
from proxy.admin.metrics import ProxyMetrics
from proxy.api.routes import build_health_router, build_openai_router
from proxy.api.serving import CachedEndpoint
from proxy.settings import ProxySettings
from proxy.api.audit import Auditor
from proxy.api.speculate import Speculator
from proxy.upstream.pool import UpstreamPool
from proxy.upstream.load import UpstreamLoad, engine_idle
from proxy.upstream.pressure import model_pressure
from semcache import RedisStore, SemanticCache, SQLiteStore, SystemClock, load_policies
from semcache.errors import CacheUnavailableError, ConfigError
from semcache.iccache import load_iccache_config
from semcache.observe.lookup_log import LookupLog
from semcache.protocols import Embedder, Store
from semcache.stores.breaker import BreakerStore

log = logging.getLogger("semcache.proxy")
CACHE_START_RETRY_S = (0.25, 2.0)  # first and longest pause between start attempts (doubling)


@dataclass
class _Parts:
    """What the lifespan builds; routes reach it through closures, never globals."""

    pool: UpstreamPool | None = None
    embedder: Embedder | None = None
    cache: SemanticCache | None = None
    endpoint: CachedEndpoint | None = None
    iccache: ICCacheService | None = None
    upstream_load: UpstreamLoad | None = None
    auditor: Auditor | None = None
    cache_error: str | None = "starting"

    def need(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"proxy not started: {name} missing")  # only outside the lifespan
        return value


def make_store(settings: ProxySettings) -> Store:
    """The configured store, behind a circuit breaker unless ``store_breaker_failures`` is 0."""
    store: Store
    if settings.store == "redis":
        store = RedisStore(url=settings.redis_url, prefix=settings.redis_prefix)
    else:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(settings.sqlite_path)
    if settings.store_breaker_failures == 0:
        return store
    return BreakerStore(store, failures=settings.store_breaker_failures, call_timeout_s=settings.store_call_timeout_s)


def build_iccache(settings: ProxySettings, pool: UpstreamPool, embedder: Embedder, clock,
                  upstream_load: UpstreamLoad | None = None) -> ICCacheService | None:
    """The IC-Cache service if ``settings.iccache`` names a config (its models must have upstreams).

    A model's load comes from the proxy's scrapes of all its upstreams, unless the
    config names a ``metrics_url`` for it (or upstream scraping is off): then
    IC-Cache scrapes that one URL itself.
    """
    if settings.iccache is None:
        return None
    config = load_iccache_config(settings.iccache)
    engines = {}
    for spec in config.models:
        upstreams = pool.router.candidates(spec.name)
        if not upstreams:
            raise ConfigError(f"{settings.iccache}: no upstream serves model {spec.name!r} ({spec.role})")
        if spec.metrics_url or upstream_load is None:
            engines[spec.name] = spec.metrics_url or metrics_url(upstreams[0].base_url)

    def model_load(model: str):
        return upstream_load.model_load(pool.router.candidates(model)) if upstream_load is not None else None

    return ICCacheService(config, embedder, clock, engines=engines, scrape_interval_s=config.scrape_interval_s,
                          in_flight=lambda model: sum(u.in_flight for u in pool.router.candidates(model)),
                          upstream_load=model_load)


async def build_default_embedder(settings: ProxySettings) -> Embedder:
    from gpu_embed import build_embedder  # heavy imports only when the proxy starts

    built = await asyncio.to_thread(build_embedder, settings.embedder)
    return await built if inspect.isawaitable(built) else built


def create_app(settings: ProxySettings, *, embedder: Embedder | None = None,
               upstream_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Build one proxy app. ``embedder``/``upstream_transport`` replace the configured ones (tests)."""
    metrics = ProxyMetrics()
    parts = _Parts()

    async def start_cache(cache: SemanticCache, first_try: asyncio.Event) -> None:
        pause, attempts = CACHE_START_RETRY_S[0], 0
        while True:
            try:
                await cache.start()
            except CacheUnavailableError as exc:
                parts.cache_error = f"{type(exc).__name__}: {exc}"
                first_try.set()  # serve (uncached) now, not after the store comes back
                attempts += 1
                if attempts == 1 or attempts % 30 == 0:
                    log.warning("cache start failed, serving uncached; retrying every <=%.0fs: %s",
                                CACHE_START_RETRY_S[1], parts.cache_error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, CACHE_START_RETRY_S[1])
                continue
            parts.cache_error = None
            assert parts.endpoint is not None
            parts.endpoint.cache_ready = True
            log.info("cache ready (%s store)", settings.store)
            return

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        policies = load_policies(settings.policy_file)  # an invalid policy file stops the start
        parts.pool = UpstreamPool(settings, upstream_transport)
        starter = None
        gc_watch = metrics.watch_gc()
        gc_watch.start()
        try:
            parts.embedder = embedder or await build_default_embedder(settings)
            clock = SystemClock()
            parts.cache = SemanticCache(policies=policies, store=make_store(settings),
                                        embedder=parts.embedder, clock=clock)
            parts.cache.stats.near_misses.show_query_text = settings.show_query_text
            parts.cache.lookup_log = LookupLog(settings.lookup_log_size, keep_text=settings.lookup_log_keep_text)
            metrics.watch_cache(parts.cache.stats_snapshot)
            metrics.watch_verifier_memo(parts.cache.verifier.memo_snapshot)
            if settings.upstream_metrics_interval_s > 0:
                parts.upstream_load = UpstreamLoad(parts.pool.router.upstreams, client=parts.pool.metrics_client,
                                                   interval_s=settings.upstream_metrics_interval_s)
                await parts.upstream_load.refresh()  # know which engines are vLLM before the first request
                parts.upstream_load.start()
                parts.pool.router.attach_engines(parts.upstream_load)  # routing weighs every client's load
            parts.cache.adaptive.pressure = model_pressure(parts.pool, parts.upstream_load, settings.pressure)
            parts.cache.adaptive.set_switches(enabled=settings.adaptive, dry_run=settings.adaptive_dry_run)
            metrics.watch_adaptive(parts.cache.adaptive.snapshot)
            parts.iccache = build_iccache(settings, parts.pool, parts.embedder, clock, parts.upstream_load)
            if parts.iccache is not None:
                parts.cache.listeners.append(parts.iccache)  # before start: the rebuild fills the bank
                parts.iccache.attach_store(parts.cache.doc_store)  # learned utility persists on the entries
                metrics.watch_iccache(parts.iccache.stats.snapshot)
                parts.iccache.start()
            keycheck = None
            if settings.verify_keys and settings.upstream_api_key is None:
                keycheck = KeyCheck(parts.pool.probe_key, ttl_s=settings.key_check_ttl_s,
                                    timeout_s=settings.key_check_timeout_s)
            speculator = None
            if settings.speculative_forward is not False:
                speculator = Speculator(parts.cache, parts.pool, metrics, below=settings.speculative_max_in_flight,
                                        race_chat=parts.iccache is None, load=parts.upstream_load,
                                        any_engine=settings.speculative_forward is True)
            if settings.audits:
                load = parts.upstream_load
                parts.auditor = Auditor(parts.cache, parts.pool, metrics, max_in_flight=settings.audit_max_in_flight,
                                        idle=lambda u: engine_idle(u, load, below=settings.speculative_max_in_flight,
                                                                   any_engine=settings.audit_any_engine))
                parts.cache.adaptive.live_estimate = parts.auditor.estimate  # live audits bound relaxation
            parts.endpoint = CachedEndpoint(
                parts.cache, parts.pool, metrics, coalesce=settings.coalesce, iccache=parts.iccache,
                keycheck=keycheck, speculator=speculator, auditor=parts.auditor)
            first_try = asyncio.Event()
            starter = asyncio.create_task(start_cache(parts.cache, first_try), name="semcache-start")
            tried = asyncio.create_task(first_try.wait())
            # Serve once the cache started or its first attempt failed; at most 30 s for a slow rebuild.
            await asyncio.wait({starter, tried}, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
            tried.cancel()
            yield
        finally:
            gc_watch.stop()
            if starter is not None:
                starter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starter
            if parts.auditor is not None:
                await parts.auditor.aclose()
            if parts.iccache is not None:
                await parts.iccache.aclose()
            if parts.upstream_load is not None:
                await parts.upstream_load.aclose()
            if parts.cache is not None:
                with contextlib.suppress(Exception):
                    await parts.cache.close()
            if parts.embedder is not None and embedder is None and hasattr(parts.embedder, "aclose"):
                await parts.embedder.aclose()
            await parts.pool.aclose()

    app = FastAPI(title="semcache", version="0.1.0", lifespan=lifespan, strict_content_type=False,
                  description="Semantic response cache for LLM serving: an OpenAI-compatible proxy.")
    install_error_handlers(app)

    def store_circuit() -> dict[str, Any] | None:
        store = parts.cache.doc_store if parts.cache is not None else None
        return store.status() if isinstance(store, BreakerStore) else None

    def ready() -> dict[str, Any]:
        """Ready = the cache is in use; otherwise requests are served uncached (``mode: bypass``)."""
        circuit = store_circuit()
        down = parts.cache_error or (f"store circuit {circuit['state']}: {circuit['last_error']}"
                                     if circuit is not None and circuit["state"] != "closed" else None)
        return {"ready": down is None, "mode": "bypass" if down else "cached", "cache": down or "ok",
                "store": settings.store, "store_circuit": circuit, "upstreams": len(settings.upstreams)}

    def proxy_stats() -> dict[str, Any]:
        pool = parts.need("pool")
        return {"cache_ready": parts.cache_error is None, "cache_error": parts.cache_error,
                "store_circuit": store_circuit(),
                "coalescing": len(parts.need("endpoint").coalescer),
                "upstreams": [{"base_url": u.base_url, "model": u.model, "in_flight": u.in_flight,
                               "sent": u.sent,
                               "engine": parts.upstream_load.snapshot(u) if parts.upstream_load else None}
                              for u in pool.router.upstreams],
                "routing": pool.router.snapshot(),
                "iccache": parts.iccache.snapshot() if parts.iccache is not None else None,
                "audits": parts.auditor.snapshot() if parts.auditor is not None else None,
                "prices": {"prompt_per_million": settings.price_prompt_per_million,
                           "completion_per_million": settings.price_completion_per_million},
                "adaptive": parts.cache.adaptive.snapshot() if parts.cache is not None else None}

    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app.include_router(build_openai_router(lambda: parts.need("endpoint"), lambda: parts.need("pool"),
                                           settings.tenant_salt, token, settings.routing_options.session_header))
    app.include_router(build_health_router(ready, metrics))
    app.include_router(build_admin_router(token, lambda: parts.need("cache"), proxy_stats,
                                          settings.policies if settings.persist_policy_reloads else None))
    app.include_router(build_dashboard_router(
        token, lambda: {"cache": parts.need("cache").stats_snapshot(), "proxy": proxy_stats()},
        bearer_check(token) if token else None, interval_s=settings.dashboard_interval_s))
    if token:
        app.include_router(build_tuning_router(bearer_check(token), lambda: parts.need("cache"),
                                               settings.policies if settings.persist_policy_reloads else None))
    app.include_router(build_feedback_router(lambda: parts.need("cache"), settings.tenant_salt,
                                             lambda: parts.iccache, lambda: parts.need("endpoint").keycheck,
                                             token))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    return app

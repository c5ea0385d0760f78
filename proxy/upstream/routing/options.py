"""Settings of the routing strategies (``ProxySettings.routing_options``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StrategyName = Literal["round_robin", "least_loaded", "session", "prefix", "kv"]


class RoutingOptions(BaseModel):
    """How ``session``, ``prefix`` and ``kv`` routing weigh cached prefixes against load."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.5, ge=0, description="prefix score = matched fraction - beta x load / busiest load")
    balance_abs_threshold: float = Field(
        4.0, ge=0, description="imbalanced (then: least-loaded) when the busiest replica has this many more "
                               "requests than the idlest ...")
    balance_rel_threshold: float = Field(1.5, ge=1.0, description="... and more than this times its load")
    block_chars: int = Field(64, ge=8, description="prefix routing hashes the rendered prompt in blocks of this "
                                                   "many characters (~16 tokens)")
    max_prefix_chars: int = Field(65536, ge=64, description="only this much of a prompt is hashed for routing")
    prefix_capacity_blocks: int = Field(
        16384, ge=1, description="blocks remembered per replica (LRU), roughly its prefix cache")
    session_header: str | None = Field(
        "x-session-id", description="session routing: a request header naming the caller's session (its value is "
                                    "the key); without it, the OpenAI `user` field, else the opening turns")
    session_chars: int = Field(4096, ge=64, description="a session without `user` is keyed by this much of its "
                                                       "leading system turns and first user turn")
    lmcache_controller_url: str | None = Field(
        None, description="kv routing: the LMCache controller (e.g. http://lmcache-controller:9000)")
    lmcache_instances: dict[str, str] = Field(
        default_factory=dict, description="kv routing: LMCache instance_id -> upstream base URL it runs in")
    kv_timeout_s: float = Field(0.25, gt=0, description="kv routing: limit on tokenize + lookup, then fall back")
    kv_retry_s: float = Field(10.0, ge=0, description="kv routing: after a failed lookup, use prefix routing "
                                                     "for this long before asking the controller again")
    kv_min_match_fraction: float = Field(0.25, ge=0, le=1, description="kv routing: shorter matches fall back")

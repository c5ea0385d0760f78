"""Settings of the engine simulator (env prefix ``SEMCACHE_SIM_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from evaluation.engine_sim.faults import Fault


class SimSettings(BaseSettings):
    """How the simulated engine is named, how fast it is and how much it holds.

    The defaults sketch one mid-size model on one GPU: prefill is cheap per
    token, decode costs one step per output token, at most ``max_batch``
    requests run at once and the rest wait in a bounded FIFO queue.
    """

    model_config = SettingsConfigDict(env_prefix="SEMCACHE_SIM_", extra="ignore")

    model: str = Field("sim-model", description="served model name")
    host: str = "127.0.0.1"
    port: int = Field(8100, ge=0, le=65535)
    prefill_ms_per_token: float = Field(0.05, ge=0, description="prefill time per prompt token")
    decode_ms_per_token: float = Field(10.0, ge=0, description="decode time per output token")
    decode_batch_penalty: float = Field(
        0.0, ge=0, description="relative slowdown of a decode step per extra running request"
    )
    max_batch: int = Field(32, ge=1, description="requests decoded concurrently")
    max_waiting: int = Field(1024, ge=0, description="queued requests before answering 503")
    kv_cache_tokens: int = Field(65536, ge=1, description="KV-cache capacity in tokens")
    prefix_caching: bool = Field(True, description="reuse cached KV of a prompt's leading blocks (vLLM's "
                                                   "automatic prefix caching): prefill only the uncached tokens")
    block_size: int = Field(16, ge=1, description="tokens per KV block (vLLM's default on GPUs: 16)")
    prefix_cache_tokens: int | None = Field(
        None, ge=1, description="tokens the prefix cache holds (LRU); default: kv_cache_tokens")
    max_model_len: int = Field(8192, ge=16)
    default_max_tokens: int = Field(32, ge=1, description="output tokens when the request names none")
    api_key: str | None = Field(
        None, description="like vLLM's --api-key: /v1 routes need 'Authorization: Bearer KEY' (401 otherwise)"
    )
    fault: Fault = Field(
        "none", description="misbehave on every request: none, cut_stream, drop_stream, json_to_stream, openai_headers, "
        "rate_limited (see evaluation/engine_sim/faults.py; a request's sim_fault field picks its own)"
    )
    answers_file: Path | None = Field(
        None, description='JSONL of {"question","answer"}: matching prompts get that answer'
    )

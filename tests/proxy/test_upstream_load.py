"""Per-upstream engine metrics: which engines are vLLM, and their queues (proxy.upstream.load)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.upstream.engine_load import NotVLLMError, parse_vllm_metrics
from proxy.upstream.pool import Upstream
from proxy.upstream.load import UpstreamLoad


def test_a_metrics_body_without_vllm_names_is_not_an_idle_engine():
    with pytest.raises(NotVLLMError):
        parse_vllm_metrics("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n")
    m = parse_vllm_metrics("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2.0\n")
    assert (m.running, m.waiting) == (2.0, 0.0)  # a vLLM metric missing from the body is 0, not unknown


def _other_engine() -> FastAPI:
    """An OpenAI-style engine with Prometheus metrics but not vLLM's (and one without /metrics)."""
    app = FastAPI()

    @app.get("/other/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("# TYPE http_requests_total counter\nhttp_requests_total 7.0\n")

    return app


class _Dispatch(httpx.AsyncBaseTransport):
    """Routes by host to in-process ASGI apps (the engine simulator and another engine)."""

    def __init__(self, apps: dict[str, FastAPI]):
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


async def test_vllm_engines_are_known_others_have_no_load():
    sim = create_sim_app(SimSettings(model="m", max_batch=1, decode_ms_per_token=50.0))
    transport = _Dispatch({"vllm": sim, "other": _other_engine()})
    upstreams = [Upstream.parse("http://vllm/v1"), Upstream.parse("http://other/other/v1"),
                 Upstream.parse("http://other/missing/v1")]
    async with httpx.AsyncClient(transport=transport) as client:
        load = UpstreamLoad(upstreams, client=client)
        for u in upstreams:  # before any scrape nothing is known
            assert load.is_vllm(u) is False and load.waiting(u) is None
        await load.refresh()
        vllm, other, missing = upstreams
        assert load.is_vllm(vllm) and load.waiting(vllm) == 0
        assert not load.is_vllm(other) and load.waiting(other) is None  # metrics, but not vLLM's
        assert not load.is_vllm(missing) and load.snapshot(missing)["vllm_metrics"] is False  # 404
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        flood = [asyncio.create_task(client.post("http://vllm/v1/chat/completions", json=body)) for _ in range(4)]
        try:
            for _ in range(100):
                await asyncio.sleep(0.01)
                await load.refresh()
                if (load.waiting(vllm) or 0) >= 2:
                    break
            assert load.waiting(vllm) >= 2 and load.snapshot(vllm)["running"] == 1
        finally:
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
        await load.aclose()


async def test_a_models_load_sums_its_vllm_replicas():
    sims = {name: create_sim_app(SimSettings(model="m", max_batch=1, decode_ms_per_token=50.0))
            for name in ("r1", "r2")}
    transport = _Dispatch({**sims, "other": _other_engine()})
    r1, r2, other = (Upstream.parse("http://r1/v1"), Upstream.parse("http://r2/v1"),
                     Upstream.parse("http://other/other/v1"))
    async with httpx.AsyncClient(transport=transport) as client:
        load = UpstreamLoad([r1, r2, other], client=client)
        await load.refresh()
        assert load.model_load([other]) is None  # no vLLM replica: unknown, not idle
        idle = load.model_load([r1, r2, other])
        assert (idle.waiting, idle.running) == (0, 0)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        flood = [asyncio.create_task(client.post(f"http://{host}/v1/chat/completions", json=body))
                 for host in ("r1", "r2", "r2", "r2")]
        try:
            for _ in range(100):
                await asyncio.sleep(0.01)
                await load.refresh()
                if load.waiting(r2) == 2 and load.waiting(r1) == 0 and load.snapshot(r1)["running"] == 1:
                    break
            both = load.model_load([r1, r2, other])
            assert (both.waiting, both.running) == (2, 2)
        finally:
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
        await load.aclose()

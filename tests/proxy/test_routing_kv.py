"""kv routing against a fake LMCache controller (its real /lookup shape) and engines' /tokenize."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from evaluation.engine_sim import SimSettings, create_app
from proxy.upstream.local_llm import free_port
from proxy.upstream.pool import Upstream
from proxy.upstream.routing import Balancer, KvAffinity, PrefixAffinity
from proxy.upstream.routing.kv import LMCacheLookup

DOC = "The warranty covers parts and labour for two years. " * 30


class LookupRequest(BaseModel):
    tokens: list[int]


class FakeController:
    """LMCache's controller as ``lmcache.v1.api_server`` answers ``POST /lookup``: per instance
    the longest stored prefix of the tokens, in whole chunks (``chunk`` tokens)."""

    def __init__(self, chunk: int = 16, delay_s: float = 0.0):
        self.chunk = chunk
        self.delay_s = delay_s
        self.stored: dict[str, list[list[int]]] = {}
        self.lookups = 0
        app = FastAPI()

        @app.post("/lookup")
        async def lookup(req: LookupRequest) -> dict:
            self.lookups += 1
            await asyncio.sleep(self.delay_s)
            layout = {}
            for instance, seqs in self.stored.items():
                best = max((self._common(req.tokens, s) for s in seqs), default=0)
                if best:
                    layout[instance] = ["LocalCPUBackend", best]
            return {"event_id": "Lookup" + str(uuid.uuid4()), "layout_info": layout}

        self.app = app

    def _common(self, a: list[int], b: list[int]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n // self.chunk * self.chunk


def _ups() -> list[Upstream]:
    return [Upstream(base_url="http://e0:8000/v1"), Upstream(base_url="http://e1:8000/v1")]


def _client(controller: FakeController) -> httpx.AsyncClient:
    engine = httpx.ASGITransport(app=create_app(SimSettings(model="m")))
    return httpx.AsyncClient(mounts={"http://ctrl:9000": httpx.ASGITransport(app=controller.app),
                                     "http://e0:8000": engine, "http://e1:8000": engine})


def _chat(question: str) -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": DOC}, {"role": "user", "content": question}]}


def _kv(client: httpx.AsyncClient, url: str = "http://ctrl:9000", **kw) -> KvAffinity:
    return KvAffinity(PrefixAffinity(Balancer()), LMCacheLookup(url, client),
                      {"inst-a": "http://e0:8000/v1", "inst-b": "http://e1:8000/v1"}, **kw)


async def _b_holds(controller: FakeController, client: httpx.AsyncClient, question: str
                   ) -> tuple[list[Upstream], KvAffinity]:
    """Replicas and a kv router, LMCache instance inst-b (replica e1) holding ``question``'s prompt."""
    body = _chat(question)
    r = await client.post("http://e0:8000/tokenize", json={"model": "m", "messages": body["messages"]})
    controller.stored["inst-b"] = [r.json()["tokens"]]
    return _ups(), _kv(client)


async def test_kv_routes_to_the_instance_the_controller_names():
    controller = FakeController()
    async with _client(controller) as client:
        ups, kv = await _b_holds(controller, client, "Does it cover water damage?")
        chosen = await kv.achoose(ups, _chat("How do I claim it?"))
    assert chosen.base_url == "http://e1:8000/v1" and controller.lookups == 1 and kv.answered == 1
    # the choice is remembered: prefix routing (the sync path) now agrees with the controller
    assert kv.choose(ups, _chat("Is the battery covered?")).base_url == "http://e1:8000/v1"


async def test_kv_gives_way_to_load_under_imbalance_and_to_prefix_on_short_matches():
    controller = FakeController()
    async with _client(controller) as client:
        ups, kv = await _b_holds(controller, client, "q")
        ups[1].in_flight = 8  # the holder is swamped
        assert (await kv.achoose(ups, _chat("How do I claim it?"))) is ups[0]
        ups[1].in_flight = 0
        controller.stored["inst-b"] = [[1, 2, 3]]  # matches nothing of this prompt
        await kv.achoose(ups, _chat("Another question?"))
    assert kv.answered == 2 and kv.fell_back == 0


async def test_kv_falls_back_to_prefix_routing_when_the_controller_is_down_and_retries_later():
    now = [100.0]
    async with httpx.AsyncClient() as client:
        kv = _kv(client, f"http://127.0.0.1:{free_port()}", clock=lambda: now[0], retry_s=10.0)
        ups = [Upstream(base_url=f"http://127.0.0.1:{free_port()}/v1"), Upstream(base_url="http://127.0.0.1:1/v1")]
        first = await kv.achoose(ups, _chat("q1"))  # the engine's /tokenize is unreachable too
        assert kv.fell_back == 1 and kv.asked == 1
        second = await kv.achoose(ups, _chat("q2"))  # within retry_s: not asked again
        assert kv.asked == 1 and second is first  # prefix routing kept the shared document together
        now[0] += 11
        await kv.achoose(ups, _chat("q3"))
        assert kv.asked == 2


async def test_a_slow_controller_costs_at_most_the_timeout():
    controller = FakeController(delay_s=2.0)
    async with _client(controller) as client:
        kv = _kv(client, timeout_s=0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        chosen = await kv.achoose(_ups(), _chat("q"))
        elapsed = loop.time() - t0
    assert chosen is not None and kv.fell_back == 1 and elapsed < 1.0


async def test_lookup_reads_the_real_response_shape():
    controller = FakeController(chunk=1)
    async with _client(controller) as client:
        controller.stored = {"inst-a": [[5, 6, 7, 8]], "inst-b": [[5, 6]]}
        assert await LMCacheLookup("http://ctrl:9000", client).lookup([5, 6, 7, 9]) == {"inst-a": 3, "inst-b": 2}

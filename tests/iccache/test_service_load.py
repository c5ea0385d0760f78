"""The proxy's IC-Cache service: engines without /metrics are judged by the proxy's own in-flight count."""

from __future__ import annotations

from semcache.clock import ManualClock
from semcache.iccache import EngineLoad
from tests.iccache.helpers import DIM, config, unit
from proxy.upstream.engine_load import metrics_url
from proxy.api.iccache import ICCacheService
from semcache import LookupResult
from semcache.results import KeyContext


class _Dim:
    dim = DIM
    identity = "test/unit"

    async def embed(self, texts):  # pragma: no cover - routing never embeds
        raise AssertionError("not used")


def _miss() -> LookupResult:
    ctx = KeyContext(norm=None, policy=None, tenant="t", namespace="", partition="p", text_digest="d",
                     vector=unit(1, 0))
    return LookupResult("miss", category="support", category_reason="test", reason="no candidate", context=ctx)


BODY = {"model": "big", "messages": [{"role": "user", "content": "where is my order?"}]}


def test_in_flight_requests_stand_in_for_a_queue_when_an_engine_has_no_metrics():
    busy = {"big": 0, "tiny": 0}
    service = ICCacheService(config(), _Dim(), ManualClock(0.0), engines={}, in_flight=busy.__getitem__)
    service.decide(BODY, _miss())
    assert service.load.get("big") == EngineLoad()
    busy["big"] = 5
    service.decide(BODY, _miss())
    load = service.load.get("big")
    assert (load.running, load.waiting) == (1, 4)
    assert service.load.get("tiny").waiting == 0


def test_scraped_engines_keep_their_scraped_load():
    service = ICCacheService(config(), _Dim(), ManualClock(0.0), engines={"big": "http://127.0.0.1:9/metrics"},
                             in_flight=lambda model: 7)
    service.scraper._seen.add("big")  # as after a successful scrape
    service.load.set("big", EngineLoad(waiting=2, running=3))
    service.decide(BODY, _miss())
    assert (service.load.get("big").running, service.load.get("big").waiting) == (3, 2)
    assert service.load.get("tiny").waiting == 6  # no metrics configured for it: in-flight count


def test_metrics_url_sits_beside_v1():
    assert metrics_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000") == "http://h:8000/metrics"

"""LangChain's standard chat-model suite (``langchain-tests``) with ``ChatOpenAI``, three times:
against the engine simulator directly, through the proxy with a cold cache, and through the
same proxy again (warm: the suite's requests are now hits). Every run must pass alike.

Turned off, because the engine simulator cannot do them (it answers every
request with a deterministic pseudo-sentence): tool calling, tool choice,
structured output and JSON mode (they need the model to produce the requested
structure), image/PDF/audio inputs (default off anyway), and the model
override test (one model per engine here).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from tests.proxy.conftest import BagOfWordsEmbedder, make_settings, metric_sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory, live_server):
    """``{"direct": sim URL, "proxy": proxy URL}``, both live for the whole module."""
    tmp = tmp_path_factory.mktemp("langchain")
    (tmp / "policies.yaml").write_text("categories:\n  default: {threshold: 0.9}\n")
    with live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.0,
                                                default_max_tokens=64))) as sim:
        settings = make_settings(tmp, tmp / "policies.yaml", upstreams=[f"{sim.url}/v1"])
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as proxy:
            yield {"direct": sim.url + "/v1", "proxy": proxy.url + "/v1", "proxy_root": proxy.url}


class _OnTheSimulator(ChatModelIntegrationTests):
    target = "direct"
    base_url = ""

    @pytest.fixture(autouse=True)
    def _target(self, servers):
        type(self).base_url = servers[self.target]

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # stream_usage: ask for the usage chunk, as ChatOpenAI does against api.openai.com.
        # An async client per model: ChatOpenAI otherwise shares one across instances, and one
        # made on a finished test's event loop fails on the next ("Event loop is closed").
        return {"model": "sim-model", "base_url": type(self).base_url, "api_key": "sk-test",
                "stream_usage": True, "max_retries": 0, "http_async_client": httpx.AsyncClient(timeout=60)}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False


class TestDirect(_OnTheSimulator):
    target = "direct"


class TestProxyCold(_OnTheSimulator):
    target = "proxy"


class TestProxyWarm(_OnTheSimulator):
    target = "proxy"


def test_the_warm_run_was_answered_from_the_cache(servers):
    metrics = httpx.get(servers["proxy_root"] + "/metrics").text
    hits = metric_sample(metrics, "semcache_requests_total", status="hit")
    misses = metric_sample(metrics, "semcache_requests_total", status="miss")
    assert hits >= misses > 0  # the warm run repeats every request of the cold one

"""End to end: the diff rule through the real proxy (uvicorn on loopback, the official openai
client, the real embedder, the engine simulator upstream)."""

from __future__ import annotations

import random
from pathlib import Path

import openai
import pytest

from evaluation.workloads.longpairs import DOC_QUESTIONS, LONG_WORDS, rag_context
from proxy.app import create_app
from proxy.settings import ProxySettings

POLICIES = """\
defaults:
  threshold: 0.90
  cache_truncated: true
categories:
  default: {}
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, live_server, engine_sim):
    tmp: Path = tmp_path_factory.mktemp("diffrule-proxy")
    (tmp / "policies.yaml").write_text(POLICIES)
    settings = ProxySettings(upstreams=[f"sim-model={engine_sim.url}/v1"], sqlite_path=tmp / "cache.db",
                             policies=tmp / "policies.yaml", log_level="warning")
    with live_server(create_app(settings)) as server:
        yield server


def _ask(proxy, content: str) -> tuple[str, str]:
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-diffrule", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=[{"role": "user", "content": content}], max_tokens=16)
    return raw.headers["x-semcache-status"], raw.parse().choices[0].message.content


def test_long_rag_prompt_with_other_question_is_forwarded_and_reworded_one_is_served(proxy):
    body = rag_context(random.Random(11), 3000)
    asked, reworded = DOC_QUESTIONS[0]
    status, answer = _ask(proxy, f"{body}\n\n{asked}")
    assert status == "miss"
    status, _ = _ask(proxy, f"{body}\n\n{DOC_QUESTIONS[1][0]}")
    assert status == "miss"  # before the diff rule: hit, the count served as a translation
    status, again = _ask(proxy, f"{body}\n\n{reworded}")
    assert status == "hit" and again == answer


@pytest.mark.parametrize("kind", ["dna", "identifier"])
def test_prompts_differing_only_in_an_unreadable_word_do_not_share_answers(proxy, kind):
    make, template, _ = LONG_WORDS[kind]
    rng = random.Random(kind + "e2e")
    first, second = template.format(make(rng)), template.format(make(rng))
    assert _ask(proxy, first)[0] == "miss"
    assert _ask(proxy, second)[0] == "miss"  # before: hit at similarity 1.0000
    assert _ask(proxy, first)[0] == "hit"

"""Issue #14 item 1: a policy regex must not backtrack on user text (ReDoS)."""

from __future__ import annotations

import time

import httpx
import pytest

from evaluation.bench.stall_harness import HealthProber
from semcache.request.categories import Classifier
from semcache.errors import PolicyError
from semcache.request.keys import CacheRequest, normalize
from semcache.config.policy import load_policies, load_policies_text
from tests.adversarial.conftest import ROOT, chat


def classify(text: str, model: str = "m"):
    classifier = Classifier(load_policies(ROOT / "policies/default.yaml"))
    request = CacheRequest("chat", chat(text, model))
    return classifier.by_rules(request, normalize("chat", request.body))


def test_default_code_pattern_is_linear_in_the_text():
    # Python's re took ~5 s here (quadratic backtracking of \w+\(\)).
    started = time.perf_counter()
    decision = classify("a" * 40_000)
    assert time.perf_counter() - started < 0.5
    assert decision.name == "default"


def test_rules_see_head_and_tail_of_a_long_text():
    middle = "word " * 200_000
    assert classify("call foo() please " + middle).name == "code"
    assert classify(middle + " what does foo() return").name == "code"
    assert classify("hello " + middle + " bye").name == "default"


def test_model_pattern_on_a_huge_model_name_is_bounded():
    started = time.perf_counter()
    assert classify("hi", model="c" * 1_000_000 + "coder").name == "default"  # past the 256 chars looked at
    assert classify("hi", model="my-coder-7b").name == "code"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("pattern", [r"(?<!\w)foo", r"(a)\1", r"(?=x)y"])
def test_patterns_re2_cannot_run_are_policy_errors_naming_the_field(pattern):
    text = f"categories:\n  c:\n    match: {{patterns: ['{pattern}']}}\n  default: {{}}\n"
    with pytest.raises(PolicyError) as info:
        load_policies_text(text, source="p.yaml")
    assert "categories.c.match.patterns" in str(info.value)
    assert "RE2" in str(info.value)


def test_bad_model_pattern_names_its_field():
    with pytest.raises(PolicyError, match=r"categories\.c\.match\.models"):
        load_policies_text("categories:\n  c:\n    match: {models: ['(']}\n  default: {}\n", source="p.yaml")


def test_redos_request_does_not_stall_healthz(proxy):
    hostile = chat("a" * 40_000)
    with HealthProber(proxy.url) as probe:
        answer = httpx.post(proxy.url + "/v1/chat/completions", json=hostile, timeout=60)
    assert answer.status_code == 200
    assert probe.failures == 0
    assert probe.max_s < 0.25, f"/healthz stalled {probe.max_s:.2f}s"

"""Issue #14 item 3: a hostile policy reload is a 400 (or 413), off the event loop, with bounded logs."""

from __future__ import annotations

import httpx
import pytest

from evaluation.bench.stall_harness import HealthProber
from proxy.admin.api import MAX_POLICY_BYTES
from semcache.errors import PolicyError
from semcache.config.policy import MAX_PROBLEMS, load_policies_text
from tests.adversarial.conftest import ADMIN

DEEP = "categories:\n  default:\n    match:\n      metadata: " + "[" * 5000 + "]" * 5000 + "\n"
HUGE_INT = "defaults:\n  threshold: " + "9" * 5000 + "\ncategories:\n  default: {}\n"


def put_policy(proxy, text: str) -> httpx.Response:
    return httpx.put(proxy.url + "/admin/policies", content=text.encode(), timeout=60,
                     headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/yaml"})


def log_lines(proxy) -> int:
    return proxy.log.read_text(errors="replace").count("\n")


@pytest.mark.parametrize("text", [DEEP, HUGE_INT, "{" * 100_000, "categories: [" + "a, " * 1000 + "]"],
                         ids=["nested-5000", "5000-digit-int", "unclosed-braces", "list-of-categories"])
def test_invalid_documents_are_400_with_bounded_log(proxy, text):
    before = log_lines(proxy)
    answer = put_policy(proxy, text)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["type"] == "invalid_policy"
    assert len(answer.content) < 20_000
    assert log_lines(proxy) - before < 5
    assert httpx.get(proxy.url + "/healthz", timeout=5).status_code == 200


def test_problems_listed_are_bounded():
    body = "\n".join(f"    typo{i}: 1" for i in range(1000))
    with pytest.raises(PolicyError) as info:
        load_policies_text("categories:\n  default:\n" + body + "\n", source="p.yaml")
    assert len(info.value.problems) == MAX_PROBLEMS + 1
    assert "more problems" in info.value.problems[-1]


def big_policy(categories: int) -> str:
    # A big document that fails validation only at the end (no 'default'), so the proxy keeps its policy.
    lines = ["categories:"]
    for i in range(categories):
        keywords = ", ".join(f"kw{i}x{j}" for j in range(60))
        lines.append(f"  c{i}:\n    threshold: 0.9\n    match: {{keywords: [{keywords}]}}")
    return "\n".join(lines) + "\n"


def test_a_big_policy_is_parsed_off_the_event_loop(proxy):
    text = big_policy(380)
    assert 200_000 < len(text) < MAX_POLICY_BYTES
    with HealthProber(proxy.url) as probe:
        answer = put_policy(proxy, text)
    assert answer.status_code == 400 and "default" in answer.text
    assert probe.max_s < 0.5, f"/healthz stalled {probe.max_s:.2f}s"  # the loop parsing it: 3.4 s


def test_a_policy_over_the_size_limit_is_413(proxy):
    answer = put_policy(proxy, big_policy(450))
    assert answer.status_code == 413

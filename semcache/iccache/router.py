"""The IC-Cache router: per request, cache hit / small model with examples / large model.

A cache hit (decided earlier by :class:`~semcache.SemanticCache`) is served
as is. Otherwise the router selects examples and compares, for both models::

    score = predicted quality (LinUCB upper bound) - lambda * cost
    cost  = token price of the request (examples included for small)
            + latency_weight * expected latency (queueing from the load model)

Quality is *learned* (it depends on the request and the examples, which only
observation reveals); cost is *computed* from config and the engines'
current load, which changes faster than any bandit could learn it. So when
the large model's queue grows its cost rises at once and more requests go to
the small one. The reverse never happens for requests the small model is
known to fail: if small's predicted quality is below ``quality_floor`` with a
confidence width under ``known_after``, the request goes large, whatever the
load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from semcache.iccache.bandit import Estimate, LinUCB
from semcache.iccache.bank import ExampleBank, approx_tokens
from semcache.iccache.config import ICCacheConfig, Role
from semcache.load import LoadTracker
from semcache.iccache.prompt import with_examples
from semcache.iccache.selection import Selection, select_examples, token_budget

Route = Literal["cache", "small", "large"]
_BASE_FEATURES = 5


@dataclass(slots=True)
class Decision:
    """What to do with one request: where it goes and the messages to send there."""

    route: Route
    model: str | None
    messages: list[dict[str, Any]]
    category: str
    selection: Selection = field(default_factory=Selection)
    features: np.ndarray | None = field(default=None, repr=False)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def example_ids(self) -> list[str]:
        return self.selection.ids

    def headers(self) -> dict[str, str]:
        """The response headers the proxy adds (``X-Semcache-Status: ic`` for small answers).

        Lower-case, as the proxy writes all its headers, so merging never duplicates one.
        """
        if self.route == "cache":
            return {}
        out = {"x-semcache-route": self.route, "x-semcache-examples": str(len(self.selection.examples))}
        if self.route == "small":
            out["x-semcache-status"] = "ic"
        return out


def _text_tokens(messages: Sequence[dict[str, Any]]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += approx_tokens(content)
        elif isinstance(content, list):
            total += sum(approx_tokens(p.get("text", "")) for p in content if isinstance(p, dict))
    return total


class ICCacheRouter:
    """Selection + LinUCB routing + outcome learning over one :class:`ExampleBank`."""

    def __init__(self, config: ICCacheConfig, bank: ExampleBank, load: LoadTracker | None = None):
        self.config = config
        self.bank = bank
        self.load = load or LoadTracker()
        r = config.router
        self.dim = _BASE_FEATURES + r.category_buckets
        self.bandit = LinUCB({role: r.prior_quality.get(role, 0.5) for role in ("small", "large")},
                             self.dim, ridge=r.ridge)

    # ------------------------------------------------------------ features
    def features(self, category: str, selection: Selection, request_tokens: int) -> np.ndarray:
        """Bias, best similarity, example fill, example utility, request length, category bucket."""
        sel = self.config.selection_for(category)
        small = self.config.model("small")
        x = np.zeros(self.dim)
        x[0] = 1.0
        x[1] = max(0.0, selection.best_similarity)
        x[2] = len(selection.examples) / max(1, sel.max_examples)
        x[3] = selection.mean_utility if selection.examples else 0.0
        x[4] = min(1.0, request_tokens / small.context_tokens)
        # A stable hash (not Python's salted hash()) so buckets survive restarts.
        bucket = int.from_bytes(hashlib.blake2b(category.encode(), digest_size=4).digest(), "big")
        x[_BASE_FEATURES + bucket % self.config.router.category_buckets] = 1.0
        return x

    def cost(self, role: Role, prompt_tokens: int) -> float:
        spec = self.config.model(role)
        r = self.config.router
        price = (prompt_tokens * spec.prompt_cost_per_1k
                 + r.expected_completion_tokens * spec.completion_cost_per_1k) / 1000.0
        return price + r.latency_weight * self.load.expected_latency_s(spec.name, spec.nominal_latency_s)

    # ------------------------------------------------------------ decide
    def decide(self, messages: Sequence[dict[str, Any]], *, scope: str, category: str,
               vector: np.ndarray, cache_hit: bool = False, now: float = 0.0) -> Decision:
        """Route one chat request; ``vector`` is the embedding of its last user message."""
        if cache_hit:
            return Decision(route="cache", model=None, messages=list(messages), category=category,
                            reason="cache hit")
        small, large = self.config.model("small"), self.config.model("large")
        sel_cfg = self.config.selection_for(category)
        request_tokens = _text_tokens(messages)
        budget = token_budget(sel_cfg, small.context_tokens, request_tokens)
        selection = select_examples(self.bank, scope=scope, category=category, vector=vector,
                                    config=sel_cfg, budget=budget, now=now)
        x = self.features(category, selection, request_tokens)
        est = {arm: self.bandit.estimate(arm, x) for arm in ("small", "large")}
        costs = {"small": self.cost("small", request_tokens + selection.tokens),
                 "large": self.cost("large", request_tokens)}
        r = self.config.router
        score = {arm: est[arm].ucb(r.alpha) - r.cost_weight * costs[arm] for arm in est}
        if not sel_cfg.enabled:
            route, reason = "large", "IC-Cache disabled for this category"
        elif request_tokens + sel_cfg.answer_reserve > small.context_tokens:
            route, reason = "large", "request too long for the small model's context"
        elif est["small"].mean < r.quality_floor and est["small"].width < r.known_after:
            route, reason = "large", "small model known to fail here"
        elif score["small"] > score["large"]:
            route, reason = "small", "small+examples scores higher"
        else:
            route, reason = "large", "large scores higher"
        if route == "small":
            out = with_examples(messages, selection.examples)
            self.bank.record_use(selection.ids)
        else:
            out = [dict(m) for m in messages]
        return Decision(route=route, model=small.name if route == "small" else large.name,
                        messages=out, category=category, selection=selection, features=x,
                        estimates=est, costs=costs, reason=reason)

    # ------------------------------------------------------------ learn
    def record(self, decision: Decision, quality: float) -> None:
        """An answer's quality in [0, 1] is known (shadow agreement or feedback): learn from it.

        The bandit learns the quality of the arm taken in this context (the
        cost part of the reward is computed, not learned); for small answers
        the examples behind it are credited too.
        """
        if decision.route == "cache" or decision.features is None:
            return
        quality = min(1.0, max(0.0, float(quality)))
        self.bandit.update(decision.route, decision.features, quality)
        if decision.route == "small":
            self.bank.record_outcome(decision.example_ids, quality)

    def record_feedback(self, decision: Decision, positive: bool) -> None:
        """Explicit feedback on an answer (e.g. from the feedback endpoint)."""
        if decision.route == "small":
            self.bank.record_feedback(decision.example_ids, positive)
        if decision.route != "cache" and decision.features is not None:
            self.bandit.update(decision.route, decision.features, 1.0 if positive else 0.0)

    def should_shadow(self, decision: Decision, request_id: str) -> bool:
        """Ask the large model too? A stable ``shadow_fraction`` of small answers, if it has room."""
        if decision.route != "small" or self.config.shadow_fraction <= 0:
            return False
        if self.load.get(self.config.model("large").name).waiting > self.config.shadow_max_waiting:
            return False
        h = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
        return h / 2**64 < self.config.shadow_fraction

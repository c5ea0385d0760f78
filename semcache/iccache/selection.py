"""Example selection in two stages: nearest candidates, then utility ranking under a budget.

Stage 1 asks the bank's index for the ``candidates`` nearest examples of the
request's scope and category (HNSW once a partition is large). Stage 2 ranks
them greedily, maximal-marginal-relevance style::

    value = w_sim * similarity + w_util * (utility - 0.5) + w_fresh * freshness
            - w_len * tokens / 1000
            - diversity * max(similarity to an example already chosen)

and takes the best that still fits the token budget, until ``max_examples``.
The budget is the smaller of the category's ``token_budget`` and what the
small model's context leaves after the request itself and the answer
reserve. Ties break on the example id, so the same bank and request always
give the same examples in the same order (and the same prompt prefix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from semcache.iccache.bank import Example, ExampleBank
from semcache.iccache.config import SelectionConfig


@dataclass(slots=True)
class Selection:
    """The chosen examples in prompt order, and what the router wants to know of them."""

    examples: list[Example] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    best_similarity: float = -1.0
    """Best similarity among all candidates (chosen or not): how familiar the request is."""
    tokens: int = 0
    budget: int = 0

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def mean_utility(self) -> float:
        return float(np.mean([e.utility() for e in self.examples])) if self.examples else 0.5


def token_budget(config: SelectionConfig, context_tokens: int, request_tokens: int) -> int:
    """Example tokens allowed: the category budget, capped by the small model's free context."""
    free = context_tokens - request_tokens - config.answer_reserve
    return max(0, min(config.token_budget, free))


def _freshness(example: Example, now: float, half_life_s: float) -> float:
    age = max(0.0, now - example.created_at)
    return math.exp(-math.log(2) * age / half_life_s)


def select_examples(bank: ExampleBank, *, scope: str, category: str, vector: np.ndarray,
                    config: SelectionConfig, budget: int, now: float = 0.0) -> Selection:
    """Choose examples for one request (see the module docstring for the rule)."""
    if not config.enabled or config.max_examples == 0:
        return Selection(budget=budget)
    found = bank.candidates(scope, category, vector, config.candidates)
    best = max((s for _, s in found), default=-1.0)
    pool = [(ex, s) for ex, s in found if s >= config.min_similarity and ex.tokens <= budget]
    # Candidate order must not depend on the index's internal order.
    pool.sort(key=lambda item: item[0].id)
    base = {
        ex.id: config.similarity_weight * s + config.utility_weight * (ex.utility() - 0.5)
        + config.freshness_weight * _freshness(ex, now, config.freshness_half_life_s)
        - config.length_weight * ex.tokens / 1000.0
        for ex, s in pool
    }
    vectors = {ex.id: ex.vector for ex, _ in pool}
    chosen: list[tuple[Example, float, float]] = []
    used = 0
    while pool and len(chosen) < config.max_examples:
        best_item, best_value = None, -math.inf
        for ex, s in pool:
            redundancy = max((float(vectors[ex.id] @ c.vector) for c, _, _ in chosen), default=0.0)
            if redundancy >= config.duplicate_similarity or used + ex.tokens > budget:
                continue
            value = base[ex.id] - config.diversity * max(0.0, redundancy)
            if value > best_value:  # strict: the first (lowest id) wins a tie
                best_item, best_value = (ex, s), value
        if best_item is None:
            break
        ex, s = best_item
        chosen.append((ex, s, best_value))
        used += ex.tokens
        pool = [item for item in pool if item[0].id != ex.id]
    # Prompt order by value (then id); ascending puts the most useful example
    # right before the question, where a small model attends to it most.
    reverse = config.order == "descending"
    chosen.sort(key=lambda c: (c[2], c[0].id), reverse=reverse)
    return Selection(
        examples=[c[0] for c in chosen], similarities=[c[1] for c in chosen],
        best_similarity=best, tokens=used, budget=budget,
    )

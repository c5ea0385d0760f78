"""Quality signals and per-category accounting: shadow agreement, offload, savings.

A shadow check asks the large model the same request a small answer went
to; the agreement of the two answers (cosine similarity of their
embeddings, rescaled so that ``floor`` or less counts as 0) is the small
answer's quality score, fed to :meth:`ICCacheRouter.record`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


def agreement(small: np.ndarray, large: np.ndarray, *, floor: float = 0.3) -> float:
    """Score in [0, 1] of a small answer against the large model's answer (unit vectors)."""
    cos = float(np.dot(small, large))
    return float(min(1.0, max(0.0, (cos - floor) / (1.0 - floor))))


def follows_examples(answer: np.ndarray, example_answers: np.ndarray) -> float:
    """Best cosine of a small answer to the answers of the examples it was shown (unit vectors).

    A serve-time quality signal that needs no large model: measured on Bitext
    (RESULTS, IC-Cache session 3), SmolLM2-135M's wrong answers were generic
    replies resembling none of its (right) examples -- best similarity 0.56 in
    its misses vs 0.83 in its hits. ``-1.0`` when there were no examples.
    """
    if len(example_answers) == 0:
        return -1.0
    return float(np.max(np.asarray(example_answers, dtype=np.float32) @ np.asarray(answer, dtype=np.float32)))


@dataclass(slots=True)
class CategoryCounters:
    requests: int = 0
    cache: int = 0
    small: int = 0
    large: int = 0
    examples: int = 0
    scored: int = 0
    quality_sum: float = 0.0
    cost_saved: float = 0.0
    """Large-model cost of the requests the small model answered, minus what small cost."""


class ICStats:
    """Counters per category for the metrics endpoint and the report."""

    def __init__(self) -> None:
        self._by_category: dict[str, CategoryCounters] = {}
        self._lock = threading.Lock()

    def routed(self, category: str, route: str, examples: int = 0, saved: float = 0.0) -> None:
        with self._lock:
            c = self._by_category.setdefault(category, CategoryCounters())
            c.requests += 1
            setattr(c, route, getattr(c, route) + 1)
            c.examples += examples
            c.cost_saved += saved

    def scored(self, category: str, quality: float) -> None:
        with self._lock:
            c = self._by_category.setdefault(category, CategoryCounters())
            c.scored += 1
            c.quality_sum += quality

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per category: requests, offload rate (small / non-cache), mean quality, cost saved."""
        out = {}
        with self._lock:
            for name, c in sorted(self._by_category.items()):
                upstream = c.small + c.large
                out[name] = {
                    "requests": c.requests, "cache": c.cache, "small": c.small, "large": c.large,
                    "offload_rate": c.small / upstream if upstream else 0.0,
                    "mean_examples": c.examples / c.small if c.small else 0.0,
                    "mean_quality": c.quality_sum / c.scored if c.scored else float("nan"),
                    "cost_saved": c.cost_saved,
                }
        return out

"""The serve-time answer check's threshold, per category: :class:`AnswerCheck`.

A small answer is served only if it resembles one of its examples' answers
(:func:`~semcache.iccache.quality.follows_examples` >= a threshold). The
threshold is ``selection.min_answer_agreement`` as configured, or -- with
``selection.answer_check_max_bad`` -- calibrated per category from shadow
checks: the loosest threshold at which at most that share of the *served*
small answers disagree with the large model, at 95% confidence
(:func:`semcache.config.calibration.choose`, fixed-sequence Clopper-Pearson, the
same rule as the hit verifier's calibration).

The samples are unbiased because the requests that get a shadow check are
picked before their answer is scored (by request id and the large model's
load), and both served *and* rejected small answers of those requests are
labelled. ``min_answer_agreement`` stays the loosest threshold allowed.
Until a category has ``answer_check_min_samples`` samples the configured
value applies; if no threshold meets the target, no small answer is served
in that category (the large model answers) -- the safe failure.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from semcache.config.calibration import OperatingPoint, choose
from semcache.iccache.config import SelectionConfig

NEVER = math.inf
"""A threshold no answer reaches: the category's small answers are all refused."""


@dataclass(frozen=True, slots=True)
class CheckState:
    """One category's calibration, for stats."""

    samples: int
    threshold: float | None
    point: OperatingPoint | None


class AnswerCheck:
    """Samples (follows-examples score, agreed with the large model) per category and the thresholds."""

    def __init__(self, *, window: int = 2000, recalibrate_every: int = 10):
        self.window = window
        self.recalibrate_every = recalibrate_every
        self._samples: dict[str, deque[tuple[float, bool]]] = {}
        self._fresh: dict[str, int] = {}
        self._points: dict[str, tuple[tuple, OperatingPoint]] = {}  # category -> (rule, point)
        self._lock = threading.Lock()

    def wants_score(self, config: SelectionConfig) -> bool:
        """Whether small answers of a category with ``config`` are scored at all."""
        return config.min_answer_agreement is not None or config.answer_check_max_bad is not None

    def record(self, category: str, follows: float, agreed: bool) -> None:
        """One shadow-checked small answer: its score and whether the large model agreed."""
        with self._lock:
            samples = self._samples.setdefault(category, deque(maxlen=self.window))
            samples.append((float(follows), bool(agreed)))
            self._fresh[category] = self._fresh.get(category, 0) + 1

    def threshold(self, category: str, config: SelectionConfig) -> float | None:
        """The threshold in force for ``category`` (None: no check)."""
        floor = config.min_answer_agreement
        if config.answer_check_max_bad is None:
            return floor
        rule = (config.answer_check_max_bad, floor)
        with self._lock:
            samples = list(self._samples.get(category, ()))
            if len(samples) < config.answer_check_min_samples:
                return floor
            cached = self._points.get(category)
            if cached is None or cached[0] != rule or self._fresh.get(category, 0) >= self.recalibrate_every:
                point = choose([s for s, _ in samples], [int(a) for _, a in samples], config.answer_check_max_bad,
                               min_value=floor)
                self._points[category] = (rule, point)
                self._fresh[category] = 0
            point = self._points[category][1]
        return NEVER if point.value is None else point.value

    def categories(self) -> list[str]:
        with self._lock:
            return sorted(self._samples)

    def state(self, category: str, config: SelectionConfig) -> CheckState:
        threshold = self.threshold(category, config)
        with self._lock:
            cached = self._points.get(category)
            return CheckState(len(self._samples.get(category, ())), threshold, cached[1] if cached else None)

"""LinUCB (Li et al., 2010, disjoint arms) over request features, predicting answer quality.

Each arm (``small`` with examples, ``large``) keeps a ridge regression of the
quality its answers got against the request's feature vector, and offers
``mean + alpha * width`` (upper confidence bound) so arms with few
observations in some region of feature space still get tried. The prior mean
is put in through the bias feature: before any observation an arm predicts
its configured prior quality.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    width: float

    def ucb(self, alpha: float) -> float:
        return self.mean + alpha * self.width


class LinUCB:
    """Disjoint LinUCB: one ridge regression per arm; feature 0 must be the constant 1."""

    def __init__(self, arms: dict[str, float], dim: int, *, ridge: float = 1.0):
        self.dim = dim
        self._A = {arm: np.eye(dim) * ridge for arm in arms}
        self._b = {arm: np.zeros(dim) for arm in arms}
        for arm, prior in arms.items():
            self._b[arm][0] = ridge * prior  # theta_0 = prior before any data
        self._lock = threading.Lock()
        self.observations = {arm: 0 for arm in arms}

    @property
    def arms(self) -> list[str]:
        return list(self._A)

    def estimate(self, arm: str, x: np.ndarray) -> Estimate:
        with self._lock:
            A_inv = np.linalg.inv(self._A[arm])
            theta = A_inv @ self._b[arm]
        return Estimate(mean=float(theta @ x), width=float(np.sqrt(max(0.0, x @ A_inv @ x))))

    def update(self, arm: str, x: np.ndarray, reward: float) -> None:
        with self._lock:
            self._A[arm] += np.outer(x, x)
            self._b[arm] += reward * x
            self.observations[arm] += 1

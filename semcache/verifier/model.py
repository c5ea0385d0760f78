"""The hit verifier: P(cached answer is right | the two queries, their cosine).

A gradient-boosted tree ensemble over :mod:`semcache.verifier.features`,
stored as flat arrays in a small ``.npz`` (trained by
``python -m evaluation.training.train_verifier``) and evaluated with numpy only: all
trees advance one level per step, so scoring a few candidates costs a handful
of vectorised gathers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcache.errors import ConfigError
from semcache.verifier.features import FEATURES, WordVectors, pair_features

DEFAULT_ARTEFACT = Path(__file__).with_name("verifier.npz")


@dataclass(frozen=True, slots=True)
class Trees:
    """A tree ensemble as arrays of shape (trees, nodes); leaves point at themselves."""

    feature: np.ndarray   # int32, feature index per node (0 for leaves)
    threshold: np.ndarray  # float64, go left when x <= threshold
    left: np.ndarray      # int32
    right: np.ndarray     # int32
    value: np.ndarray     # float64, leaf values (0 for inner nodes)
    depth: int
    baseline: float

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Log-odds for rows ``x`` of shape (n, features)."""
        n_trees = self.feature.shape[0]
        tree_idx = np.arange(n_trees)[:, None]
        node = np.zeros((n_trees, x.shape[0]), dtype=np.int32)
        rows = np.arange(x.shape[0])[None, :]
        for _ in range(self.depth):
            f = self.feature[tree_idx, node]
            go_left = x[rows, f] <= self.threshold[tree_idx, node]
            node = np.where(go_left, self.left[tree_idx, node], self.right[tree_idx, node])
        return self.baseline + self.value[tree_idx, node].sum(axis=0)


class Verifier:
    """Scores (query, cached query, cosine) triples; thread-safe and read-only."""

    def __init__(self, trees: Trees, idf: np.ndarray, words: WordVectors | None, info: dict):
        self.trees, self.idf, self.words, self.info = trees, idf, words, info

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ARTEFACT, *, words: WordVectors | None = None) -> Verifier:
        try:
            data = np.load(path, allow_pickle=False)
            info = json.loads(str(data["info"]))
            trees = Trees(data["feature"], data["threshold"], data["left"], data["right"], data["value"],
                          int(data["depth"]), float(data["baseline"]))
            idf = data["idf"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot load verifier model {path}: {exc}") from exc
        if tuple(info.get("features", ())) != FEATURES:
            raise ConfigError(f"verifier model {path} was trained on other features; retrain it "
                              "with `python -m evaluation.training.train_verifier`")
        if words is None and info.get("word_vectors"):
            from semcache.verifier.wordvec import load_word_vectors

            words = load_word_vectors()
        return cls(trees, idf, words, info)

    def features(self, query: str, cached: list[tuple[str, float]]) -> np.ndarray:
        return np.array([pair_features(query, c, sim, self.idf, self.words) for c, sim in cached], dtype=np.float64)

    def probabilities(self, query: str, cached: list[tuple[str, float]]) -> np.ndarray:
        """P(right) for each ``(cached query, cosine)`` candidate of ``query``."""
        if not cached:
            return np.zeros(0)
        return 1.0 / (1.0 + np.exp(-self.trees.raw(self.features(query, cached))))

    def probabilities_of(self, triples: list[tuple[str, str, float]]) -> np.ndarray:
        """P(right) for each ``(query, cached query, cosine)``."""
        return np.array([self.probability(q, c, s) for q, c, s in triples], dtype=np.float64)

    def probability(self, query: str, cached_query: str, cosine: float) -> float:
        return float(self.probabilities(query, [(cached_query, cosine)])[0])

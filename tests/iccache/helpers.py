"""Small builders for IC-Cache tests: unit vectors and examples without an embedder."""

from __future__ import annotations

import numpy as np

from semcache.iccache import Example, ICCacheConfig, ModelSpec

DIM = 16


def unit(*weights: float) -> np.ndarray:
    """A unit vector from the first few coordinates (the rest 0)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def example(id: str, vector: np.ndarray, *, scope: str = "tenant:a/", category: str = "support",
            tokens: int = 50, **stats) -> Example:
    return Example(id=id, scope=scope, category=category, question=f"question {id}", answer=f"answer {id}",
                   vector=vector, tokens=tokens, **stats)


def config(**overrides) -> ICCacheConfig:
    data = {
        "models": [
            ModelSpec(name="big", role="large", prompt_cost_per_1k=1.0, completion_cost_per_1k=2.0,
                      nominal_latency_s=1.0),
            ModelSpec(name="tiny", role="small", prompt_cost_per_1k=0.05, completion_cost_per_1k=0.1,
                      context_tokens=2048, nominal_latency_s=1.0),
        ],
    }
    data.update(overrides)
    return ICCacheConfig.model_validate(data)

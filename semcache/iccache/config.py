"""IC-Cache configuration: the models and their roles, selection per category, routing.

Validated with ``extra="forbid"`` like the policy files, so a misspelt knob is
an error naming the field rather than a silent default. Costs are in an
arbitrary currency per 1,000 tokens; only their ratio between models matters
to the router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from semcache.errors import ConfigError

Role = Literal["large", "small"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One served model: its name as the upstream knows it, role, price and context."""

    name: str
    role: Role
    prompt_cost_per_1k: float = Field(default=0.0, ge=0)
    completion_cost_per_1k: float = Field(default=0.0, ge=0)
    context_tokens: int = Field(default=8192, ge=64)
    nominal_latency_s: float = Field(default=1.0, gt=0)
    """Latency of one request on an idle engine, used until its metrics say otherwise."""
    metrics_url: str | None = None
    """The engine's Prometheus ``/metrics`` (vLLM names); unset: derived from its upstream URL."""


class SelectionConfig(_Strict):
    """How examples are chosen for one category (or the default for all)."""

    enabled: bool = True
    candidates: int = Field(default=16, ge=1, le=256)
    """Stage 1: nearest neighbours fetched from the index before ranking."""
    max_examples: int = Field(default=2, ge=0, le=32)
    token_budget: int = Field(default=1024, ge=0)
    """Most prompt tokens the examples may take (also capped by the small model's context)."""
    answer_reserve: int = Field(default=128, ge=0)
    """Tokens kept free in the small model's context for its answer."""
    min_similarity: float = Field(default=0.3, ge=-1.0, le=1.0)
    """Candidates below this cosine similarity are never used."""
    similarity_weight: float = Field(default=1.0, ge=0)
    utility_weight: float = Field(default=0.2, ge=0)
    """Weight of (estimated utility - 0.5): proven examples rise, failing ones sink."""
    freshness_weight: float = Field(default=0.0, ge=0)
    freshness_half_life_s: float = Field(default=7 * 86_400.0, gt=0)
    length_weight: float = Field(default=0.0, ge=0)
    """Penalty per 1,000 example tokens: prefers short examples so more fit the budget."""
    diversity: float = Field(default=0.3, ge=0, le=1)
    """MMR trade-off: penalty per unit of similarity to an already chosen example."""
    duplicate_similarity: float = Field(default=0.97, ge=-1.0, le=1.0)
    """A candidate at least this close to a chosen example is never also spent."""
    order: Literal["ascending", "descending"] = "ascending"
    """Prompt order by score: ascending puts the best example last, nearest the question."""
    min_answer_agreement: float | None = Field(default=None, ge=-1.0, le=1.0)
    """A non-streamed small answer whose best similarity to its examples' answers is below
    this is not served: the large model answers instead (the small model ignored its
    examples). None: off. 0.75 measured well on Bitext (RESULTS); calibrate per category."""
    answer_check_max_bad: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Calibrate the check per category from shadow checks: the loosest threshold (not below
    ``min_answer_agreement``) at which at most this share of served small answers disagree
    with the large model, at 95% confidence (:mod:`semcache.iccache.answer_check`). None: off."""
    answer_check_min_samples: int = Field(default=100, ge=1)
    """Shadow-checked small answers a category needs before its calibrated threshold applies."""


class RouterConfig(_Strict):
    """The LinUCB router between the small model with examples and the large model."""

    alpha: float = Field(default=0.5, ge=0)
    """Exploration width of the upper confidence bound."""
    ridge: float = Field(default=1.0, gt=0)
    cost_weight: float = Field(default=1.0, ge=0)
    """lambda in reward = quality - lambda x cost (cost as computed by :mod:`.load`)."""
    latency_weight: float = Field(default=0.05, ge=0)
    """Cost units per second of expected latency (queueing + prefill + decode)."""
    prior_quality: dict[Role, float] = Field(default_factory=lambda: {"large": 0.9, "small": 0.6})
    """Quality assumed before any observation (the arms' initial reward mean)."""
    quality_floor: float = Field(default=0.5, ge=0, le=1)
    """Small is never chosen when its predicted quality is known to be below this."""
    known_after: float = Field(default=0.05, gt=0)
    """Small's prediction counts as known when its confidence width is below this."""
    expected_completion_tokens: int = Field(default=96, ge=1)
    category_buckets: int = Field(default=8, ge=1, le=64)


class ICCacheConfig(_Strict):
    """Everything IC-Cache needs: models, per-category selection, routing, feedback."""

    models: list[ModelSpec]
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    categories: dict[str, SelectionConfig] = Field(default_factory=dict)
    router: RouterConfig = Field(default_factory=RouterConfig)
    shadow_fraction: float = Field(default=0.05, ge=0, le=1)
    """Fraction of small answers also asked of the large model (when it has room) to score them."""
    shadow_max_waiting: int = Field(default=0, ge=0)
    """The large model 'has spare capacity' when at most this many requests wait."""
    scrape_interval_s: float = Field(default=1.0, gt=0)
    """How often each engine's ``/metrics`` is read for the load model."""
    persist_interval_s: float = Field(default=30.0, ge=0)
    """How often utility learned while serving (shadow checks, feedback) is merged into the
    examples' cache entries, where restarts and other replicas find it. 0: never."""

    @model_validator(mode="after")
    def _one_of_each(self) -> ICCacheConfig:
        roles = [m.role for m in self.models]
        if roles.count("large") != 1 or roles.count("small") != 1:
            raise ValueError("exactly one model with role 'large' and one with role 'small' are required")
        return self

    def model(self, role: Role) -> ModelSpec:
        return next(m for m in self.models if m.role == role)

    def role_of(self, model_name: str) -> Role | None:
        return next((m.role for m in self.models if m.name == model_name), None)

    def selection_for(self, category: str) -> SelectionConfig:
        return self.categories.get(category, self.selection)


def load_iccache_config(path: str | Path) -> ICCacheConfig:
    """Read an IC-Cache YAML file (``yaml.safe_load``); errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return ICCacheConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc

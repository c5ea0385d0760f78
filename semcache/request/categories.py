"""Category detection: which policy applies to a request, and why.

First match wins, in this order:

1. an explicit category from the caller (``X-Semcache-Category``);
2. rules, category by category in policy-file order: model-name regexes,
   whole-word keywords, text regexes, request metadata (regexes are RE2 and
   see a bounded head and tail of the text: :mod:`semcache.request.patterns`);
3. the nearest embedding prototype (the category's example prompts), if its
   similarity reaches that category's ``min_similarity``;
4. ``default``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from semcache.errors import RequestError
from semcache.request.keys import CacheRequest, NormalizedRequest
from semcache.request.patterns import MODEL_NAME_CHARS, compile_pattern, rule_text
from semcache.config.policy import DEFAULT_CATEGORY, CategoryPolicy, PolicySet


@dataclass(frozen=True, slots=True)
class CategoryDecision:
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class _CompiledRules:
    policy: CategoryPolicy
    models: tuple  # of RE2 patterns (linear-time: see semcache.request.patterns)
    keywords: re.Pattern | None
    patterns: tuple


def _compile(policy: CategoryPolicy) -> _CompiledRules:
    m = policy.match
    keywords = None
    if m.keywords:
        alternatives = "|".join(re.escape(k) for k in sorted(m.keywords, key=len, reverse=True))
        keywords = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return _CompiledRules(
        policy=policy,
        models=tuple(compile_pattern(p) for p in m.models),
        keywords=keywords,
        patterns=tuple(compile_pattern(p) for p in m.patterns),
    )


class Classifier:
    """Assigns a category to each request under one :class:`PolicySet`."""

    def __init__(self, policies: PolicySet, prototypes: dict[str, np.ndarray] | None = None):
        self.policies = policies
        self._rules = [_compile(p) for p in policies if p.name != DEFAULT_CATEGORY and p.match.has_rules]
        self._prototypes = {k: v for k, v in (prototypes or {}).items() if len(v)}

    @property
    def uses_prototypes(self) -> bool:
        return bool(self._prototypes)

    def by_rules(self, request: CacheRequest, norm: NormalizedRequest) -> CategoryDecision | None:
        """Explicit category or a matching rule; None if prototypes must decide."""
        if request.category:
            if request.category not in self.policies:
                raise RequestError(f"unknown category {request.category!r}", param="X-Semcache-Category")
            return CategoryDecision(request.category, "explicit category")
        metadata = dict(request.metadata)
        body_meta = request.body.get("metadata")
        if isinstance(body_meta, dict):
            metadata.update({str(k): str(v) for k, v in body_meta.items()})
        # Rules see a bounded text, so their cost does not grow with the request.
        text, model = rule_text(norm.text), norm.model[:MODEL_NAME_CHARS]
        for rules in self._rules:
            name = rules.policy.name
            for pattern in rules.models:
                if pattern.search(model):
                    return CategoryDecision(name, f"model matches /{pattern.pattern}/")
            if rules.keywords is not None:
                hit = rules.keywords.search(text)
                if hit:
                    return CategoryDecision(name, f"keyword '{hit.group(0).lower()}'")
            for pattern in rules.patterns:
                if pattern.search(text):
                    return CategoryDecision(name, f"pattern /{pattern.pattern}/")
            wanted = rules.policy.match.metadata
            if wanted and all(metadata.get(k) == v for k, v in wanted.items()):
                return CategoryDecision(name, f"metadata {wanted}")
        if not self._prototypes:
            return CategoryDecision(DEFAULT_CATEGORY, "no rule matched")
        return None

    def by_prototype(self, vector: np.ndarray) -> CategoryDecision:
        """Nearest prototype above its category's minimum similarity, else default."""
        best_name, best_sim = None, -2.0
        for name, protos in self._prototypes.items():
            sim = float(np.max(protos @ vector))
            if sim >= self.policies[name].match.min_similarity and sim > best_sim:
                best_name, best_sim = name, sim
        if best_name is None:
            return CategoryDecision(DEFAULT_CATEGORY, "no rule or prototype matched")
        return CategoryDecision(best_name, f"prototype similarity {best_sim:.3f}")

"""Per-category cache policies, loaded from YAML and validated strictly.

A policy file looks like::

    defaults:                 # merged into every category (nested maps merge too)
      threshold: 0.90         # cosine similarity in [-1, 1], higher is closer
      ttl_seconds: 86400
    categories:               # evaluated in file order: first match wins
      code:
        version: "2"          # part of every key: bumping it invalidates the category
        threshold: 0.95
        match: {keywords: [python, traceback], patterns: ["```"]}
      default: {}             # required: catches everything else

Files are read with YAML's safe loader (libyaml's ``CSafeLoader`` when
present, as ``yaml.safe_load`` does in pure Python; never a full loader:
untrusted YAML must not construct objects) and validated with ``extra="forbid"`` so a typo
is an error naming the file, the path to the field and the problem, not a
silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from semcache.config.checks import Guards, VerifierSettings
from semcache.config.evidence import Calibration, check_traps
from semcache.errors import PolicyError
from semcache.request.patterns import compile_pattern

DEFAULT_CATEGORY = "default"
ADMIN_WRITER = "admin"
"""The tenant id the proxy gives a caller presenting the admin token."""
_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quota(_Strict):
    """Upper bounds for one category; eviction keeps the category within them."""

    max_entries: int | None = Field(default=100_000, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)


class UnderLoad(_Strict):
    """Load-adaptive policy (:mod:`semcache.adaptive`): relax within a false-hit budget under load.

    While the category's model is under pressure (>= ``pressure_high``, see
    :mod:`semcache.adaptive.pressure`) the effective threshold steps down by
    ``step`` every ``interval_s`` and new entries' TTL stretches up to
    ``ttl_factor``; once pressure falls below ``pressure_high * (1 -
    hysteresis)`` it steps back. The threshold never goes below
    :attr:`floor`: the stricter of ``threshold_floor`` and the calibrated
    operating point for ``max_false_hit_rate`` (``calibration``); without
    that evidence it does not move at all.

    In a category whose verifier decides (``verifier.enabled``), the cosine
    threshold is only the verifier's pre-filter and lowering it barely adds
    hits; there ``semcache calibrate`` writes a ``score: verifier``
    calibration, and what relaxes is ``verifier.min_probability``, down to
    :meth:`probability_floor`, while the threshold stays.
    """

    enabled: bool = False
    max_false_hit_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """The false-hit budget under load (``semcache calibrate`` writes ``calibration`` for it)."""
    max_trap_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """The share of trap pairs that may be served under load (see :attr:`CategoryPolicy.max_trap_rate`)."""
    calibration: Calibration | None = None
    """Evidence: the loosest similarity cut-off whose false-hit upper bound meets the budget."""
    threshold_floor: float = Field(default=-1.0, ge=-1.0, le=1.0)
    """An operator's own limit; the effective floor is the stricter of this and the evidence."""
    step: float = Field(default=0.01, gt=0.0, le=0.2)
    ttl_factor: float = Field(default=1.0, ge=1.0, le=100.0)
    """TTL of entries stored at full relaxation, relative to ``ttl_seconds``."""
    serve_stale_s: float = Field(default=0.0, ge=0.0)
    """An entry expired less than this ago may be served while its model is overloaded or failing."""
    pressure_high: float = Field(default=1.0, gt=0.0)
    hysteresis: float = Field(default=0.3, ge=0.0, lt=1.0)
    interval_s: float = Field(default=5.0, gt=0.0)
    """Least time between two moves (so one scrape cannot swing the threshold far)."""

    @model_validator(mode="after")
    def _evidence(self) -> UnderLoad:
        cal = self.calibration
        if cal is None:
            return self
        if self.max_false_hit_rate is None:
            raise ValueError("under_load.calibration needs the budget it was made for: max_false_hit_rate")
        if cal.upper_bound > self.max_false_hit_rate:
            raise ValueError(f"under_load.calibration's upper bound {cal.upper_bound} exceeds "
                             f"max_false_hit_rate {self.max_false_hit_rate}")
        check_traps(cal, self.max_trap_rate, "under_load.")
        return self

    @property
    def relaxes(self) -> Literal["similarity", "verifier"]:
        """What load adaptation lowers: the cosine ``threshold`` or ``verifier.min_probability``."""
        return "verifier" if self.calibration is not None and self.calibration.score == "verifier" else "similarity"

    def floor(self, threshold: float) -> float:
        """The loosest threshold allowed under load (``threshold`` itself without similarity evidence)."""
        if self.relaxes != "similarity" or self.calibration is None:
            return threshold
        return min(threshold, max(self.threshold_floor, self.calibration.value))

    def probability_floor(self, min_probability: float) -> float:
        """The loosest ``verifier.min_probability`` allowed under load (itself without verifier evidence)."""
        if self.relaxes != "verifier" or self.calibration is None:
            return min_probability
        return min(min_probability, self.calibration.value)


class MatchRules(_Strict):
    """How a request is recognised as belonging to a category.

    Rules (models, keywords, patterns, metadata) are checked first; any one
    matching is enough. Then, over all categories, the nearest embedding
    prototype built from ``examples`` wins if its similarity reaches
    ``min_similarity``.
    """

    models: list[str] = Field(default_factory=list)
    """RE2 regular expressions matched (search) against the request's model name."""
    keywords: list[str] = Field(default_factory=list)
    """Whole words, case-insensitive, looked for in the query text."""
    patterns: list[str] = Field(default_factory=list)
    """RE2 regular expressions (linear time; no look-arounds) searched in the query text's head and tail."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Request metadata (e.g. from the OpenAI ``metadata`` field) that must all equal."""
    examples: list[str] = Field(default_factory=list)
    """Example prompts: their embeddings are this category's prototypes."""
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)

    @field_validator("models", "patterns")
    @classmethod
    def _compiles(cls, values: list[str]) -> list[str]:
        for value in values:
            compile_pattern(value)  # ValueError naming the pattern: pydantic adds the field
        return values

    @property
    def has_rules(self) -> bool:
        return bool(self.models or self.keywords or self.patterns or self.metadata)


class AuditSettings(_Strict):
    """Policy block ``audit:``: how many semantic hits are checked against the engine."""

    fraction: float = Field(0.05, ge=0.0, le=1.0)
    """Share of semantic hits (not exact repeats) re-asked upstream while the engine is idle."""
    answer_min_similarity: float = Field(0.80, ge=-1.0, le=1.0)
    """The judge's cut-off: cached and fresh answers at least this similar (cosine) agree."""
    quarantine: bool = True
    """A false hit found by an audit stops that entry from answering that query text again."""


class CategoryPolicy(_Strict):
    """Everything semcache decides per category."""

    name: str = Field(default=DEFAULT_CATEGORY, pattern=_NAME_PATTERN)
    version: str = "1"
    cacheable: bool = True
    threshold: float = Field(default=0.9, ge=-1.0, le=1.0)
    """Minimum cosine similarity (in [-1, 1], higher is closer) for a hit."""
    ttl_seconds: float | None = Field(default=86_400.0, gt=0)
    """Entry lifetime; ``null`` keeps entries until evicted or invalidated."""
    refresh_ttl_on_hit: bool = False
    quota: Quota = Field(default_factory=Quota)
    eviction: Literal["lru", "lfu"] = "lru"
    guards: Guards = Field(default_factory=Guards)
    verifier: VerifierSettings = Field(default_factory=VerifierSettings)
    max_false_hit_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Target for ``semcache calibrate``, which turns it into a concrete
    ``threshold`` / ``verifier.min_probability`` and records ``calibration``."""
    max_trap_rate: float | None = Field(default=None, gt=0.0, lt=1.0)
    """With it, ``semcache calibrate`` bounds two rates apart: of the pairs marked ``trap`` (negatives made
    to be hard: negations, swapped words, numbers), the share served stays <= this, and of the other
    pairs, whose mix is traffic's, ``max_false_hit_rate`` bounds the served ones that are wrong. Without
    it every pair counts toward the false-hit rate, so the rate depends on how many traps the data hold."""
    calibration: Calibration | None = None
    match: MatchRules = Field(default_factory=MatchRules)
    cache_truncated: bool = False
    """Store answers cut off by ``max_tokens`` (finish_reason "length")."""
    cache_tool_calls: bool = False
    """Store answers that call tools (usually they depend on live state)."""
    ignore_params: list[str] = Field(default_factory=list)
    """Request parameters left out of the exact-context key (e.g. ``user``)."""
    under_load: UnderLoad = Field(default_factory=UnderLoad)
    """Relax the threshold and stretch TTLs while the model is overloaded (off by default)."""
    shared_namespace: str | None = Field(default=None, pattern=_NAME_PATTERN)
    """If set, all tenants share this category's entries under this namespace.
    Only for answers that are the same for everyone (public docs, FAQs)."""
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """Live false-hit audits of semantic hits (:mod:`semcache.observe.audit`)."""
    shared_namespace_writers: list[str] = Field(default_factory=lambda: [ADMIN_WRITER])
    """Who may *write* into the shared namespace (everyone may read it): tenant ids
    (``t-...``, as ``/admin/entries`` shows them), ``admin`` (a request carrying the
    admin token) or ``"*"`` (anyone: a caller forcing the category could plant
    answers that other tenants are then served). Others' answers are not stored."""
    shared_quarantine_reports: int = Field(default=3, ge=1)
    """A shared entry leaves serving once this many *distinct* tenants reported it
    wrong (one report from the admin is enough); fewer, and no one caller can
    remove what everyone is served."""

    @model_validator(mode="after")
    def _trap_evidence(self) -> CategoryPolicy:
        if self.calibration is not None:
            check_traps(self.calibration, self.max_trap_rate, "")
        return self

    @model_validator(mode="after")
    def _verifier_evidence_needs_the_verifier(self) -> CategoryPolicy:
        if self.under_load.relaxes == "verifier" and not self.verifier.enabled:
            raise ValueError("under_load.calibration with score: verifier needs verifier.enabled")
        return self

    def may_write_shared(self, tenant: str) -> bool:
        """Whether ``tenant`` may store into this category's shared namespace."""
        writers = self.shared_namespace_writers
        return "*" in writers or tenant in writers


class PolicyFile(_Strict):
    """The top level of a policy YAML file."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    categories: dict[str, CategoryPolicy]

    @model_validator(mode="after")
    def _has_default(self) -> PolicyFile:
        if DEFAULT_CATEGORY not in self.categories:
            raise ValueError(f"a '{DEFAULT_CATEGORY}' category is required (it catches the rest)")
        return self


class PolicySet:
    """A validated, ordered set of category policies (immutable once built)."""

    def __init__(self, categories: Mapping[str, CategoryPolicy], *, source: str, source_text: str):
        self._categories = dict(categories)
        self.source = source
        self.source_text = source_text

    def __getitem__(self, name: str) -> CategoryPolicy:
        return self._categories[name]

    def __contains__(self, name: object) -> bool:
        return name in self._categories

    def __iter__(self):
        return iter(self._categories.values())

    def __len__(self) -> int:
        return len(self._categories)

    @property
    def names(self) -> list[str]:
        return list(self._categories)

    @property
    def default(self) -> CategoryPolicy:
        return self._categories[DEFAULT_CATEGORY]

    def get(self, name: str) -> CategoryPolicy | None:
        return self._categories.get(name)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "(top level)"
        problems.append(f"{path}: {err['msg']}")
    return problems


# libyaml's safe loader when present: the same plain-data-only construction as
# yaml.safe_load, parsing ~13x faster (a 1 MB document: 1 s instead of 13 s).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_PROBLEMS = 20
"""Problems named in one :class:`PolicyError` (a hostile document can have thousands)."""


def _policy_error(source: str, problems: list[str]) -> PolicyError:
    problems = [p if len(p) <= 300 else p[:300] + "..." for p in problems[: MAX_PROBLEMS + 1]] + problems[MAX_PROBLEMS + 1 :]
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return PolicyError(source, problems)


def load_policies_text(text: str, *, source: str = "<policy>") -> PolicySet:
    """Parse and validate policy YAML from a string; ``source`` names it in errors.

    Any invalid document raises :class:`PolicyError` (never another exception:
    e.g. YAML nested thousands deep, or an integer too long to convert).
    CPU-bound on big input: the proxy calls it in a worker thread.
    """
    try:
        return _load_policies_text(text, source)
    except RecursionError:
        raise _policy_error(source, ["(top level): nested too deeply"]) from None


def _load_policies_text(text: str, source: str) -> PolicySet:
    try:
        raw = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader: plain data only
    except RecursionError:
        raise
    except Exception as exc:  # YAMLError, or ValueError from a constructor (e.g. a 5,000-digit int)
        raise _policy_error(source, [f"invalid YAML: {str(exc)[:500]}"]) from exc
    if not isinstance(raw, Mapping):
        raise _policy_error(source, ["(top level): expected a mapping with 'categories'"])
    raw = dict(raw)
    defaults = raw.get("defaults") or {}
    categories = raw.get("categories")
    problems: list[str] = []
    if not isinstance(defaults, Mapping):
        problems.append("defaults: expected a mapping")
        defaults = {}
    else:
        try:
            CategoryPolicy.model_validate(dict(defaults))
        except ValidationError as exc:
            problems += [f"defaults.{p}" for p in _format_errors(exc)]
    if isinstance(categories, Mapping):
        merged = {}
        for name, body in categories.items():
            if body is not None and not isinstance(body, Mapping):
                problems.append(f"categories.{name}: expected a mapping")
                continue
            merged[name] = _merge(defaults, {**(body or {}), "name": name})
        raw["categories"] = merged
    if problems:
        raise _policy_error(source, problems)
    try:
        parsed = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        raise _policy_error(source, _format_errors(exc)) from exc
    # The default category catches what nothing else matched, so it goes last
    # whatever its position in the file.
    ordered = {k: v for k, v in parsed.categories.items() if k != DEFAULT_CATEGORY}
    ordered[DEFAULT_CATEGORY] = parsed.categories[DEFAULT_CATEGORY]
    return PolicySet(ordered, source=source, source_text=text)


def load_policies(path: str | Path) -> PolicySet:
    """Load and validate a policy YAML file (raises :class:`PolicyError`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    return load_policies_text(text, source=str(path))

"""A controller per category: effective threshold, TTL and serve-stale from model pressure.

The cache asks :meth:`AdaptiveControl.effective` on every lookup and store;
the answer is the policy's own values unless the category's ``under_load``
is enabled, its model is under pressure, and neither kill switch is set.

Moves are steps of ``under_load.step`` (a *level* 0..max): a step down when
pressure is at or above ``pressure_high``, a step back when it is below
``pressure_high * (1 - hysteresis)``, at most one step per ``interval_s``
(the band between the two and the interval keep it from flapping). The
threshold never goes below :meth:`UnderLoad.floor` (the calibrated
operating point for the under-load budget). A category's pressure is the
highest of the models its requests named in the last ``model_memory_s``.

Live audits (:mod:`semcache.observe.audit`) bound it too: once a category has at
least ``MIN_LIVE_SAMPLES`` audited hits (and feedback reports), a live
false-hit upper bound above ``under_load.max_false_hit_rate`` stops any
relaxation and steps a relaxed category back, one step per interval, even
under pressure. Fewer samples say too little (0 of 29 still bounds the rate
at 12% at 95%), so the calibrated floor alone governs until then.

Decisions are a function of the engine metrics (and the clock) only, so
replicas scraping the same engines reach the same levels without sharing
state (see README, "Load-adaptive policies").
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from semcache.adaptive.events import AdaptiveEvent, EventLog
from semcache.adaptive.pressure import NO_PRESSURE, Pressure, PressureSource
from semcache.clock import Clock
from semcache.config.policy import CategoryPolicy, PolicySet
from semcache.results import LookupResult

log = logging.getLogger("semcache.adaptive")
MIN_LIVE_SAMPLES = 30


@dataclass(frozen=True, slots=True)
class Effective:
    """What a lookup or store uses for one category now."""

    threshold: float
    ttl_seconds: float | None
    serve_stale_s: float = 0.0
    """How long past expiry an entry may still be served now (0 unless overloaded or failing)."""
    adaptive: bool = False
    """Threshold, TTL or verifier cut-off differ from the policy's."""
    min_probability: float | None = None
    """The verifier's cut-off now (``None``: the policy's ``verifier.min_probability``)."""


@dataclass(slots=True)
class _State:
    level: int = 0
    dry_level: int = 0
    last_move: float = -math.inf
    models: dict[str, float] = field(default_factory=dict)
    pressure: Pressure = NO_PRESSURE


def _cutoff(policy: CategoryPolicy) -> tuple[float, float]:
    """The cut-off load adaptation moves (cosine threshold or verifier probability) and its floor."""
    ul = policy.under_load
    if ul.relaxes == "verifier":
        return policy.verifier.min_probability, ul.probability_floor(policy.verifier.min_probability)
    return policy.threshold, ul.floor(policy.threshold)


def _levels(policy: CategoryPolicy) -> int:
    ul = policy.under_load
    start, floor = _cutoff(policy)
    steps = math.ceil((start - floor) / ul.step - 1e-9)
    return max(steps, 1 if ul.ttl_factor > 1.0 else 0)


def _at_level(policy: CategoryPolicy, level: int) -> tuple[float, float | None]:
    """The moving cut-off (see :func:`_cutoff`) and the TTL at ``level`` steps of relaxation."""
    ul, top = policy.under_load, _levels(policy)
    start, floor = _cutoff(policy)
    cutoff = max(floor, start - level * ul.step)
    ttl = policy.ttl_seconds
    if ttl is not None and top and level:
        ttl = ttl * (1.0 + (ul.ttl_factor - 1.0) * min(level, top) / top)
    return cutoff, ttl


def _effective_at(policy: CategoryPolicy, level: int, stale: float = 0.0) -> Effective:
    cutoff, ttl = _at_level(policy, level)
    if policy.under_load.relaxes == "verifier":
        moved = (cutoff, ttl) != (policy.verifier.min_probability, policy.ttl_seconds)
        return Effective(policy.threshold, ttl, stale, adaptive=moved, min_probability=cutoff)
    return Effective(cutoff, ttl, stale, adaptive=(cutoff, ttl) != (policy.threshold, policy.ttl_seconds))


class AdaptiveControl:
    """Per-category controllers over one pressure source, with a global and per-category kill switch."""

    def __init__(self, policies: Callable[[], PolicySet], clock: Clock, *, pressure: PressureSource | None = None,
                 enabled: bool = True, dry_run: bool = False, events: EventLog | None = None,
                 model_memory_s: float = 60.0):
        self._policies = policies
        self.clock = clock
        self.pressure = pressure
        """Pressure of a model by name; None (a library user without engine metrics): never under load."""
        self.enabled = enabled
        """Global kill switch: False restores every category to its policy at once."""
        self.dry_run = dry_run
        """Log what would change (events marked ``dry_run``) but serve the policy's values."""
        self.disabled: set[str] = set()
        """Per-category kill switches (at run time; ``under_load.enabled: false`` in the policy is the other)."""
        self.events = events or EventLog()
        self.model_memory_s = model_memory_s
        self._states: dict[str, _State] = {}
        self.stale_hits: dict[str, int] = {}
        self.live_estimate: Callable[[str], dict[str, Any] | None] | None = None
        """A category's live false-hit estimate (``samples``, ``upper``: :meth:`FalseHitEstimator.estimate`)."""

    # ------------------------------------------------------------ the request path
    def effective(self, policy: CategoryPolicy, model: str | None = None) -> Effective:
        """The threshold/TTL/serve-stale to use for ``policy`` now (``model``: the request's)."""
        if not self._active(policy):
            return Effective(policy.threshold, policy.ttl_seconds)
        state = self._states.setdefault(policy.name, _State())
        now = self.clock.now()
        if model is not None:
            state.models[model] = now
        self._update(policy, state, now)
        overloaded = state.pressure.value >= policy.under_load.pressure_high or state.pressure.failing
        stale = policy.under_load.serve_stale_s if overloaded and not self.dry_run else 0.0
        return _effective_at(policy, 0 if self.dry_run else state.level, stale)

    def purgeable(self, category: str, expires_at: float | None, now: float) -> bool:
        """Whether an entry may be purged: expired, and past ``serve_stale_s`` if the category may serve stale."""
        if expires_at is None:
            return False
        policy = self._policies().get(category)
        keep = policy.under_load.serve_stale_s if policy is not None and policy.under_load.enabled else 0.0
        return now >= expires_at + keep

    def mark_stale(self, result: LookupResult, now: float) -> None:
        """Note on a hit how long ago its entry expired, if it was served stale."""
        if result.entry is not None and result.entry.expired(now):
            result.stale_s = now - result.entry.expires_at
            self.stale_hits[result.category] = self.stale_hits.get(result.category, 0) + 1

    # ------------------------------------------------------------ control
    def tick(self) -> None:
        """Update every adaptive category (the proxy calls this every second, so levels recover idle)."""
        now = self.clock.now()
        for policy in self._policies():
            state = self._states.get(policy.name)
            if state is None:
                continue
            if self._active(policy):
                self._update(policy, state, now)
            else:
                self._reset(policy, state, now, "off: " + self._why_off(policy))

    def set_switches(self, *, enabled: bool | None = None, dry_run: bool | None = None,
                     category: str | None = None) -> None:
        """Kill switches and dry run; with ``category``, ``enabled`` applies to that category only."""
        if category is not None and enabled is not None:
            (self.disabled.discard if enabled else self.disabled.add)(category)
        elif enabled is not None:
            self.enabled = enabled
        if dry_run is not None and dry_run != self.dry_run:
            # Entering or leaving dry run starts from the policy: a level reached in one
            # mode says nothing the other may act on.
            now = self.clock.now()
            for policy in self._policies():
                if (state := self._states.get(policy.name)) is not None:
                    self._reset(policy, state, now, f"dry run {'on' if dry_run else 'off'}")
            self.dry_run = dry_run
        self.tick()

    def _active(self, policy: CategoryPolicy) -> bool:
        return self.enabled and policy.under_load.enabled and policy.name not in self.disabled

    def _why_off(self, policy: CategoryPolicy) -> str:
        if not self.enabled:
            return "global kill switch"
        if policy.name in self.disabled:
            return "category kill switch"
        return "under_load disabled in the policy"

    def _pressure(self, state: _State, now: float) -> Pressure:
        if self.pressure is None:
            return NO_PRESSURE
        for model, seen in list(state.models.items()):
            if now - seen > self.model_memory_s:
                del state.models[model]
        worst, failing = NO_PRESSURE, False
        for model in list(state.models):
            try:
                p = self.pressure(model)
            except Exception as exc:  # a broken load source must never fail a lookup
                log.warning("pressure of %s unavailable: %s", model, exc)
                continue
            failing = failing or p.failing
            if p.value > worst.value:
                worst = p
        return Pressure(worst.value, worst.signal, failing)

    def _update(self, policy: CategoryPolicy, state: _State, now: float) -> None:
        ul = policy.under_load
        state.pressure = p = self._pressure(state, now)
        top = _levels(policy)
        if state.level > top:  # the policy changed under a relaxed state: start again from it
            self._reset(policy, state, now, "policy changed")
        if now - state.last_move < ul.interval_s:
            return
        level = state.dry_level if self.dry_run else state.level
        over = self._live_over_budget(policy)
        if over is not None:
            if level > 0:
                self._move(policy, state, now, level, level - 1, "restore", over, p.value)
            return
        if p.value >= ul.pressure_high and level < top:
            new, action, why = level + 1, "relax", f"{p.describe()} >= {ul.pressure_high:.2f}"
        elif p.value < ul.pressure_high * (1.0 - ul.hysteresis) and level > 0:
            new, action, why = level - 1, "restore", f"{p.describe()} < {ul.pressure_high * (1 - ul.hysteresis):.2f}"
        else:
            return
        self._move(policy, state, now, level, new, action, why, p.value)

    def _live_over_budget(self, policy: CategoryPolicy) -> str | None:
        """Why live audits forbid relaxing ``policy`` now, or None."""
        budget = policy.under_load.max_false_hit_rate
        if self.live_estimate is None or budget is None:
            return None
        try:
            est = self.live_estimate(policy.name)
        except Exception as exc:  # the estimate must never fail a lookup
            log.warning("live false-hit estimate unavailable: %s", exc)
            return None
        if not est or est.get("samples", 0) < MIN_LIVE_SAMPLES or est.get("upper") is None:
            return None
        if est["upper"] <= budget:
            return None
        return f"live false-hit upper bound {est['upper']:.3f} > budget {budget:.3f} ({est['samples']} samples)"

    def _move(self, policy: CategoryPolicy, state: _State, now: float, old: int, new: int, action: str,
              reason: str, pressure: float) -> None:
        (old_t, old_ttl), (new_t, new_ttl) = _at_level(policy, old), _at_level(policy, new)
        if self.dry_run:
            state.dry_level = new
        else:
            state.level = new
        state.last_move = now
        self.events.add(AdaptiveEvent(now, policy.name, action, reason, round(pressure, 4), old_t, new_t,
                                      old_ttl, new_ttl, dry_run=self.dry_run, cutoff=policy.under_load.relaxes))

    def _reset(self, policy: CategoryPolicy, state: _State, now: float, reason: str) -> None:
        if state.level or state.dry_level:
            was_dry = not state.level
            old = state.level or state.dry_level
            (old_t, old_ttl) = _at_level(policy, min(old, _levels(policy)))
            state.level = state.dry_level = 0
            state.last_move = now
            self.events.add(AdaptiveEvent(now, policy.name, "reset", reason, round(state.pressure.value, 4),
                                          old_t, _at_level(policy, 0)[0], old_ttl, policy.ttl_seconds,
                                          dry_run=was_dry, cutoff=policy.under_load.relaxes))

    # ------------------------------------------------------------ inspection
    def snapshot(self) -> dict[str, Any]:
        """For ``/admin/stats``, the gauges and the reports: per category, and the newest events."""
        self.tick()
        categories = {}
        for policy in self._policies():
            state = self._states.get(policy.name, _State())
            active = self._active(policy)
            eff = _effective_at(policy, state.level if active and not self.dry_run else 0)
            verifier = policy.verifier.min_probability if policy.verifier.enabled else None
            categories[policy.name] = {
                "adaptive": active, "threshold": policy.threshold, "effective_threshold": eff.threshold,
                "ttl_seconds": policy.ttl_seconds, "effective_ttl_seconds": eff.ttl_seconds,
                "relaxes": policy.under_load.relaxes, "floor": _cutoff(policy)[1],
                "min_probability": verifier,
                "effective_min_probability": verifier if eff.min_probability is None else eff.min_probability,
                "level": state.level,
                "dry_run_level": state.dry_level, "pressure": round(state.pressure.value, 4),
                "signal": state.pressure.signal, "models": sorted(state.models)}
        return {"enabled": self.enabled, "dry_run": self.dry_run, "disabled": sorted(self.disabled),
                "categories": categories, "stale_hits": dict(self.stale_hits), "moves": self.events.total,
                "events": self.events.snapshot()}

    def start(self, interval_s: float = 1.0) -> list[asyncio.Task]:
        """The background ticks (none without a pressure source: nothing could move)."""
        if self.pressure is None:
            return []
        return [asyncio.create_task(self.run(interval_s), name="semcache-adaptive")]

    async def run(self, interval_s: float = 1.0) -> None:
        """Tick forever (a background task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.tick()
            except Exception:  # keep ticking: a bad tick must not end adaptation silently
                log.exception("adaptive tick failed")


def stale_grace(policies: PolicySet) -> float:
    """How long past their TTL a store must keep entries: the largest ``serve_stale_s`` in force."""
    return max((p.under_load.serve_stale_s for p in policies if p.under_load.enabled), default=0.0)

"""Pressure per model: how far an engine is past its service-level targets.

``pressure = max(signal / target)`` over the signals known for a model: the
engine's queue (``vllm:num_requests_waiting``, summed over the replicas that
serve the model), the windowed mean time to first token, KV-cache use, and,
when no engine metrics are known (llama.cpp, a hosted API), this proxy's own
requests in flight. 1.0 means "at the target"; above it the model is
overloaded. The load figures come from :mod:`semcache.load`, the same model
IC-Cache's router and upstream routing read.

TTFT is the mean over the last scrape window (from the histogram's ``_sum``
and ``_count``), not a p95: the scrape keeps no buckets. A target for it is
therefore a mean target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from semcache.load import EngineLoad


class PressureTargets(BaseModel):
    """Service-level targets per model; a signal at its target gives pressure 1.0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_waiting: float = Field(default=8.0, gt=0)
    """Requests queued in the engine(s) of a model (all clients)."""
    ttft_s: float = Field(default=2.0, gt=0)
    """Mean time to first token over the last scrape window."""
    kv_usage: float = Field(default=0.95, gt=0, le=1.0)
    """KV-cache use (0..1): near full, vLLM preempts and requests queue."""
    max_in_flight: float = Field(default=64.0, gt=0)
    """This proxy's requests in flight to the model; used only when no engine metrics are known."""


@dataclass(frozen=True, slots=True)
class Pressure:
    """A model's pressure now: the worst signal's ratio to its target, and which signal it was."""

    value: float = 0.0
    signal: str = "none"
    failing: bool = False
    """The model's engines stopped answering their metrics (down or wedged)."""

    def describe(self) -> str:
        return f"pressure {self.value:.2f} ({self.signal}){' failing' if self.failing else ''}"


NO_PRESSURE = Pressure()

PressureSource = Callable[[str], Pressure]
"""Pressure of a model by name (the request's ``model``)."""


def pressure_of(load: EngineLoad | None, targets: PressureTargets, *, in_flight: float = 0.0,
                failing: bool = False) -> Pressure:
    """The pressure one model's load puts on its targets (``load`` None: engine metrics unknown)."""
    if load is None:
        ratios = {"in_flight": in_flight / targets.max_in_flight}
    else:
        ratios = {"queue": load.waiting / targets.max_waiting, "kv": load.kv_usage / targets.kv_usage}
        if load.ttft_s is not None and load.waiting + load.running > 0:
            # The window mean is of requests that finished; an idle engine keeps its last
            # one indefinitely, which says nothing about a request sent now.
            ratios["ttft"] = load.ttft_s / targets.ttft_s
    signal = max(ratios, key=lambda k: ratios[k])
    return Pressure(value=max(0.0, ratios[signal]), signal=signal, failing=failing)

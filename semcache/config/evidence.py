"""What ``semcache calibrate`` records for an operating point, and the checks a policy runs on it.

A policy carries its evidence (:class:`Calibration`) beside the cut-off it
justifies; loading the policy checks that the evidence meets the budgets it
was made for (:func:`check_traps` for ``max_trap_rate``; the false-hit bound
is checked where the budget lives, :mod:`semcache.config.policy`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrapEvidence(_Strict):
    """How many of the labelled *trap* pairs (made to be hard to tell apart) a cut-off serves."""

    n: int = Field(ge=0)
    served: int = Field(ge=0)
    estimated_rate: float = Field(ge=0.0, le=1.0)
    upper_bound: float = Field(ge=0.0, le=1.0)


class Calibration(_Strict):
    """Evidence written by ``semcache calibrate`` for the operating point it chose."""

    score: Literal["similarity", "verifier"]
    value: float
    """The chosen ``threshold`` (similarity) or ``verifier.min_probability``."""
    n_labelled: int = Field(ge=0)
    served: int = Field(ge=0)
    false_hits: int = Field(ge=0)
    estimated_rate: float = Field(ge=0.0, le=1.0)
    upper_bound: float = Field(ge=0.0, le=1.0)
    bound: str = "clopper-pearson"
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    data: str = ""
    traps: TrapEvidence | None = None
    """With ``max_trap_rate``: the trap pairs served at ``value`` (the other counts are the rest's)."""
    overruled: int | None = Field(default=None, ge=0)
    """With ``verifier.overrule``: of the pairs served (traps included), those a guard refused."""
    embedder: str = ""
    """The embedder whose cosines the evidence used (``all-MiniLM-L6-v2@.../onnx/int8-avx2``): its
    int8 variant follows the CPU, so on another CPU the same pairs move the cut-off a little."""


def check_traps(cal: Calibration, budget: float | None, where: str) -> None:
    """Trap evidence needs the budget it was made for, and must meet it."""
    if cal.traps is None:
        return
    if budget is None:
        raise ValueError(f"{where}calibration.traps needs the budget it was made for: {where}max_trap_rate")
    if cal.traps.upper_bound > budget:
        raise ValueError(f"{where}calibration.traps' upper bound {cal.traps.upper_bound} exceeds "
                         f"{where}max_trap_rate {budget}")

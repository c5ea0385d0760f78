"""What a candidate must pass before it is served: the guards, then the learned verifier.

Per category (:class:`semcache.config.policy.CategoryPolicy` ``guards`` / ``verifier``); the
checks themselves are :mod:`semcache.decide.guards`, :mod:`semcache.decide.diffrule` and
:mod:`semcache.verifier`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from semcache.config.evidence import _Strict


class Guards(_Strict):
    """Cheap false-hit guards run on a candidate before it is served."""

    numbers: bool = True
    """Numbers, dates and versions in both queries must agree."""
    negation: bool = True
    """Negations and antonyms (enable/disable, include/exclude, ...) must agree."""
    actions: bool = False
    """Requests (edit / delete / pause / renew / track ... an account, order, file) must agree."""
    entities: bool = False
    """Capitalised names (people, places, products) must agree."""
    identifiers: bool = False
    """Code identifiers (snake_case, camelCase, dotted.names, `quoted`) must agree."""
    diff: bool = True
    """Judge by what differs (:mod:`semcache.decide.diffrule`): atoms (ids, hashes, URLs, paths, numbers in any
    form) must agree, so must names a letter or two apart at the front (pnpm / npm), and prompts sharing a
    long body are served only if the changed part passes."""


_Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class VerifierSettings(_Strict):
    """The learned hit verifier (:mod:`semcache.verifier`), run after the guards."""

    enabled: bool = False
    model: Literal["trees", "cross-encoder"] = "trees"
    """``trees``: the tree ensemble over pair features; ``cross-encoder``: MiniLM reading both queries."""
    min_probability: _Probability = 0.5
    """Serve a candidate only if the verifier's P(cached answer is right) reaches this."""
    overrule: dict[Literal["numbers", "negation", "actions", "entities", "identifiers"], _Probability] = {}
    """Guards whose refusal the verifier may overrule, each with the P that takes (and at least
    ``min_probability``): ``{negation: 0.95}`` (never an antonym pair, never a number in digits:
    ``guards.overrulable``)."""
    both_orders: bool = False
    """Cross-encoder only: read the pair as (cached, new) and as (new, cached), each in a run of
    its own, and average the two logits. Whether a cached answer fits a new query is the same
    question either way round, and the model's two readings disagree on hard pairs. Measured on
    the calibration pairs at the shipped 2% budgets when it came in (session 13, both orders then
    in one run): 970 other pairs served instead of 942, none wrong, the same 15 traps (README,
    "The cross-encoder verifier")."""
    one_order_margin: Annotated[float, Field(gt=0.0)] | None = None
    """With ``both_orders``: the score is the two orders' mean held within this many log-odds of
    the first order's alone, so the second order is read only where the first lands this close
    to a cut-off (:meth:`semcache.verifier.CrossEncoderVerifier.judge`). ``semcache calibrate``
    certifies the held score, so the evidence is that of what is served."""

    @model_validator(mode="after")
    def _both_orders_needs_the_cross_encoder(self) -> VerifierSettings:
        if self.both_orders and self.model != "cross-encoder":
            raise ValueError("verifier.both_orders needs model: cross-encoder (the trees read one order)")
        if self.one_order_margin is not None and not self.both_orders:
            raise ValueError("verifier.one_order_margin needs both_orders: true (it spares the second order)")
        return self

    @property
    def active_overrule(self) -> dict[str, float]:
        """``overrule`` while the verifier is on; a verifier that does not run overrules nothing."""
        return self.overrule if self.enabled else {}

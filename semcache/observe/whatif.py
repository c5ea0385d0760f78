"""What-if: replay a category's recent lookups at another threshold, TTL or guard switch.

The replay walks each recorded lookup's candidates (:mod:`semcache.observe.lookup_log`)
in the order the index returned them, as the cache does: expired (under the
new TTL, by the candidate's age) and quarantined ones are skipped, the first
one below the new threshold ends the search with a miss, one that passes the
guards is the hit, one refused by a guard or the verifier is skipped, and one
whose guards were never checked ends the replay of that lookup as
*undetermined* (reported, never guessed); so does one whose changed spans
(a long prompt) the diff rule judged by similarity at another threshold. An
exact repeat stays a hit while its entry is alive under the new TTL. Lookups
without candidates (bypasses, ``no-cache``) keep their recorded outcome.

The false-hit estimate at the new operating point uses only what was
audited: predicted hits served by the same entry that served the recorded,
audited hit carry that audit's outcome; the interval is the exact two-sided
Clopper-Pearson interval. What a lower threshold adds cannot have been
audited (those answers were never served): they are counted as *unaudited new
hits*, and with fewer than ``min_audits`` audited hits the estimate says "not
enough audits" rather than a number.

Guards: each candidate's verdict is also known with any *one* guard switched
(checked in the background for texts under the diff rule's long-body size);
switching two guards at once, or one on a long prompt, is undetermined. Where
the verifier decides, a switched guard serves a candidate only if the
verifier's recorded probability for it reaches the bar that then applies
(``min_probability``, or an ``overrule`` bar); a candidate the verifier never
judged is undetermined under a switch. A hit the verifier served against an
overrulable guard is recorded as the hit it was.

Limits: the verifier's verdict on a candidate is replayed as recorded (a
verifier cut-off move is not predicted); with the threshold lowered, a
candidate the verifier never judged counts on its guards alone; and a replay
knows only the ``candidates`` nearest entries of each lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from semcache.observe.audit import clopper_pearson_interval
from semcache.observe.lookup_log import EXACT, PASS, UNKNOWN, VERIFIER, LookupRecord

_KEEP = object()  # "leave the TTL as it was" (None means: never expires)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a category's recorded lookups would have done at ``threshold`` / ``ttl_seconds``."""

    lookups: int
    hits: int
    hit_rate: float | None
    recorded_hits: int
    recorded_hit_rate: float | None
    new_hits: int
    """Hits not served (by that entry) before: none of them was audited."""
    lost_hits: int
    """Recorded hits that would be misses."""
    undetermined: int
    audited: int
    audited_false: int
    false_hit_rate: float | None
    lower: float | None
    upper: float | None
    enough_audits: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_one(rec: LookupRecord, threshold: float, ttl_seconds: Any = _KEEP,
               guards: dict[str, bool] | None = None) -> str | None:
    """The entry id that would answer ``rec``, None for a miss, or ``"?"`` when undetermined.

    ``guards``: the guard switches to replay with; one switch different from the
    lookup's is replayed from the candidate's per-switch verdicts, more is undetermined.
    """
    if rec.candidates is None:
        return rec.served_entry
    flips = [g for g, on in (guards or {}).items() if rec.guards is not None and rec.guards.get(g) != on]
    ttl_changed = ttl_seconds is not _KEEP and ttl_seconds != rec.ttl_seconds
    for cand in rec.candidates:
        expired = (ttl_seconds is not None and cand.age_s >= ttl_seconds) if ttl_changed else cand.expired
        if expired or cand.blocked:
            continue
        if cand.verdict == EXACT:
            return cand.entry_id
        if cand.similarity < threshold:
            return None
        if cand.verdict == UNKNOWN or (cand.span_threshold is not None and cand.span_threshold != threshold):
            return "?"  # never checked, or its changed spans were judged at another threshold
        if cand.verdict == VERIFIER:
            continue
        if flips:
            if len(flips) > 1 or cand.flipped is None:
                return "?"
            served = cand.flipped[flips[0]]
            if served is None:
                return "?"  # the verifier would decide, and its probability for this pair is not known
            if served:
                return cand.entry_id
            continue
        if cand.verdict == PASS:
            return cand.entry_id
    return None


def predict(records: Iterable[LookupRecord], threshold: float, ttl_seconds: Any = _KEEP,
            guards: dict[str, bool] | None = None, *, min_audits: int = 10, confidence: float = 0.95) -> Prediction:
    """Replay ``records`` (one category's) at ``threshold`` and, if given, ``ttl_seconds`` and ``guards``."""
    lookups = hits = recorded = new = lost = undetermined = audited = false = 0
    for rec in records:
        lookups += 1
        was_hit = rec.status == "hit"
        recorded += was_hit
        served = replay_one(rec, threshold, ttl_seconds, guards)
        if served == "?":
            undetermined += 1
            continue
        if served is None:
            lost += was_hit
            continue
        hits += 1
        if was_hit and served == rec.served_entry:
            if rec.audit is not None:
                audited += 1
                false += rec.audit == "false_hit"
        else:  # a new hit, or one served by another entry: the old answer's audit says nothing of it
            new += 1
    enough = audited >= min_audits
    low, high = clopper_pearson_interval(false, audited, confidence) if audited else (None, None)
    if not audited:
        note = "no audits among the predicted hits"
    elif not enough:
        note = f"not enough audits ({audited} < {min_audits})"
    else:
        note = f"{audited} audited hits"
    if new:
        note += f"; {new} unaudited new hits"
    return Prediction(
        lookups=lookups, hits=hits, hit_rate=hits / lookups if lookups else None,
        recorded_hits=recorded, recorded_hit_rate=recorded / lookups if lookups else None,
        new_hits=new, lost_hits=lost, undetermined=undetermined, audited=audited, audited_false=false,
        false_hit_rate=false / audited if audited else None, lower=low, upper=high,
        enough_audits=enough, note=note,
    )


KEEP_TTL = _KEEP
__all__ = ["KEEP_TTL", "Prediction", "predict", "replay_one"]

"""``semcache calibrate --data LABELLED.jsonl --policy IN.yaml --out OUT.yaml``.

For every category whose policy sets ``max_false_hit_rate``, pick the
operating point with the most hits whose false-hit rate meets the target
with confidence (one-sided Clopper-Pearson upper bound, fixed-sequence
testing: see :mod:`semcache.config.calibration`) on the labelled pairs of that
category, and write it into the output policy: ``threshold`` (cosine) when
the category does not use the verifier, ``verifier.min_probability``
otherwise (the similarity threshold then stays as the pre-filter), plus a
``calibration`` record with the evidence (n, served, false hits, estimated
rate, bound). A pair ``{"a": cached query, "b": new query, "label": 1 if a's
answer is right for b}`` belongs to its ``category`` field, else to
``default``. Guards count: a pair a guard rejects is never served. With too
little evidence (including no pair at all, as for a category that only
inherits ``max_false_hit_rate`` from ``defaults``) the category serves nothing
semantically (threshold 1.0). Categories with ``cacheable: false`` never
serve, so they are left as they are. A category with
``under_load.max_false_hit_rate`` also gets ``under_load.calibration``: the
loosest cut-off meeting that budget, the floor load adaptation may relax to
(:mod:`semcache.adaptive`): of ``verifier.min_probability`` where the
verifier decides, else of the similarity threshold.

A category that also sets ``max_trap_rate`` (``under_load.max_trap_rate`` for
the floor) has two rates bounded apart: pairs marked ``"trap": true``
(negatives made to be hard, label 0) count only toward the share of traps
served, which must have an upper bound <= ``max_trap_rate``; the other pairs,
whose mix should be traffic's, give the false-hit rate. A false-hit rate over
a set holding many traps says more about how many traps were written than
about what users will be served. The record then has a ``traps`` entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from semcache.decide import guards
from semcache.config.calibration import OperatingPoint, choose, clopper_pearson_upper, trap_cut
from semcache.errors import ConfigError
from semcache.config.policy import DEFAULT_CATEGORY, load_policies_text
from semcache.verifier import policy_probabilities
from semcache.verifier.cross_encoder import CrossEncoderVerifier
from semcache.verifier.model import Verifier

HELP = "pick per-category thresholds meeting max_false_hit_rate from labelled pairs"


def _evidence(op, score: str, confidence: float, data: str) -> dict:
    """A ``calibration`` record; with too little evidence the cut-off is 1.0 (serve nothing semantically)."""
    value = 1.0 if op.value is None else op.value
    return {"score": score, "value": round(value, 6), "n_labelled": op.n_labelled, "served": op.served,
            "false_hits": op.false_hits, "estimated_rate": round(op.estimated_rate, 6),
            "upper_bound": round(op.upper_bound, 6), "bound": "clopper-pearson", "confidence": confidence,
            "data": data}


def _operating(scores: np.ndarray, labels: np.ndarray, servable: np.ndarray, trap: np.ndarray, target: float,
               trap_target: float | None, score: str, confidence: float, data: str) -> dict:
    """The ``calibration`` record of the loosest cut-off meeting ``target`` (and ``trap_target``).

    Without a trap budget every pair counts toward the false-hit rate. With
    one, the trap pairs bound how low the cut-off may go (:func:`trap_cut`)
    and the false-hit rate is that of the other pairs, above that floor.
    """
    if trap_target is None:
        return _evidence(choose(scores, labels, target, confidence=confidence, servable=servable),
                         score, confidence, data)
    bound = trap_cut(scores[trap], trap_target, confidence=confidence, servable=servable[trap])
    rest = ~trap
    if bound.value is None:
        op = OperatingPoint(None, int(rest.sum()), 0, 0, 0.0, 0.0, confidence)
    else:
        op = choose(scores[rest], labels[rest], target, confidence=confidence, servable=servable[rest],
                    min_value=bound.value if np.isfinite(bound.value) else None)
    evidence = _evidence(op, score, confidence, data)
    if op.value is None:  # serves nothing semantically: no trap either, and no bound to show
        return evidence
    served = int((servable[trap] & (scores[trap] >= evidence["value"])).sum())
    n = int(trap.sum())
    evidence["traps"] = {"n": n, "served": served, "estimated_rate": round(served / n, 6) if n else 0.0,
                         "upper_bound": round(clopper_pearson_upper(served, n, confidence), 6)}
    return evidence


def _overrule_bars(policy, pairs: list[dict], verdicts: list[guards.GuardVerdict]) -> np.ndarray:
    """Per pair, the probability the verifier needs to overrule the guard that refused it
    (``verifier.overrule``, as in :func:`semcache.decide.diffrule.check`); NaN where it may not."""
    bars = np.full(len(pairs), np.nan)
    overrule = policy.verifier.active_overrule
    for i, verdict in enumerate(verdicts):
        a, b = pairs[i]["a"], pairs[i]["b"]
        if (not verdict.passed and verdict.guard in overrule and guards.overrulable(verdict, b, a)
                and guards.check(policy.guards.model_copy(update={verdict.guard: False}), b, a).passed):
            bars[i] = overrule[verdict.guard]  # and the cut-off: a served pair reaches both
    return bars


def _count_overruled(evidence: dict, scores: np.ndarray, overruled: np.ndarray, overrules: bool) -> None:
    """Record how many served pairs a guard refused (where the policy lets the verifier overrule one)."""
    if overrules and evidence["served"]:
        evidence["overruled"] = int((overruled & (scores >= evidence["value"])).sum())


def calibrate_text(text: str, pairs: list[dict], cosines: np.ndarray, *, verifier: Verifier | None = None,
                   cross_encoder: CrossEncoderVerifier | None = None, confidence: float = 0.95,
                   source: str = "<policy>", data: str = "", embedder: str = "") -> tuple[str, dict]:
    """The calibrated policy YAML for ``text`` and a summary per category.

    ``embedder``: the identity of the embedder that made ``cosines``, recorded with the evidence
    (its int8 variant depends on the CPU, and the cosines, so the cut-offs, move with it).
    """
    policies = load_policies_text(text, source=source)
    raw = yaml.safe_load(text)
    cosines = np.asarray(cosines, dtype=float)
    categories = np.array([p.get("category") or DEFAULT_CATEGORY for p in pairs])
    labels = np.array([int(p["label"]) for p in pairs])
    summary = {}
    for policy in policies:
        target, under_load = policy.max_false_hit_rate, policy.under_load.max_false_hit_rate
        if (target is None and under_load is None) or not policy.cacheable:
            continue
        mask = categories == policy.name
        sub = [p for p, m in zip(pairs, mask) if m]
        cos, y = cosines[mask], labels[mask]
        verdicts = [guards.check(policy.guards, p["b"], p["a"]) for p in sub]
        passes = np.array([v.passed for v in verdicts], dtype=bool)
        bars = _overrule_bars(policy, sub, verdicts)
        lifted = ~np.isnan(bars)
        overrules = bool(policy.verifier.active_overrule)
        body = raw["categories"].get(policy.name) or {}
        raw["categories"][policy.name] = body
        probs = servable = None
        if policy.verifier.enabled:
            model = cross_encoder if policy.verifier.model == "cross-encoder" else verifier
            if model is None:
                raise ConfigError(f"category {policy.name} uses the verifier: calibration needs the model")
            # Only candidates above the similarity pre-filter that pass the guards reach the verifier;
            # one a guard the verifier may overrule refused is served only at that guard's probability.
            above = cos >= policy.threshold
            probs = np.zeros(len(sub))
            idx = np.flatnonzero(above & (passes | lifted))
            probs[idx] = policy_probabilities(policy.verifier, model, [(sub[i]["b"], sub[i]["a"], cos[i]) for i in idx])
            servable = above & (passes | (lifted & (probs >= np.nan_to_num(bars, nan=2.0))))
        trap = np.array([bool(p.get("trap")) for p in sub], dtype=bool)
        # Where the verifier decides, its cut-off (the pre-filter stays); else a similarity cut-off.
        scores, ok, kind = (probs, servable, "verifier") if probs is not None else (cos, passes, "similarity")
        if under_load is not None:
            # The floor of load adaptation, meeting the (looser) under-load budget.
            evidence = _operating(scores, y, ok, trap, under_load, policy.under_load.max_trap_rate,
                                  kind, confidence, data)
            _count_overruled(evidence, scores, ok & lifted, overrules)
            if embedder:
                evidence["embedder"] = embedder
            body["under_load"] = {**(body.get("under_load") or {}), "calibration": evidence}
            summary[f"{policy.name} under_load"] = evidence
        if target is None:
            continue
        evidence = _operating(scores, y, ok, trap, target, policy.max_trap_rate, kind, confidence, data)
        _count_overruled(evidence, scores, ok & lifted, overrules)
        if embedder:
            evidence["embedder"] = embedder
        if probs is not None:
            body["verifier"] = {**(body.get("verifier") or {}), "min_probability": evidence["value"]}
        else:
            body["threshold"] = evidence["value"]
        body["calibration"] = evidence
        summary[policy.name] = evidence
    out = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    header = _leading_comments(text) + (
        f"{_HEADER_START} from {data or 'labelled pairs'}: per category, the loosest\n"
        f"# cut-off whose false-hit rate has a one-sided {confidence:.0%} Clopper-Pearson upper bound\n"
        "# <= max_false_hit_rate (evidence in each `calibration` record).\n")
    load_policies_text(header + out, source="calibrated policy")  # what we write must load
    return header + out, summary


_HEADER_START = "# calibrated by `semcache calibrate`"


def _leading_comments(text: str) -> str:
    """The input's opening comment block (what the file is, how to rebuild it), without an earlier
    calibration header: YAML loses comments, and these are the policy's documentation."""
    kept: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        if lines[i].startswith(_HEADER_START):
            i += 3  # the three lines this command wrote last time
            continue
        kept.append(lines[i])
        i += 1
    while kept and not kept[-1].strip():
        kept.pop()
    return "".join(line + "\n" for line in kept) + ("#\n" if kept else "")


async def cosines_and_embedder(pairs: list[dict]) -> tuple[np.ndarray, str]:
    """Each pair's cosine with the default embedder, and that embedder's identity."""
    import gpu_embed  # only this command needs a real embedder

    emb = gpu_embed.build_embedder(gpu_embed.EmbedderSettings())
    try:
        va = await emb.embed([p["a"] for p in pairs])
        vb = await emb.embed([p["b"] for p in pairs])
    finally:
        await emb.aclose()
    return np.einsum("ij,ij->i", va, vb), emb.identity


async def _cosines(pairs: list[dict]) -> np.ndarray:
    return (await cosines_and_embedder(pairs))[0]


def read_pairs(path: str | Path) -> list[dict]:
    """Labelled pairs from JSON lines; a bad line is a :class:`ConfigError` naming it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            pair = json.loads(line)
        except json.JSONDecodeError:
            pair = None
        if not (isinstance(pair, dict) and isinstance(pair.get("a"), str) and isinstance(pair.get("b"), str)
                and pair.get("label") in (0, 1) and isinstance(pair.get("category"), str | None)
                and pair.get("trap", False) in (False, True) and not (pair.get("trap") and pair["label"] == 1)):
            raise ConfigError(f"{path}:{number}: expected a JSON object {{\"a\": str, \"b\": str, "
                              f"\"label\": 0 or 1[, \"category\": str][, \"trap\": true (label 0 only)]}}")
        pairs.append(pair)
    if not pairs:
        raise ConfigError(f"{path}: no labelled pairs")
    return pairs


def run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.policy).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{args.policy}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    pairs = read_pairs(args.data)
    policies = load_policies_text(text, source=str(args.policy))
    used = {p.verifier.model for p in policies if p.verifier.enabled}
    verifier = Verifier.load() if "trees" in used else None
    cross_encoder = CrossEncoderVerifier.load() if "cross-encoder" in used else None
    cosines, embedder = asyncio.run(cosines_and_embedder(pairs))
    out, summary = calibrate_text(text, pairs, cosines, verifier=verifier, cross_encoder=cross_encoder,
                                  confidence=args.confidence, source=str(args.policy), data=Path(args.data).name,
                                  embedder=embedder)
    Path(args.out).write_text(out, encoding="utf-8")
    for name, ev in summary.items():
        if ev["served"] == 0:
            print(f"{name}: too little evidence ({ev['n_labelled']} labelled pairs): serves nothing semantically "
                  f"({ev['score']} >= 1.0)")
            continue
        print(f"{name}: {ev['score']} >= {ev['value']:.4f}  served {ev['served']}/{ev['n_labelled']}, "
              f"false hits {ev['false_hits']} (rate {ev['estimated_rate']:.4f}, "
              f"{ev['confidence']:.0%} upper bound {ev['upper_bound']:.4f})"
              + (f"; traps served {ev['traps']['served']}/{ev['traps']['n']} (upper bound "
                 f"{ev['traps']['upper_bound']:.4f})" if "traps" in ev else ""))
    if not summary:
        print("no category sets max_false_hit_rate: nothing calibrated")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="labelled pairs, JSON lines {a, b, label[, category][, trap]}")
    parser.add_argument("--policy", required=True, help="input policy YAML")
    parser.add_argument("--out", required=True, help="output policy YAML")
    parser.add_argument("--confidence", type=_open_unit_interval, default=0.95,
                        help="confidence of the false-hit bound, between 0 and 1 (default 0.95)")


def _open_unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number between 0 and 1")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point of group ``semcache.commands``: add ``calibrate``."""
    parser = subparsers.add_parser("calibrate", help=HELP, description=__doc__.split("\n\n", 1)[1])
    _add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semcache.config.calibrate_cli", description=HELP)
    _add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"semcache calibrate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

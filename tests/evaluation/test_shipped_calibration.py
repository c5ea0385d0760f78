"""The evidence in ``policies/default.yaml`` is reproducible: ``semcache calibrate`` on freshly built
calibration pairs gives exactly the cut-offs and counts the file records (a change of model, data or
calibration method that moves them fails here until the policy is recalibrated).

Exactly with the embedder the evidence names. The int8 embedder's variant follows the CPU (VNNI or
AVX2 kernels, :func:`gpu_embed.hardware.int8_variant`), and its cosines feed the pre-filter and the
verifier's combiner: on the other variant the same pairs moved the cut-off by 0.001 and the served
counts by 2 of ~1,000. There the evidence must hold within that, and meet its budgets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from evaluation.training import verifier_data
from semcache.config.calibrate_cli import calibrate_text, cosines_and_embedder
from semcache.config.policy import load_policies
from semcache.verifier.cross_encoder import DEFAULT_DIR, CrossEncoderVerifier

DATA = Path(os.environ.get("SEMCACHE_DATA") or verifier_data.DATA)
POLICY = DEFAULT_DIR.parents[2] / "policies" / "default.yaml"

pytestmark = pytest.mark.skipif(
    not (DATA / "qa" / "comqa" / "qa.jsonl").exists() or not (DEFAULT_DIR / "model.onnx").exists(),
    reason="shared data or the trained cross-encoder absent")


def _same(evidence, recorded, *, exact: bool) -> None:
    assert evidence["n_labelled"] == recorded.n_labelled and evidence["traps"]["n"] == recorded.traps.n
    if exact:
        assert evidence["value"] == pytest.approx(recorded.value, abs=1e-6)
        assert (evidence["served"], evidence["false_hits"]) == (recorded.served, recorded.false_hits)
        assert evidence["traps"]["served"] == recorded.traps.served
        assert evidence.get("overruled") == recorded.overruled
        return
    assert evidence["value"] == pytest.approx(recorded.value, abs=0.005)
    assert abs(evidence["served"] - recorded.served) <= max(3, recorded.served // 100)
    assert abs(evidence["false_hits"] - recorded.false_hits) <= 1
    assert abs(evidence["traps"]["served"] - recorded.traps.served) <= 2
    assert abs((evidence.get("overruled") or 0) - (recorded.overruled or 0)) <= 2


def test_calibrate_on_fresh_calibration_pairs_reproduces_the_shipped_evidence(monkeypatch):
    monkeypatch.setattr(verifier_data, "DATA", DATA)
    # What `python -m evaluation.training.verifier_data` writes as calib-queries.jsonl.
    pairs = [p for p in verifier_data.build("calib", 0) if p["source"] not in ("qqp", "paws")]
    shipped = load_policies(POLICY).default
    assert len(pairs) == shipped.calibration.n_labelled + shipped.calibration.traps.n
    cosines, embedder = asyncio.run(cosines_and_embedder(pairs))
    _, summary = calibrate_text(POLICY.read_text(), pairs, cosines, cross_encoder=CrossEncoderVerifier.load(),
                                data="calib-queries.jsonl", embedder=embedder)
    assert shipped.calibration.embedder == shipped.under_load.calibration.embedder != ""
    exact = embedder == shipped.calibration.embedder
    _same(summary["default"], shipped.calibration, exact=exact)
    _same(summary["default under_load"], shipped.under_load.calibration, exact=exact)
    assert shipped.verifier.min_probability == shipped.calibration.value
    # On any embedder, this box's evidence meets the shipped budgets.
    now, floor = summary["default"], summary["default under_load"]
    assert now["upper_bound"] <= shipped.max_false_hit_rate and now["traps"]["upper_bound"] <= shipped.max_trap_rate
    assert floor["upper_bound"] <= shipped.under_load.max_false_hit_rate
    assert floor["traps"]["upper_bound"] <= shipped.under_load.max_trap_rate

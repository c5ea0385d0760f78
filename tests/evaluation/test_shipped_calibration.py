"""The evidence in ``policies/default.yaml`` is reproducible: ``semcache calibrate`` on freshly built
calibration pairs gives exactly the cut-offs and counts the file records (a change of model, data or
calibration method that moves them fails here until the policy is recalibrated)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from evaluation.training import verifier_data
from semcache.config.calibrate_cli import _cosines, calibrate_text
from semcache.config.policy import load_policies
from semcache.verifier.cross_encoder import DEFAULT_DIR, CrossEncoderVerifier

DATA = Path(os.environ.get("SEMCACHE_DATA") or verifier_data.DATA)
POLICY = DEFAULT_DIR.parents[2] / "policies" / "default.yaml"

pytestmark = pytest.mark.skipif(
    not (DATA / "qa" / "comqa" / "qa.jsonl").exists() or not (DEFAULT_DIR / "model.onnx").exists(),
    reason="shared data or the trained cross-encoder absent")


def _same(evidence, recorded) -> None:
    assert evidence["value"] == pytest.approx(recorded.value, abs=1e-6)
    assert (evidence["n_labelled"], evidence["served"], evidence["false_hits"]) == (
        recorded.n_labelled, recorded.served, recorded.false_hits)
    assert evidence["traps"]["n"] == recorded.traps.n and evidence["traps"]["served"] == recorded.traps.served
    assert evidence.get("overruled") == recorded.overruled


def test_calibrate_on_fresh_calibration_pairs_reproduces_the_shipped_evidence(monkeypatch):
    monkeypatch.setattr(verifier_data, "DATA", DATA)
    # What `python -m evaluation.training.verifier_data` writes as calib-queries.jsonl.
    pairs = [p for p in verifier_data.build("calib", 0) if p["source"] not in ("qqp", "paws")]
    shipped = load_policies(POLICY).default
    assert len(pairs) == shipped.calibration.n_labelled + shipped.calibration.traps.n
    cosines = asyncio.run(_cosines(pairs))
    _, summary = calibrate_text(POLICY.read_text(), pairs, cosines, cross_encoder=CrossEncoderVerifier.load(),
                                data="calib-queries.jsonl")
    _same(summary["default"], shipped.calibration)
    _same(summary["default under_load"], shipped.under_load.calibration)
    assert shipped.verifier.min_probability == shipped.calibration.value

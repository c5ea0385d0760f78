"""The int8-vs-fp32 quality command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_embed.quality import _matching_threshold, _pr, load_pairs, main, run_quality_check


def test_precision_recall_and_matching_threshold():
    sims = np.array([0.95, 0.92, 0.91, 0.85, 0.80])
    labels = np.array([True, False, True, True, False])
    pr = _pr(sims, labels, 0.9)
    assert (pr.precision, pr.recall, pr.predicted_positive) == (2 / 3, 2 / 3, 3)
    assert _matching_threshold(sims, labels, 1.0) == 0.95
    assert _matching_threshold(sims, labels, 0.75) == 0.85  # 3 of the top 4 are positive


def test_quality_check_on_shared_pairs(qqp_path, settings, int8_backend, fp32_backend):
    report = run_quality_check(qqp_path, limit=60, threshold=0.9, settings=settings)
    assert report.pairs == 60 and report.positives == int(load_pairs(qqp_path, 60)[2].sum())
    assert 0 < report.shift_mean <= report.shift_p99 <= report.shift_max < 0.2
    assert 0.95 < report.vector_cosine_min <= report.vector_cosine_mean < 1.0
    assert report.int8_identity != report.fp32_identity


def test_cli_json(qqp_path, settings, monkeypatch, capsys, int8_backend):
    monkeypatch.setenv("SEMCACHE_EMBED_CACHE_DIR", str(settings.cache_dir))
    assert main(["--data", str(qqp_path), "--limit", "20", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["pairs"] == 20 and {"fp32", "int8", "shift_p99"} <= body.keys()


def test_usage_names_a_command_that_exists(capsys):
    """Regression (#13 item 11): the usage named ``semcache embed-quality``, which does not exist."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m gpu_embed.quality") and "semcache embed-quality" not in out

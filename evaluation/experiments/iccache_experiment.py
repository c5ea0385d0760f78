"""IC-Cache experiment: a small model with past large-model answers as examples.

Data: ``qa/bitext_cs_4k5`` (27 support intents x ~167 rewordings, one
reference answer per row). ``--per-intent`` questions of every intent are held
out (seeded); every other row is an example in an :class:`ExampleBank`, as
if the large model had answered it before.

Conditions, each over the same held-out questions, temperature 0:

* ``small``          SmolLM2-135M-Instruct (llama.cpp) alone;
* ``small+random``   with 2 random bank examples;
* ``small+nearest``  with the 2 nearest examples by MiniLM similarity (the probe);
* ``small+selected`` with :func:`select_examples` (top-K, utility/length/diversity
  ranking) under a per-request token budget equal to what the 2 nearest take;
* ``small+probed``   selection with *learned* utilities: first each held-out
  question's top ``--probe-candidates`` bank candidates is probed once, offline
  (the replay job's idea): used as the only example for its own nearest other
  bank question, the small answer's agreement with that question's reference
  (the large model's answer) credits it (``ExampleBank.record_outcome``); then
  2 examples of those candidates are chosen by similarity + ``--utility-weight``
  x utility under the 2-nearest token budget;
* ``large``          the reference answers served by the engine simulator
  (``--answers``: it answers a known question with its reference answer)
  with GPU-like latency;
* ``small+selected+check`` (derived from the two above): the proxy's answer
  check (``min_answer_agreement``, ``--min-agreement``): a small answer whose
  best MiniLM similarity to its examples' answers is below the threshold is
  replaced by the large model's answer (latency and prompt tokens of both
  calls); ``served_by_small`` is the share it kept.

Measures: *intent accuracy*: the intent whose centroid of bank reference
answers (MiniLM, unit mean) is nearest to the produced answer equals the
question's intent; *similarity*: MiniLM cosine between the produced answer
and the held-out reference answer. Latency is wall time per request (one at
a time). Prompt tokens are the engine's own usage counts.

Sampling: every small-model request (all ``small*`` conditions alike) is
greedy (``temperature`` 0) with ``frequency_penalty``/``presence_penalty`` 0
and ``--repeat-penalty`` (default 1.1, llama-cpp-python's server default, now
sent explicitly). llama.cpp applies it only to the last 64 tokens of the
context (``last_n_tokens_size``), i.e. the end of the question and the answer
being written, not the in-context examples further back. On Bitext (2
nearest, 54 held out) 1.0 gave 0.70 intent accuracy vs 0.80 at 1.1 (greedy
decoding of the 135M model then loops on its own phrases); 1.2 gave 0.69 and
1.3 0.80: at n = 54 the measure moves by about 0.1 with such perturbations.

Run: ``python -m evaluation.experiments.iccache_experiment --out /tmp/iccache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from semcache.iccache.bank import Example, ExampleBank, approx_tokens
from semcache.iccache.config import SelectionConfig
from semcache.iccache.prompt import with_examples
from semcache.iccache.quality import agreement, follows_examples
from semcache.iccache.selection import select_examples
from evaluation.workloads.data import DATA as SHARED_DATA

DATA = SHARED_DATA / "qa" / "bitext_cs_4k5" / "qa.jsonl"
SYSTEM = "You are a helpful customer support assistant. Answer the customer's request."
SCOPE, CATEGORY = "tenant:eval/", "support"


def load_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split(rows: list[dict[str, Any]], per_intent: int, seed: int, max_groups: int = 0
          ) -> tuple[list[int], list[int]]:
    """Held-out rows (``per_intent`` of each group, of ``max_groups`` seeded groups if > 0) and the rest."""
    rng = random.Random(seed)
    by_group: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_group.setdefault(row["group"], []).append(i)
    groups = sorted(by_group)
    if 0 < max_groups < len(groups):
        groups = sorted(rng.sample(groups, max_groups))
    held = []
    for group in groups:
        held += rng.sample(by_group[group], per_intent)
    held_set = set(held)
    return held, [i for i in range(len(rows)) if i not in held_set]


async def embed_all(texts: list[str], cache: Path | None = None) -> np.ndarray:
    """MiniLM embeddings of ``texts`` (cached on disk if ``cache``: the bank is 9,000 texts)."""
    if cache is not None and cache.exists():
        vecs = np.load(cache)
        if len(vecs) == len(texts):
            return vecs
    import gpu_embed

    emb = gpu_embed.build_embedder(gpu_embed.EmbedderSettings())
    try:
        out = [await emb.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    finally:
        await emb.aclose()
    vecs = np.concatenate(out).astype(np.float32)
    if cache is not None:
        np.save(cache, vecs)
    return vecs


async def ask(client: httpx.AsyncClient, url: str, model: str, messages: list[dict], max_tokens: int,
              repeat_penalty: float | None = None) -> dict:
    started = time.perf_counter()
    payload = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "seed": 0,
               "frequency_penalty": 0.0, "presence_penalty": 0.0}
    if repeat_penalty is not None:
        payload["repeat_penalty"] = repeat_penalty  # llama.cpp's own sampling parameter
    r = await client.post(url + "/chat/completions", json=payload)
    r.raise_for_status()
    body = r.json()
    return {"text": body["choices"][0]["message"]["content"] or "",
            "latency_s": time.perf_counter() - started,
            "prompt_tokens": body.get("usage", {}).get("prompt_tokens", 0)}


def nearest(bank: ExampleBank, vector: np.ndarray, n: int) -> list[Example]:
    found = bank.candidates(SCOPE, CATEGORY, vector, n)
    return [ex for ex, _ in sorted(found, key=lambda item: -item[1])][::-1]  # best last


def selection_config(args: argparse.Namespace) -> SelectionConfig:
    return SelectionConfig(candidates=args.candidates, max_examples=args.max_examples, token_budget=100_000,
                           answer_reserve=0, min_similarity=0.3, utility_weight=0.0,
                           length_weight=args.length_weight, diversity=args.diversity,
                           duplicate_similarity=0.98)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = load_rows(Path(args.data))
    held, bank_idx = split(rows, args.per_intent, args.seed, args.max_groups)
    cache_dir = Path(tempfile.gettempdir())
    stem = Path(args.data).parent.name
    q_vecs = await embed_all([r["question"] for r in rows], cache_dir / f"iccache_{stem}_q.npy")
    a_vecs = await embed_all([r["answer"] for r in rows], cache_dir / f"iccache_{stem}_a.npy")

    bank = ExampleBank(q_vecs.shape[1])
    bank.add_many(Example(id=rows[i]["id"], scope=SCOPE, category=CATEGORY, question=rows[i]["question"],
                          answer=rows[i]["answer"], vector=q_vecs[i],
                          tokens=approx_tokens(rows[i]["question"]) + approx_tokens(rows[i]["answer"]))
                  for i in bank_idx)
    groups = sorted({rows[i]["group"] for i in bank_idx})
    centroids = np.stack([a_vecs[[i for i in bank_idx if rows[i]["group"] == g]].mean(0) for g in groups])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    rng = random.Random(args.seed + 1)
    sel_cfg = selection_config(args)

    probed_cfg = SelectionConfig(candidates=args.probe_candidates, max_examples=2, token_budget=100_000,
                                 answer_reserve=0, min_similarity=0.3, utility_weight=args.utility_weight,
                                 diversity=0.0, duplicate_similarity=0.98)

    def prompts(condition: str, i: int) -> tuple[list[dict], list[Example]]:
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": rows[i]["question"]}]
        if condition == "small":
            return msgs, []
        if condition == "small+random":
            shots = [bank.get(rows[j]["id"]) for j in rng.sample(bank_idx, 2)]
        else:
            near2 = nearest(bank, q_vecs[i], 2)
            shots = near2
            if condition in ("small+selected", "small+probed"):
                budget = sum(e.tokens for e in near2)
                shots = select_examples(bank, scope=SCOPE, category=CATEGORY, vector=q_vecs[i],
                                        config=sel_cfg if condition == "small+selected" else probed_cfg,
                                        budget=budget).examples
        return with_examples(msgs, shots), list(shots)

    results: dict[str, Any] = {"held_out": len(held), "bank": len(bank_idx), "conditions": {}}
    async with httpx.AsyncClient(timeout=120) as client:
        if "small+probed" in args.conditions:
            results["probes"] = await probe_utilities(client, args, rows, bank, held, q_vecs, a_vecs)
        for condition in args.conditions:
            if condition == "large":
                continue
            answers = []
            for i in held:
                msgs, shots = prompts(condition, i)
                out = await ask(client, args.small_url, args.small_model, msgs, args.max_tokens,
                                repeat_penalty=args.repeat_penalty)
                out["examples"] = len(shots)
                out["example_answers"] = [e.answer for e in shots]
                answers.append(out)
            results["conditions"][condition] = answers
            print(condition, "done", flush=True)
        if "large" in args.conditions:
            results["conditions"]["large"] = await run_large(args, rows, held)
        conditions = results["conditions"]
        if args.min_agreement >= 0 and "small+selected" in conditions and "large" in conditions:
            conditions["small+selected+check"] = await checked(conditions["small+selected"], conditions["large"],
                                                               args.min_agreement)

    # Score every condition with the same embedder and centroids.
    summary = {}
    for condition, answers in results["conditions"].items():
        vecs = await embed_all([a["text"] or " " for a in answers])
        intents = [groups[k] for k in np.argmax(vecs @ centroids.T, axis=1)]
        correct = [intents[n] == rows[i]["group"] for n, i in enumerate(held)]
        sims = [float(vecs[n] @ a_vecs[i]) for n, i in enumerate(held)]
        lat = [a["latency_s"] for a in answers]
        summary[condition] = {
            "n": len(answers), "intent_accuracy": float(np.mean(correct)), "similarity": float(np.mean(sims)),
            "latency_mean_s": float(np.mean(lat)), "latency_p50_s": float(np.median(lat)),
            "prompt_tokens_mean": float(np.mean([a["prompt_tokens"] for a in answers])),
            "examples_mean": float(np.mean([a.get("examples", 0) for a in answers])),
            "served_by_small": float(np.mean([a.get("route", "small") == "small" for a in answers]))
            if condition.startswith("small") else 0.0,
        }
    results["summary"] = summary
    results["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    return results


async def probe_utilities(client: httpx.AsyncClient, args: argparse.Namespace, rows: list[dict],
                          bank: ExampleBank, held: list[int], q_vecs: np.ndarray, a_vecs: np.ndarray) -> int:
    """Learn utilities offline: each candidate of a held-out question is probed once (see ``small+probed``)."""
    row_of = {rows[i]["id"]: i for i in range(len(rows))}
    candidates = {ex.id: ex for i in held for ex, _ in bank.candidates(SCOPE, CATEGORY, q_vecs[i],
                                                                         args.probe_candidates)}
    probes: list[tuple[str, int, str]] = []
    for ex_id, ex in sorted(candidates.items()):
        near = sorted(bank.candidates(SCOPE, CATEGORY, ex.vector, 3), key=lambda item: -item[1])
        probe_row = row_of[next(e.id for e, _ in near if e.id != ex_id)]  # a bank question, never held out
        msgs = with_examples([{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": rows[probe_row]["question"]}], [ex])
        out = await ask(client, args.small_url, args.small_model, msgs, args.max_tokens,
                        repeat_penalty=args.repeat_penalty)
        probes.append((ex_id, probe_row, out["text"] or " "))
    vecs = await embed_all([text for _, _, text in probes])
    for (ex_id, probe_row, _), vec in zip(probes, vecs):
        bank.record_outcome([ex_id], agreement(vec, a_vecs[probe_row]))
    print("probed", len(probes), "candidates", flush=True)
    return len(probes)


async def checked(small: list[dict], large: list[dict], threshold: float) -> list[dict]:
    """The answer check the proxy runs (``min_answer_agreement``): a small answer that resembles
    none of its examples' answers is replaced by the large model's, costing both calls' time."""
    texts = [t for s in small for t in (s["text"] or " ", *s["example_answers"])]
    vecs = await embed_all(texts)  # one embedder load for every answer and example
    out, at = [], 0
    for s, big in zip(small, large):
        n = 1 + len(s["example_answers"])
        answer, examples = vecs[at], vecs[at + 1 : at + n]
        at += n
        if follows_examples(answer, examples) >= threshold:
            out.append({**s, "route": "small"})
        else:
            out.append({**big, "route": "large", "examples": s["examples"],
                        "latency_s": s["latency_s"] + big["latency_s"],
                        "prompt_tokens": s["prompt_tokens"] + big["prompt_tokens"]})
    return out


async def run_large(args: argparse.Namespace, rows: list[dict], held: list[int]) -> list[dict]:
    """The large model: the engine simulator answering held-out questions with their references."""
    from evaluation.engine_sim import SimSettings, create_app

    settings = SimSettings(model="large", answers_file=Path(args.data), prefill_ms_per_token=args.large_prefill_ms,
                           decode_ms_per_token=args.large_decode_ms, max_model_len=8192)
    transport = httpx.ASGITransport(app=create_app(settings))
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://large", timeout=60) as client:
        for i in held:
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": rows[i]["question"]}]
            answers.append(await ask(client, "http://large/v1", "large", msgs, args.max_tokens))
    return answers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--small-url", default="", help="OpenAI base URL of the small model (default: start SmolLM2)")
    p.add_argument("--small-model", default="smollm2-135m-instruct")
    p.add_argument("--per-intent", type=int, default=3)
    p.add_argument("--max-groups", type=int, default=0, help="hold out from this many seeded groups (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=80)
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--max-examples", type=int, default=3)
    p.add_argument("--length-weight", type=float, default=0.3)
    p.add_argument("--diversity", type=float, default=0.0)
    p.add_argument("--probe-candidates", type=int, default=6,
                   help="small+probed: candidates per held-out question probed (and chosen from)")
    p.add_argument("--utility-weight", type=float, default=1.0, help="small+probed: weight of learned utility")
    p.add_argument("--large-prefill-ms", type=float, default=0.1)
    p.add_argument("--large-decode-ms", type=float, default=20.0)
    p.add_argument("--repeat-penalty", type=float, default=1.1,
                   help="llama.cpp repeat_penalty sent with every small-model request (all conditions)")
    p.add_argument("--min-agreement", type=float, default=0.75,
                   help="also report small+selected+check: the proxy's min_answer_agreement answer check "
                        "(needs the small+selected and large conditions); a negative value turns it off")
    p.add_argument("--conditions", nargs="+",
                   default=["small", "small+random", "small+nearest", "small+selected", "large"])
    p.add_argument("--out", default="")
    args = p.parse_args()
    if args.small_url:
        results = asyncio.run(run(args))
    else:
        from proxy.upstream.local_llm import LocalLLM

        with LocalLLM(threads=2) as engine:
            args.small_url = engine.base_url
            results = asyncio.run(run(args))
    print(json.dumps(results["summary"], indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

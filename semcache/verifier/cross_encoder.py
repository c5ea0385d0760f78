"""The cross-encoder hit verifier: P(cached answer is right) from both queries read together.

A bi-encoder compares two vectors made apart, so "open" and "closed" can
land close; this model attends across ``[CLS] cached query [SEP] new query
[SEP]`` and sees the words that differ. It is MiniLM-L6 fine-tuned here
(``python -m evaluation.training.train_verifier --cross-encoder``), shipped as int8
ONNX with its tokenizer and training card in ``cross_encoder/`` beside this
module, and run with onnxruntime and ``tokenizers`` only (no torch).

Its logit is combined with the cosine similarity of the candidate by the
two-weight logistic regression in the card's ``combiner`` (fitted by
``python -m evaluation.training.cross_encoder_combiner``): :meth:`scores` is the
model alone, :meth:`probability` the combined P(right) the gate uses.

Inputs are two short texts; a long pair is first reduced to its changed
spans (:mod:`semcache.verifier.focus`), a word misspelt on one side is read as
the other side spells it (:mod:`semcache.verifier.typos`); each text is cut to :data:`MAX_CHARS`
characters before the tokenizer sees it, and the pair to the model's
``max_len`` tokens (longest first), so the cost per candidate is bounded.

Scores are memoised per pair (:class:`PairMemo`): a pair is always scored
alone, so its score is a pure function of the two texts, and a rewording
asked again costs a dict lookup instead of a model run.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from semcache.cores import cpu_count
from semcache.errors import ConfigError
from semcache.lru import CountingLRU
from semcache.verifier.focus import focus
from semcache.verifier.typos import fold

DEFAULT_DIR = Path(__file__).with_name("cross_encoder")
MAX_CHARS = 2000  # far beyond max_len tokens; bounds the tokenizer's work on hostile input
MEMO_PAIRS = 65_536
"""Pairs whose scores are remembered (~10 MB): the popular rewordings of the popular entries."""


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


class PairMemo(CountingLRU[bytes, float]):
    """A bounded LRU of the model's score per ``(query, cached query)`` pair; thread-safe.

    Exact, not an approximation: every pair is scored in a run of its own
    (see :meth:`CrossEncoderVerifier.probabilities_of`), so the score depends
    on the two texts only. Measured with ``evaluation/bench/bench_verifier_hit.py``:
    one model run is ~2-3.5 ms of a core here, a memo lookup ~20 us with the
    key's hash, and a semantic hit on a rewording asked before costs what it
    costs without the verifier. Keys are 16-byte digests, so the texts
    themselves are not kept.
    """

    @staticmethod
    def key(query: str, cached: str, both_orders: bool = False) -> bytes:
        q = query.encode("utf-8", "surrogatepass")
        # (a, bc) and (ab, c) differ; so do a pair's one-order and both-orders scores.
        h = hashlib.blake2b(len(q).to_bytes(8, "little"), digest_size=16, person=b"both" if both_orders else b"")
        h.update(q)
        h.update(cached.encode("utf-8", "surrogatepass"))
        return h.digest()


class CrossEncoderVerifier:
    """Scores (query, cached query) pairs; thread-safe (one ORT session, tokenizer copies per thread)."""

    def __init__(self, session, tokenizer_json: str, card: dict, *, memo_size: int = MEMO_PAIRS):
        self._session = session
        self.memo = PairMemo(memo_size)
        self._tokenizer_json = tokenizer_json
        self._local = threading.local()
        self.card = card
        self.max_len = int(card.get("max_len", 96))
        self.info = {"model": "cross-encoder", **{k: card[k] for k in ("seed", "train_pairs") if k in card}}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_DIR, *, threads: int | None = None,
             spin_between_runs: bool = False) -> CrossEncoderVerifier:
        """The model in ``path``, on ``threads`` intra-op threads (default: the cores this process may use).

        ``spin_between_runs=False``: the threads spin inside a run but stop when
        it returns (ORT's ``session.force_spinning_stop``), as the embedder's do
        (``gpu_embed`` ``onnx_spin_between_runs``); otherwise each session's
        idle threads hold the cores the other's next run needs. Measured with
        ``evaluation/bench/bench_verifier_threads.py`` on 2 AVX2 cores, same
        run: a first-seen rewording's lookup 15.2 -> 10.1 ms p50, one model run
        8.4 -> 5.1 ms. Scores are the same for any thread count (600
        calibration pairs, max difference 0.0).
        """
        path = Path(path)
        try:
            import onnxruntime as ort

            card = json.loads((path / "card.json").read_text()) if (path / "card.json").exists() else {}
            tokenizer_json = (path / "tokenizer.json").read_text(encoding="utf-8")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or cpu_count()
            opts.inter_op_num_threads = 1
            if not spin_between_runs:  # spin inside a run, stop when it returns
                opts.add_session_config_entry("session.force_spinning_stop", "1")
            session = ort.InferenceSession(str(path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # OSError, bad JSON, and onnxruntime's own types for a bad model file
            raise ConfigError(f"cannot load cross-encoder verifier {path}: {exc}") from exc
        return cls(session, tokenizer_json, card)

    def _tokenizer(self):
        tok = getattr(self._local, "tok", None)
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer_json)
            tok.enable_truncation(max_length=self.max_len, strategy="longest_first")
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            self._local.tok = tok
        return tok

    def scores(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """P(right) for each ``(query, cached query)`` pair, in one batch."""
        if not pairs:
            return np.zeros(0)
        # The model was trained on (cached, new): keep that order.
        enc = self._tokenizer().encode_batch([(c[:MAX_CHARS], q[:MAX_CHARS]) for q, c in pairs])
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        logits = self._session.run(["logits"], feeds)[0].reshape(-1).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logits))

    def _combine(self, p: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """The card's ``combiner``: logistic regression on (logit p, cosine); ``p`` alone without one."""
        c = self.card.get("combiner")
        if not c:
            return p
        z = c["bias"] + c["w_logit"] * _logit(p) + c["w_cosine"] * np.asarray(cosines, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def probabilities_of(self, triples: list[tuple[str, str, float]], *, both_orders: bool = False) -> np.ndarray:
        """P(right) for each ``(query, cached query, cosine)``: serving, calibration and evaluation alike.

        Each pair is scored in a run of its own. The int8 model quantises its
        activations dynamically, with one scale per run, so a pair's score
        depends on the pairs it shares a run with: measured on 256 held-out
        pairs, by up to 0.12 (same length, no padding) to 0.46 (batches of 64)
        from its score alone. Serving scores one pair at a time, so
        calibration must too, or its cut-off certifies other numbers.

        ``both_orders`` (the policy's ``verifier.both_orders``): the run holds
        the pair in both orders, and the score is the mean of their logits;
        still a function of the two texts alone.
        """
        if not triples:
            return np.zeros(0)
        raw = np.empty(len(triples))
        for i, (q, c, _) in enumerate(triples):
            key = PairMemo.key(q, c, both_orders)
            score = self.memo.get(key)
            if score is None:
                # A long pair is read as its changed spans (semcache.verifier.focus), not its shared
                # head; a word misspelt on one side as the other side spells it (semcache.verifier.typos).
                fq, fc = focus(q, c)
                fq, fc = fold(fq[:MAX_CHARS], fc[:MAX_CHARS])
                score = self._both_orders(fq, fc) if both_orders else float(self.scores([(fq, fc)])[0])
                self.memo.put(key, score)
            raw[i] = score
        return self._combine(raw, np.array([s for _, _, s in triples]))

    def _both_orders(self, query: str, cached: str) -> float:
        """P from the mean logit of ``(query, cached)`` and ``(cached, query)``, read in one run."""
        return 1.0 / (1.0 + np.exp(-self.both_orders_logit(query, cached)))

    def both_orders_logit(self, query: str, cached: str) -> float:
        """The mean of the model's logits for ``(query, cached)`` and ``(cached, query)``, read in one
        run, before the combiner (also a distilled student's target: ``train_cross_encoder --teacher``)."""
        return float(_logit(self.scores([(query, cached), (cached, query)])).mean())

    def scores_alone(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The model's P for each ``(query, cached query)`` pair, each in a run of its own (as served).

        Not memoised: training and evaluation call this to measure the model.
        """
        return np.array([self.scores([pair])[0] for pair in pairs], dtype=np.float64)

    def probabilities(self, query: str, cached: list[tuple[str, float]], *, both_orders: bool = False) -> np.ndarray:
        """Same interface as the tree verifier: ``(cached query, cosine)`` candidates of ``query``."""
        return self.probabilities_of([(query, c, s) for c, s in cached], both_orders=both_orders)

    def probability(self, query: str, cached_query: str, cosine: float, *, both_orders: bool = False) -> float:
        return float(self.probabilities_of([(query, cached_query, cosine)], both_orders=both_orders)[0])

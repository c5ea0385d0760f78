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

Scores are memoised per pair and order (:class:`PairMemo`): a pair is always
scored alone, so its score is a pure function of the two texts, and a rewording
asked again costs a dict lookup instead of a model run.

Both orders (``verifier.both_orders``) with a ``one_order_margin`` is a
cascade: the served score is the two orders' mean held within the margin of the
first order's (:func:`held_within`), so the second order is read only where the
first lands near a cut-off (:meth:`CrossEncoderVerifier.judge`).
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
"""Readings (a pair in one order) whose logits are remembered (~10 MB): the popular rewordings of
the popular entries, one or two readings each."""


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]: the log-odds every cut-off and margin is read in."""
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def held_within(both: np.ndarray, first: np.ndarray, margin: float | None) -> np.ndarray:
    """The served log-odds under a ``one_order_margin``: ``both`` (the two orders' combined
    log-odds) held within ``margin`` of ``first`` (the first order's alone).

    At any cut-off ``t`` this serves exactly what the cascade in
    :meth:`CrossEncoderVerifier.judge` serves: the first order alone where it
    is more than ``margin`` from ``t``, both orders otherwise. So calibration
    certifies the cascade by sweeping one score, as for any other.
    """
    if margin is None:
        return both
    return np.clip(both, first - margin, first + margin)


class PairMemo(CountingLRU[bytes, float]):
    """A bounded LRU of the model's logit per ``(query, cached query)`` pair and order; thread-safe.

    Exact, not an approximation: every pair is scored in a run of its own
    (see :meth:`CrossEncoderVerifier.probabilities_of`), so the score depends
    on the two texts only. Measured with ``evaluation/bench/bench_verifier_hit.py``:
    one model run is ~2-3.5 ms of a core here, a memo lookup ~20 us with the
    key's hash, and a semantic hit on a rewording asked before costs what it
    costs without the verifier. Keys are 16-byte digests, so the texts
    themselves are not kept.
    """

    @staticmethod
    def key(query: str, cached: str, second: bool = False) -> bytes:
        """The key of the pair's first order (``(cached, new)``, as trained) or its ``second``."""
        q = query.encode("utf-8", "surrogatepass")
        # (a, bc) and (ab, c) differ; so do a pair's two orders.
        h = hashlib.blake2b(len(q).to_bytes(8, "little"), digest_size=16, person=b"second" if second else b"")
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
        z = c["bias"] + c["w_logit"] * log_odds(p) + c["w_cosine"] * np.asarray(cosines, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def probabilities_of(self, triples: list[tuple[str, str, float]], *, both_orders: bool = False,
                         margin: float | None = None) -> np.ndarray:
        """P(right) for each ``(query, cached query, cosine)``: serving, calibration and evaluation alike.

        Each pair is scored in a run of its own. The int8 model quantises its
        activations dynamically, with one scale per run, so a pair's score
        depends on the pairs it shares a run with: measured on 256 held-out
        pairs, by up to 0.12 (same length, no padding) to 0.46 (batches of 64)
        from its score alone. Serving scores one pair at a time, so
        calibration must too, or its cut-off certifies other numbers.

        ``both_orders`` (the policy's ``verifier.both_orders``): the pair is
        also read the other way round, in a run of its own, and the score is
        the mean of the two logits; still a function of the two texts alone.
        ``margin`` (``verifier.one_order_margin``, both orders only): that score
        held within ``margin`` log-odds of the first order's (:func:`held_within`);
        this reads both orders of every pair, :meth:`judge` only what a decision needs.
        """
        if not triples:
            return np.zeros(0)
        cos = np.array([s for _, _, s in triples], dtype=np.float64)
        readings: dict[tuple[str, str], tuple[str, str]] = {}
        first = np.array([self._order(q, c, readings=readings) for q, c, _ in triples])
        if not both_orders:
            return self._combine(_sigmoid(first), cos)
        second = np.array([self._order(q, c, second=True, readings=readings) for q, c, _ in triples])
        z_first = log_odds(self._combine(_sigmoid(first), cos))
        z_both = log_odds(self._combine(_sigmoid((first + second) / 2), cos))
        return _sigmoid(held_within(z_both, z_first, margin))

    def judge(self, triples: list[tuple[str, str, float]], *, margin: float,
              bars: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """The both-orders cascade: ``(P, read_both)`` per ``(query, cached query, cosine)``.

        The first order is read; the second only where the first's log-odds are
        within ``margin`` of a cut-off in ``bars``. P is then the served score
        (:meth:`probabilities_of` with ``margin``); elsewhere it is the first
        order's, on the same side of every bar as the served score, which moves
        at most ``margin`` from it. Measured on the 1,776 calibration pairs that
        reach the verifier (a model run of one pair ~4.5 ms on 2 AVX2 cores):
        at the shipped cut-off and margin 2, the first order alone decides 60%
        of the should-hit pairs and 92% of the others, and the calibrated
        evidence is that of reading both always (README, "The cross-encoder verifier").
        """
        if not triples:
            return np.zeros(0), np.zeros(0, dtype=bool)
        cos = np.array([s for _, _, s in triples], dtype=np.float64)
        readings: dict[tuple[str, str], tuple[str, str]] = {}
        first = np.array([self._order(q, c, readings=readings) for q, c, _ in triples])
        z_first = log_odds(self._combine(_sigmoid(first), cos))
        cuts = log_odds(np.asarray(bars, dtype=np.float64))
        near = np.array([bool(np.any(np.abs(z - cuts) <= margin)) for z in z_first], dtype=bool)
        z = z_first.copy()
        for i in np.flatnonzero(near):
            q, c, _ = triples[i]
            mean = (first[i] + self._order(q, c, second=True, readings=readings)) / 2
            z_both = log_odds(self._combine(_sigmoid(np.array([mean])), cos[i:i + 1]))
            z[i] = held_within(z_both, z_first[i:i + 1], margin)[0]
        return _sigmoid(z), near

    def _order(self, query: str, cached: str, *, second: bool = False,
               readings: dict[tuple[str, str], tuple[str, str]] | None = None) -> float:
        """The model's logit for the pair read ``(cached, new)`` (as trained) or, ``second``, the
        other way round; memoised. ``readings``: the pairs' model inputs already worked out in
        this call, so a pair read both ways is focused once (~4.6 ms for an 84k-character pair)."""
        key = PairMemo.key(query, cached, second)
        logit = self.memo.get(key)
        if logit is None:
            reading = None if readings is None else readings.get((query, cached))
            if reading is None:
                # A long pair is read as its changed spans (semcache.verifier.focus), not its shared
                # head; a word misspelt on one side as the other side spells it (semcache.verifier.typos).
                fq, fc = focus(query, cached)
                reading = fold(fq[:MAX_CHARS], fc[:MAX_CHARS])
                if readings is not None:
                    readings[(query, cached)] = reading
            fq, fc = reading
            pair = (fc, fq) if second else (fq, fc)
            logit = float(log_odds(self.scores([pair]))[0])
            self.memo.put(key, logit)
        return logit

    def both_orders_logit(self, query: str, cached: str) -> float:
        """The mean of the model's logits for ``(query, cached)`` and ``(cached, query)``, each read
        in a run of its own, before the combiner (also a distilled student's target:
        ``train_cross_encoder --teacher``). Not memoised, and the texts are read as given."""
        return float(log_odds(self.scores_alone([(query, cached), (cached, query)])).mean())

    def scores_alone(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The model's P for each ``(query, cached query)`` pair, each in a run of its own (as served).

        Not memoised: training and evaluation call this to measure the model.
        """
        return np.array([self.scores([pair])[0] for pair in pairs], dtype=np.float64)

    def probabilities(self, query: str, cached: list[tuple[str, float]], *, both_orders: bool = False,
                      margin: float | None = None) -> np.ndarray:
        """Same interface as the tree verifier: ``(cached query, cosine)`` candidates of ``query``."""
        return self.probabilities_of([(query, c, s) for c, s in cached], both_orders=both_orders, margin=margin)

    def probability(self, query: str, cached_query: str, cosine: float, *, both_orders: bool = False,
                    margin: float | None = None) -> float:
        return float(self.probabilities_of([(query, cached_query, cosine)], both_orders=both_orders,
                                           margin=margin)[0])

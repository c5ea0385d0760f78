"""Cheap pair features for the hit verifier.

Everything here is computed from the two query texts and the cosine
similarity of their embeddings (already at hand after the index search), plus
an optional :class:`WordVectors` table for the similarity of the words that
differ. Per text, the tokenisation is cached, so a candidate seen again costs
only the pairwise part.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from semcache.decide import guards
from semcache.textcache import per_text

FEATURES = (
    "cosine", "word_jaccard", "stem_jaccard", "idf_overlap", "idf_diff_sum", "idf_diff_max",
    "diff_words_min", "diff_words_max", "bigram_jaccard", "order_agreement", "trigram_jaccard",
    "len_ratio", "len_max", "numbers_differ", "negation_differ", "entities_differ",
    "identifiers_differ", "wh_differ", "diff_vec_cos", "align_min", "align_mean", "self_refs", "context_refs",
)
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_WH = frozenset({"what", "why", "how", "when", "where", "who", "which", "whom", "whose", "can", "should",
                 "is", "are", "do", "does", "will", "would", "could"})
# Words that tie a question to context the cache cannot see: the asker ("my code",
# "could I be pregnant") or something shown alongside ("this circuit", "the
# following program"). On QQP, identical-looking questions with these are often
# labelled different, and a cached answer to them is only right for the same context.
_SELF = frozenset({"i", "me", "my", "mine", "myself", "im", "ive", "id", "ill", "we", "us", "our", "ours"})
_CONTEXT = frozenset({"this", "these", "following", "above", "below", "attached", "here", "such", "given", "said"})
IDF_BUCKETS = 1 << 16
DEFAULT_IDF = 8.0


def _bucket(word: str) -> int:
    return zlib.crc32(word.encode()) % IDF_BUCKETS  # stable across processes, unlike hash()


_stem = per_text(guards._stem, chars=400_000, largest=64)  # ~65k words, as before; a longer "word" is read each time


@dataclass(frozen=True, slots=True)
class TextInfo:
    words: tuple[str, ...]
    word_set: frozenset[str]
    stems: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    trigrams: frozenset[str]
    buckets: dict[str, int]
    wh: frozenset[str]
    self_refs: int
    context_refs: int


@per_text
def text_info(text: str) -> TextInfo:
    words = tuple(_TOKEN_RE.findall(text.lower().replace("'", "")))
    squashed = " ".join(words)
    return TextInfo(
        words=words,
        word_set=frozenset(words),
        stems=frozenset(map(_stem, words)),
        bigrams=frozenset(zip(words, words[1:])),
        trigrams=frozenset(squashed[i:i + 3] for i in range(max(0, len(squashed) - 2))),
        buckets={w: _bucket(w) for w in set(words)},
        wh=frozenset(w for w in words[:3] if w in _WH),
        self_refs=sum(w in _SELF for w in words),
        context_refs=sum(w in _CONTEXT for w in words),
    )


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _order_agreement(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Fraction of pairs of shared words that appear in the same order in both texts."""
    pos_b = {}
    for i, w in enumerate(b):
        pos_b.setdefault(w, i)
    seq, seen = [], set()
    for w in a:
        if w in pos_b and w not in seen:
            seen.add(w)
            seq.append(pos_b[w])
    n = len(seq)
    if n < 2:
        return 1.0
    pos = np.array(seq)
    agree = np.count_nonzero(np.triu(pos[:, None] < pos[None, :], 1))
    return agree / (n * (n - 1) / 2)


class WordVectors:
    """Static word vectors (unit rows) looked up by word; unknown words are skipped."""

    def __init__(self, vocab: dict[str, int], vectors: np.ndarray):
        self.vocab = vocab
        self.vectors = vectors

    def of(self, words) -> np.ndarray:
        rows = [self.vocab[w] for w in words if w in self.vocab]
        return self.vectors[rows] if rows else np.zeros((0, self.vectors.shape[1]), np.float32)


def pair_features(a: str, b: str, cosine: float, idf: np.ndarray | None,
                  words: WordVectors | None = None) -> list[float]:
    """The feature row (in :data:`FEATURES` order) for queries ``a`` and ``b``."""
    ia, ib = text_info(a), text_info(b)
    only_a, only_b = ia.word_set - ib.word_set, ib.word_set - ia.word_set

    def weight(info: TextInfo, w: str) -> float:
        return float(idf[info.buckets[w]]) if idf is not None else DEFAULT_IDF

    shared = sum(weight(ia, w) for w in ia.word_set & ib.word_set)
    diff_a = [weight(ia, w) for w in only_a]
    diff_b = [weight(ib, w) for w in only_b]
    diff_sum = sum(diff_a) + sum(diff_b)
    total = shared + diff_sum
    la, lb = len(ia.words), len(ib.words)
    diff_cos, align_min, align_mean = 1.0, 1.0, 1.0
    if words is not None:
        va, vb = words.of(sorted(only_a)), words.of(sorted(only_b))
        if len(va) and len(vb):
            sa, sb = va.sum(0), vb.sum(0)
            diff_cos = float(sa @ sb / (np.linalg.norm(sa) * np.linalg.norm(sb) + 1e-9))
            sim = va @ vb.T
            best = np.concatenate([sim.max(1), sim.max(0)])
            align_min, align_mean = float(best.min()), float(best.mean())
        elif len(va) or len(vb):
            diff_cos, align_min, align_mean = 0.0, 0.0, 0.0
    return [
        cosine,
        _jaccard(ia.word_set, ib.word_set),
        _jaccard(ia.stems, ib.stems),
        shared / total if total else 1.0,
        diff_sum,
        max(diff_a + diff_b, default=0.0),
        float(min(len(only_a), len(only_b))),
        float(max(len(only_a), len(only_b))),
        _jaccard(ia.bigrams, ib.bigrams),
        _order_agreement(ia.words, ib.words),
        _jaccard(ia.trigrams, ib.trigrams),
        min(la, lb) / max(la, lb) if max(la, lb) else 1.0,
        math.log1p(max(la, lb)),
        float(guards.numbers_in(a) != guards.numbers_in(b)),
        float(guards.negation_conflict(a, b) is not None),
        float(guards.entities_in(a) != guards.entities_in(b)),
        float(guards.identifiers_in(a) != guards.identifiers_in(b)),
        float(ia.wh != ib.wh),
        diff_cos,
        align_min,
        align_mean,
        float(max(ia.self_refs, ib.self_refs)),
        float(max(ia.context_refs, ib.context_refs)),
    ]


def fit_idf(texts) -> np.ndarray:
    """Smoothed inverse document frequencies over hashed word buckets."""
    df = np.zeros(IDF_BUCKETS, np.float64)
    n = 0
    for text in texts:
        n += 1
        for bucket in set(text_info(text).buckets.values()):
            df[bucket] += 1
    return np.log((n + 1) / (df + 1)).astype(np.float32) + 1.0

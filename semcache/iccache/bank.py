"""The example bank: past large-model answers, searchable per scope and category.

An example is a (question, answer) pair the *large* model produced, kept with
the statistics that say how much it helps a small model: how often it was
used, the scores of the small answers it went into (shadow agreement or
explicit feedback), and its size in tokens (what it costs to spend).

Examples live in a :class:`~semcache.index.PartitionedIndex` whose partitions
are ``scope x category``: a scope is a tenant (and namespace) or a namespace
the policy declares shared, so one tenant's answers can never be shown to
another tenant's request, by construction rather than by a filter.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from semcache.entries.entry import CacheEntry
from semcache.index import HNSWParams, PartitionedIndex

TokenCounter = Callable[[str], int]


def approx_tokens(text: str) -> int:
    """Rough token count (about 4 characters a token for English BPE vocabularies)."""
    return max(1, math.ceil(len(text) / 4))


def scope_of(tenant: str, namespace: str | None = None, shared_namespace: str | None = None) -> str:
    """The bank scope a request may draw examples from.

    A category's ``shared_namespace`` replaces the tenant on purpose (answers
    that are the same for everyone); otherwise tenant and namespace both count.
    """
    if shared_namespace:
        return f"shared:{shared_namespace}"
    return f"tenant:{tenant}/{namespace or ''}"


def _partition(scope: str, category: str) -> str:
    return f"{scope}\x1f{category}"


@dataclass(slots=True)
class Example:
    """One in-context example and its utility statistics."""

    id: str
    scope: str
    category: str
    question: str
    answer: str
    vector: np.ndarray = field(repr=False)
    tokens: int
    created_at: float = 0.0
    validated: bool = False
    uses: int = 0
    """Times it was put into a small model's prompt."""
    scored: int = 0
    """Uses whose small answer got a quality score (shadow check or feedback)."""
    score_sum: float = 0.0
    accepted: int = 0
    """Scored uses whose small answer was accepted (score >= the bank's accept level)."""
    feedback_positive: int = 0
    feedback_negative: int = 0
    synced_scored: int = 0
    """``scored`` / ``score_sum`` as last read from or written to the store: what is above
    them was learned here and not yet persisted (see :meth:`ExampleBank.merge_into_entry`)."""
    synced_score_sum: float = 0.0

    @property
    def size_bytes(self) -> int:
        return len(self.question.encode()) + len(self.answer.encode()) + self.vector.nbytes

    def utility(self, prior: float = 2.0) -> float:
        """Mean score of the answers it helped, shrunk towards 0.5 by ``prior`` pseudo-uses."""
        return (self.score_sum + 0.5 * prior) / (self.scored + prior)


def entry_answer(entry: CacheEntry) -> str | None:
    """The assistant text of a cached chat or completions response, if any."""
    return response_text(entry.response)


def response_text(response: dict) -> str | None:
    """The first choice's text of an OpenAI chat or completions response, if any."""
    choices = response.get("choices") or []
    if not choices:
        return None
    first = choices[0]
    if isinstance(first.get("message"), dict):
        content = first["message"].get("content")
    else:
        content = first.get("text")
    return content if isinstance(content, str) and content.strip() else None


class ExampleBank:
    """Examples by ``scope x category`` over a partitioned HNSW/flat index."""

    def __init__(self, dim: int, *, hnsw: HNSWParams | None = None, promote_at: int = 2048,
                 count_tokens: TokenCounter = approx_tokens, accept_level: float = 0.5):
        self.index = PartitionedIndex(dim, hnsw=hnsw, promote_at=promote_at)
        self.count_tokens = count_tokens
        self.accept_level = accept_level
        self._examples: dict[str, Example] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._examples)

    def __contains__(self, id: object) -> bool:
        return id in self._examples

    def __iter__(self) -> Iterator[Example]:
        return iter(list(self._examples.values()))

    def get(self, id: str) -> Example | None:
        return self._examples.get(id)

    # ------------------------------------------------------------ filling
    def add(self, example: Example) -> None:
        self.index.add(_partition(example.scope, example.category), example.id, example.vector)
        self._examples[example.id] = example

    def add_many(self, examples: Iterable[Example]) -> None:
        """Bulk insert (one index insert per partition), for rebuilds and experiments."""
        groups: dict[str, list[Example]] = {}
        for ex in examples:
            groups.setdefault(_partition(ex.scope, ex.category), []).append(ex)
        for partition, group in groups.items():
            fresh = [ex for ex in group if ex.id not in self._examples]
            for ex in group:
                if ex.id in self._examples:
                    self.add(ex)
            if fresh:
                self.index.add_many(partition, [e.id for e in fresh], np.stack([e.vector for e in fresh]))
                self._examples.update((e.id, e) for e in fresh)

    def add_entry(self, entry: CacheEntry, *, large_models: set[str],
                  shared_namespace: str | None = None) -> Example | None:
        """Admit a cache entry as an example if the large model produced it.

        Answers of any other model (the small one included: its answers are
        what we are trying to improve) and answers users flagged wrong more
        often than right are refused; returns the example or ``None``.
        """
        if entry.model not in large_models:
            return None
        if entry.feedback.negative > entry.feedback.positive:
            return None
        answer = entry_answer(entry)
        if answer is None:
            return None
        tokens = self.count_tokens(entry.query)
        tokens += entry.completion_tokens or self.count_tokens(answer)
        scored = entry.utility_uses
        example = Example(
            id=entry.id, scope=scope_of(entry.tenant, entry.namespace, shared_namespace),
            category=entry.category, question=entry.query, answer=answer,
            vector=np.asarray(entry.vector, dtype=np.float32), tokens=tokens,
            created_at=entry.created_at,
            validated=entry.feedback.positive > 0 or entry.validated_at is not None,
            scored=scored, score_sum=entry.utility * scored,
            accepted=round(entry.utility * scored),
            synced_scored=scored, synced_score_sum=entry.utility * scored,
            feedback_positive=entry.feedback.positive, feedback_negative=entry.feedback.negative,
        )
        with self._lock:
            known = self._examples.get(entry.id)
            if known is not None and known.answer == answer:
                # The store's copy changed (another replica merged its utility): keep what was
                # learned here and not yet written, on top of the stored counts.
                example.uses = known.uses
                example.scored += known.scored - known.synced_scored
                example.score_sum += known.score_sum - known.synced_score_sum
                example.accepted = max(example.accepted, known.accepted)
        self.add(example)
        return example

    def remove(self, id: str) -> bool:
        with self._lock:
            if self._examples.pop(id, None) is None:
                return False
        self.index.delete(id)
        return True

    # ------------------------------------------------------------ search
    def candidates(self, scope: str, category: str, vector: np.ndarray, k: int) -> list[tuple[Example, float]]:
        """Stage 1 of selection: the ``k`` nearest examples of one scope and category."""
        hits = self.index.search(_partition(scope, category), np.asarray(vector, dtype=np.float32), k)
        out = []
        for id, similarity in hits:
            example = self._examples.get(id)
            if example is not None:
                out.append((example, float(similarity)))
        return out

    # ------------------------------------------------------------ utility
    def record_use(self, ids: Iterable[str]) -> None:
        with self._lock:
            for id in ids:
                if (ex := self._examples.get(id)) is not None:
                    ex.uses += 1

    def record_outcome(self, ids: Iterable[str], score: float) -> None:
        """Credit the examples behind one small answer with its quality score in [0, 1]."""
        score = min(1.0, max(0.0, float(score)))
        with self._lock:
            for id in ids:
                if (ex := self._examples.get(id)) is not None:
                    ex.scored += 1
                    ex.score_sum += score
                    ex.accepted += score >= self.accept_level

    def record_feedback(self, ids: Iterable[str], positive: bool) -> None:
        """Explicit user feedback on a small answer: counted, and scored as 1 or 0."""
        ids = list(ids)
        with self._lock:
            for id in ids:
                if (ex := self._examples.get(id)) is not None:
                    if positive:
                        ex.feedback_positive += 1
                    else:
                        ex.feedback_negative += 1
        self.record_outcome(ids, 1.0 if positive else 0.0)

    def unsynced(self) -> list[str]:
        """Ids of examples with utility learned here and not yet written to the store."""
        with self._lock:
            return [ex.id for ex in self._examples.values() if ex.scored != ex.synced_scored]

    def merge_into_entry(self, entry: CacheEntry) -> CacheEntry:
        """``entry`` (as the store has it now) plus what this bank learned since its last sync.

        Utility is merged as counts, never overwritten: another proxy replica or
        the replay job may have added uses to the same entry meanwhile, and
        those must survive. Call :meth:`mark_synced` once the result is stored.
        """
        with self._lock:
            ex = self._examples.get(entry.id)
            if ex is None:
                return entry
            uses = entry.utility_uses + (ex.scored - ex.synced_scored)
            total = entry.utility * entry.utility_uses + (ex.score_sum - ex.synced_score_sum)
        if uses <= 0:
            return entry.model_copy(update={"utility": 0.0, "utility_uses": 0})
        return entry.model_copy(update={"utility": min(1.0, max(0.0, total / uses)), "utility_uses": uses})

    def restart_utility(self, id: str) -> None:
        """Forget an example's utility here and as synced (its answer was replaced, the store reset)."""
        with self._lock:
            if (ex := self._examples.get(id)) is not None:
                ex.uses = ex.scored = ex.accepted = ex.synced_scored = 0
                ex.score_sum = ex.synced_score_sum = 0.0

    def mark_synced(self, before: CacheEntry, written: CacheEntry) -> None:
        """``written`` (from :meth:`merge_into_entry` on ``before``) is now in the store.

        The bank adopts what others added (``before`` minus the last sync) and
        keeps anything learned while the write was under way as unsynced.
        """
        with self._lock:
            ex = self._examples.get(written.id)
            if ex is None:
                return
            others = before.utility_uses - ex.synced_scored
            others_sum = before.utility * before.utility_uses - ex.synced_score_sum
            ex.scored = max(0, ex.scored + others)
            ex.score_sum = max(0.0, ex.score_sum + others_sum)
            ex.synced_scored = written.utility_uses
            ex.synced_score_sum = written.utility * written.utility_uses

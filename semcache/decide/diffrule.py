"""The diff rule: judge a candidate by what differs between the cached query and the new one.

Why
---
The embedding sees a long prompt through a keyhole (the first 64 and the last
~190 tokens of 256) and averages what it sees, so two prompts that share a
long body (a document, a code file, RAG passages, an agent transcript) embed
alike whatever their short decisive part asks: "<400 words> Question: how many
times does the word cache appear?" and "<the same 400 words> Question:
translate the document into French." scored 0.9155. And a word the tokenizer
cannot read (over 100 characters: DNA, base64, hashes) makes two different
prompts score 1.0000. A similarity alone is therefore never trusted for them.

The rule (run after the threshold and the guards, before the verifier)
-----------------------------------------------------------------------
1. Texts equal after normalisation (NFKC, case, whitespace) pass.
2. **Atoms** (:mod:`semcache.decide.atoms`: URLs, paths, UUIDs, hashes, base64 and
   other long tokens, long identifiers, numbers in any form) must agree as
   multisets; one differing atom is a miss. So is a name that is the other
   text's with a letter or two in front (``pnpm`` / ``npm``: :mod:`semcache.decide.names`).
3. The texts are diffed at token level (words and single punctuation marks).
   When they share fewer than :data:`SHARED_BODY` tokens and the similarity is
   below :data:`SIM_ONE`, the embedding saw the difference in proportion (a
   typical short paraphrase): pass, as before this rule.
4. Otherwise a shared body dominates the vector, or the embedder could not see
   the difference at all, so only the changed part can decide. The pair is
   served only if the change is small (at most :data:`MAX_CHANGED` tokens, at
   most :data:`MAX_CHANGED_SHARE` of the longer text, in at most
   :data:`MAX_SPANS` spans) and every changed span, with :data:`CONTEXT`
   tokens on each side, passes the category's guards and, embedded on its own,
   reaches the category's threshold against its counterpart (and stays
   below :data:`SIM_ONE`: a change the embedder cannot see at all, e.g. one
   unknown token for another, is not judged by it). A larger change,
   or texts too long or too different to diff within the bounds below, is
   **exact-only**: a miss.

Bounds: texts over :data:`MAX_COMPARE_CHARS` characters are exact-only; the
common prefix and suffix are trimmed first (linear), and the sequence matcher
only sees the differing middle, at most :data:`MAX_MIDDLE` tokens a side.
Measured costs are in ``evaluation/RESULTS.md`` (``evaluation/bench/bench_diffrule.py``).

:func:`text_diff` exposes the changed spans (:class:`TextDiff`) for other
judges, e.g. the verifier.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

import numpy as np

from semcache.decide import guards
from semcache.decide.atoms import atom_difference
from semcache.decide.guards import PASSED, GuardVerdict
from semcache.decide.names import front_extended

SHARED_BODY = 32
"""Pairs sharing fewer tokens than this are short paraphrases: the embedding judges them."""
SIM_ONE = 0.9999
"""A similarity at or above this between unequal texts means the embedder could not see the difference."""
MAX_CHANGED = 32
"""At most this many tokens may differ (the larger side of each change, summed)."""
MAX_CHANGED_SHARE = 0.25
"""... and at most this share of the longer text."""
MAX_SPANS = 4
"""At most this many separate changed spans."""
CONTEXT = 6
"""Tokens of unchanged context kept on each side of a changed span."""
MAX_COMPARE_CHARS = 100_000
"""Longer texts are served only as exact repeats."""
MAX_MIDDLE = 2_048
"""The differing middle (after trimming the common prefix and suffix) the matcher may see, per side."""
THREAD_CHARS = 16_000
"""Diffs of texts longer than this run in a worker thread, off the event loop."""

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Span:
    """One changed region, with :data:`CONTEXT` tokens of shared text on each side."""

    query: str
    cached: str
    changed: int
    """Tokens changed here (the larger side)."""


@dataclass(frozen=True, slots=True)
class TextDiff:
    """What differs between a new query and a cached one, at token level."""

    query_tokens: int
    cached_tokens: int
    shared: int
    """Tokens the two texts have in common (matched by the diff)."""
    changed: int
    """Tokens that differ, the larger side of each change summed."""
    spans: tuple[Span, ...]
    bounded: bool = True
    """False when the texts were too long or too different to diff within the bounds (no spans then)."""

    @property
    def equal(self) -> bool:
        return self.bounded and self.changed == 0


@lru_cache(maxsize=16)  # a lookup's query meets up to `candidates` cached texts; 8k tokens ~ 1 MB here
def _tokens(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tokens as written, normalised tokens) of ``text``."""
    raw = _TOKEN_RE.findall(unicodedata.normalize("NFKC", text))
    return tuple(raw), tuple(t.casefold() for t in raw)


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def text_diff(query: str, cached: str) -> TextDiff:
    """Token-level diff of two texts, bounded in time and memory (see the module docstring)."""
    if len(query) > MAX_COMPARE_CHARS or len(cached) > MAX_COMPARE_CHARS:
        return TextDiff(0, 0, 0, 0, (), bounded=query == cached)
    q_raw, q = _tokens(query)
    c_raw, c = _tokens(cached)
    head = _common_prefix(q, c)
    tail = _common_prefix(q[head:][::-1], c[head:][::-1])
    q_mid, c_mid = q[head:len(q) - tail], c[head:len(c) - tail]
    if not q_mid and not c_mid:
        return TextDiff(len(q), len(c), len(q), 0, ())
    if len(q_mid) > MAX_MIDDLE or len(c_mid) > MAX_MIDDLE:
        return TextDiff(len(q), len(c), head + tail, max(len(q_mid), len(c_mid)), (), bounded=False)
    ops = [op for op in SequenceMatcher(None, c_mid, q_mid).get_opcodes() if op[0] != "equal"]
    changed = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in ops)
    shared = len(c) - sum(i2 - i1 for _, i1, i2, _j1, _j2 in ops)
    # Merge changes whose contexts would overlap; positions are in whole-text tokens.
    merged: list[list[int]] = []
    for _, i1, i2, j1, j2 in ops:
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        if merged and i1 - merged[-1][1] <= 2 * CONTEXT:
            merged[-1][1], merged[-1][3] = i2, j2
            merged[-1][4] += max(i2 - i1, j2 - j1)
        else:
            merged.append([i1, i2, j1, j2, max(i2 - i1, j2 - j1)])
    spans = tuple(
        Span(query=" ".join(q_raw[max(0, j1 - CONTEXT):j2 + CONTEXT]),
             cached=" ".join(c_raw[max(0, i1 - CONTEXT):i2 + CONTEXT]), changed=n)
        for i1, i2, j1, j2, n in merged
    )
    return TextDiff(len(q), len(c), shared, changed, spans)


def _too_large(diff: TextDiff) -> str | None:
    if not diff.bounded:
        return "texts too long or too different to compare"
    longest = max(diff.query_tokens, diff.cached_tokens, 1)
    if diff.changed > MAX_CHANGED or diff.changed > MAX_CHANGED_SHARE * longest:
        return f"{diff.changed} of {longest} tokens differ"
    if len(diff.spans) > MAX_SPANS:
        return f"{len(diff.spans)} separate changes"
    return None


Embed = Callable[[Sequence[str]], Any]
"""An embedder's ``embed``: async, texts -> unit vectors."""


def _decide(policy: Any, query: str, cached: str, similarity: float, rules: Any) -> GuardVerdict | TextDiff:
    """Everything but the span embedding: a verdict, or the diff whose spans are still to be judged.

    ``rules``: the guards to run (the policy's, or those with one lifted for the verifier)."""
    if rules.diff and query != cached and max(len(query), len(cached)) > MAX_COMPARE_CHARS:
        return GuardVerdict(False, "diff", "exact-only: texts too long to compare")
    verdict = guards.check(rules, query, cached)
    if not verdict.passed or not rules.diff or query == cached:
        return verdict
    differing = atom_difference(query, cached)
    if differing:
        return GuardVerdict(False, "atoms", f"{differing[:4]}")
    renamed = front_extended(query, cached)
    if renamed:
        return GuardVerdict(False, "atoms", f"another name: {renamed}")
    if similarity < SIM_ONE and min(len(_tokens(query)[1]), len(_tokens(cached)[1])) < SHARED_BODY:
        return PASSED  # a short text cannot share a long body: the embedding judged the whole pair
    diff = text_diff(query, cached)
    if diff.equal or (diff.bounded and diff.shared < SHARED_BODY and similarity < SIM_ONE):
        return PASSED
    why = _too_large(diff)
    if why is not None:
        return GuardVerdict(False, "diff", f"exact-only: {why}")
    for span in diff.spans:
        verdict = guards.check(rules, span.query, span.cached)
        if not verdict.passed:
            return GuardVerdict(False, verdict.guard, f"{verdict.detail} in a changed span")
    return diff


async def check(policy: Any, query: str, cached: str, similarity: float, embed: Embed,
                overrule: Collection[str] = ()) -> GuardVerdict:
    """The guards on the whole texts, then (with ``policy.guards.diff``) the diff rule above.

    Long texts are judged in a worker thread: the guards and the diff of two
    8k-token prompts take tens of milliseconds (``evaluation/bench/bench_diffrule.py``).

    ``overrule``: guards the verifier may overrule (``policy.verifier.overrule``). When the
    first guard to refuse is one and the refusal may be overruled (:func:`guards.overrulable`:
    never an antonym pair), the pair is judged again with that guard alone lifted; if
    everything else passes, the verdict passes with ``overruled`` set, and only the verifier
    (at that guard's probability) may still serve it.
    """
    verdict = await _check(policy, query, cached, similarity, embed, policy.guards)
    if verdict.passed or verdict.guard not in overrule or not guards.overrulable(verdict, query, cached):
        return verdict
    lifted = policy.guards.model_copy(update={verdict.guard: False})
    again = await _check(policy, query, cached, similarity, embed, lifted)
    if not again.passed:
        return again
    return GuardVerdict(True, verdict.guard, verdict.detail, overruled=True)


async def _check(policy: Any, query: str, cached: str, similarity: float, embed: Embed, rules: Any) -> GuardVerdict:
    if len(query) + len(cached) > THREAD_CHARS:
        decided = await asyncio.to_thread(_decide, policy, query, cached, similarity, rules)
    else:
        decided = _decide(policy, query, cached, similarity, rules)
    if isinstance(decided, GuardVerdict):
        return decided
    spans = decided.spans
    vectors = np.asarray(await embed([s.query for s in spans] + [s.cached for s in spans]))
    for i in range(len(spans)):
        sim = float(vectors[i] @ vectors[len(spans) + i])
        if sim >= SIM_ONE:  # the tokens differ, the vectors do not: the embedder cannot see this change
            return GuardVerdict(False, "diff", f"changed span invisible to the embedder (similarity {sim:.4f})")
        if sim < policy.threshold:
            return GuardVerdict(False, "diff", f"changed span similarity {sim:.3f} < {policy.threshold:.2f}")
    return PASSED

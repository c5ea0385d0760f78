"""The example bank and the cache store: rebuild the bank from entries, write outcomes back.

Examples *are* cache entries (the large model's answers), so the store is
their only durable home. :func:`load_bank` admits the entries in scope;
:func:`save_bank` writes back what a replay run (or serving) changed on them:

* utility statistics (``utility`` / ``utility_uses``), merged as counts by
  :meth:`ExampleBank.merge_into_entry` (never overwriting uses another proxy
  replica or a replay run added meanwhile);
* a *validated* example stamps ``validated_at`` on its entry;
* a *regenerated* example's new answer replaces the entry's response text,
  drops the stored stream chunks (a streamed hit is then rebuilt from the new
  response) and resets utility and feedback, which judged the old answer;
* an *evicted* example's entry is deleted.

Entries whose persisted fields would not change are not written at all, so
they stay byte-identical in the store.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

from semcache.clock import Clock, SystemClock
from semcache.entries.entry import CacheEntry, Feedback
from semcache.iccache.bank import ExampleBank
from semcache.iccache.config import ICCacheConfig
from semcache.iccache.replay import ReplayReport
from semcache.config.policy import PolicySet
from semcache.protocols import Store


def _in_scope(entry: CacheEntry, config: ICCacheConfig, policies: PolicySet, *, dim: int,
              embedder: str | None, now: float) -> bool:
    policy = policies.get(entry.category)
    # The cache drops entries of unknown or superseded policies on start; so do we.
    if policy is None or policy.version != entry.policy_version:
        return False
    if entry.expired(now) or not config.selection_for(entry.category).enabled:
        return False
    if embedder is not None and entry.embedder != embedder:
        return False  # vectors of another embedding model are not comparable
    return entry.vector.shape == (dim,)


async def load_bank(store: Store, config: ICCacheConfig, policies: PolicySet, *, dim: int,
                    embedder: str | None = None, clock: Clock | None = None,
                    bank: ExampleBank | None = None) -> ExampleBank:
    """Scan ``store`` and admit the large model's live entries as examples.

    In scope: the category's policy exists at the entry's version, selection
    is enabled for the category, the entry has not expired at ``clock.now()``,
    its vector has ``dim`` dimensions and (if ``embedder`` is given) it was
    embedded by that embedder identity. The category's ``shared_namespace``
    decides the example's scope. Entries stamped ``validated_at`` load as
    validated. Returns ``bank`` (a new one of ``dim`` if not given).
    """
    bank = bank if bank is not None else ExampleBank(dim)
    now = (clock or SystemClock()).now()
    large = {config.model("large").name}
    async for entry in store.scan():
        if not _in_scope(entry, config, policies, dim=dim, embedder=embedder, now=now):
            continue
        policy = policies[entry.category]
        example = bank.add_entry(entry, large_models=large, shared_namespace=policy.shared_namespace)
        if example is not None and entry.validated_at is not None:
            example.validated = True
    return bank


def _with_answer(entry: CacheEntry, answer: str, completion_tokens: int) -> CacheEntry:
    """``entry`` answering ``answer`` instead: response text, usage and token count replaced."""
    response = copy.deepcopy(entry.response)
    first = response["choices"][0]
    if isinstance(first.get("message"), dict):
        first["message"]["content"] = answer
    else:
        first["text"] = answer
    usage = response.get("usage")
    if isinstance(usage, dict):
        usage["completion_tokens"] = completion_tokens
        usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + completion_tokens
    return entry.model_copy(update={"response": response, "chunks": None, "completion_tokens": completion_tokens})


def _stats_changed(before: CacheEntry, after: CacheEntry) -> bool:
    # utility is stored as a mean and rebuilt as sum / n: compare with a tolerance.
    return (before.utility_uses != after.utility_uses
            or not math.isclose(before.utility, after.utility, rel_tol=1e-9, abs_tol=1e-12))


async def save_bank(store: Store, bank: ExampleBank, report: ReplayReport | None = None, *,
                    clock: Clock | None = None,
                    completion_tokens: Mapping[str, int] | None = None) -> dict[str, int]:
    """Write the bank's changes back onto its entries and delete evicted ones.

    ``report`` (from :func:`replay_examples`) names the validated, regenerated
    and evicted examples; without one only utility statistics are written.
    ``completion_tokens`` gives the large model's real completion token count
    of a regenerated answer (the bank's estimate is used otherwise). Returns
    ``{"written": n, "deleted": n, "missing": n}``; ``missing`` counts
    examples whose entry had left the store meanwhile.
    """
    now = (clock or SystemClock()).now()
    validated = set(report.validated) if report else set()
    regenerated = set(report.regenerated) if report else set()
    deleted = await store.delete(report.evicted) if report and report.evicted else 0
    written = missing = 0
    for example in bank:
        def finish(entry: CacheEntry, updated: CacheEntry, example=example) -> CacheEntry | None:
            if example.id in regenerated:
                tokens = (completion_tokens or {}).get(example.id) or bank.count_tokens(example.answer)
                updated = _with_answer(updated, example.answer, tokens)
                return updated.model_copy(update={"validated_at": now, "feedback": Feedback(),
                                                  "utility": 0.0, "utility_uses": 0})
            if example.id in validated:
                return updated.model_copy(update={"validated_at": now})
            return updated if _stats_changed(entry, updated) else None

        before, stored = await _update_merged(store, bank, example.id, finish)
        if before is None:
            missing += 1
            continue
        if stored is None:
            continue
        if example.id in regenerated:
            bank.restart_utility(example.id)  # uses of the old answer say nothing about the new one
        else:
            bank.mark_synced(before, stored)
        written += 1
    return {"written": written, "deleted": deleted, "missing": missing}


async def flush_utilities(store: Store, bank: ExampleBank) -> dict[str, int]:
    """Write utility learned while serving (shadow checks, feedback) onto the examples' entries.

    Only examples with unsynced utility are read and written; each write
    merges counts with what the store holds at that instant (see
    :meth:`ExampleBank.merge_into_entry`), inside :meth:`Store.update`, which
    is atomic (Redis: WATCH/MULTI with retries; SQLite: an IMMEDIATE
    transaction), so replicas flushing the same entry at once lose nothing.
    Returns ``{"written": n, "missing": n}``.
    """
    written = missing = 0
    for id in bank.unsynced():
        before, stored = await _update_merged(store, bank, id, lambda _, merged: merged)
        if before is None or stored is None:
            missing += 1
            continue
        bank.mark_synced(before, stored)
        written += 1
    return {"written": written, "missing": missing}


async def _update_merged(store: Store, bank: ExampleBank, id: str,
                         finish: Callable[[CacheEntry, CacheEntry], CacheEntry | None]
                         ) -> tuple[CacheEntry | None, CacheEntry | None]:
    """:meth:`Store.update` with the bank's utility merged in, then ``finish(entry, merged)``
    (None: write nothing). Returns the entry as the successful attempt read it (None: it
    is gone) and what was written (None: nothing)."""
    seen: list[CacheEntry] = []

    def change(entry: CacheEntry) -> CacheEntry | None:
        seen[:] = [entry]  # an optimistic store may call this more than once: keep the last
        return finish(entry, bank.merge_into_entry(entry))

    stored = await store.update(id, change)
    return (seen[0] if seen else None), stored

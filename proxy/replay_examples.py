"""``semcache replay-examples``: refine the IC-Cache example bank offline, in the large model's idle time.

One run: load the bank from the cache store (:func:`semcache.iccache.load_bank`),
ask the large model each due example's question again at temperature 0
within the token budget, compare old and new answers by the cosine
similarity of their embeddings, let :func:`semcache.iccache.replay_examples`
validate, regenerate and evict, and write the outcome back
(:func:`semcache.iccache.save_bank`) unless ``--dry-run``.

Idle time: before each request the large engines' ``/metrics`` are read; while
more than ``--max-waiting`` requests wait there the run backs off, and it
stops asking at ``--max-seconds``. An engine without ``/metrics`` counts as
idle. A run cut short (time, or an upstream failure) keeps what it finished
and still runs the eviction pass, which needs no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import numpy as np

from proxy.app import build_default_embedder, make_store
from proxy.upstream.engine_load import parse_vllm_metrics
from proxy.upstream.engine_load import metrics_url
from proxy.settings import ProxySettings
from proxy.upstream.pool import UpstreamPool
from semcache import load_policies
from semcache.errors import ConfigError, EmbedderError, RequestError, UpstreamError
from semcache.iccache import (
    Example, ReplayConfig, ReplayReport, load_bank, load_iccache_config, replay_examples, save_bank,
)
from semcache.protocols import Embedder

log = logging.getLogger("semcache.replay_examples")


class ReplayStopped(Exception):
    """The run's time (``--max-seconds``) ran out while the large model was busy or before a request."""


class IdleGate:
    """Waits until every engine of the large model has at most ``max_waiting`` queued requests."""

    def __init__(self, urls: list[str], *, max_waiting: float, deadline: float,
                 client: httpx.AsyncClient, first_backoff_s: float = 0.25, max_backoff_s: float = 5.0):
        self.urls = urls
        self.max_waiting = max_waiting
        self.deadline = deadline
        self.client = client
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.waits = 0

    async def _waiting(self, url: str) -> float:
        try:
            r = await self.client.get(url)
        except httpx.HTTPError as exc:
            log.debug("metrics of %s unreadable (%s): counted as idle", url, exc)
            return 0.0
        if r.status_code != 200:
            return 0.0  # no /metrics: nothing says it is busy
        try:
            return parse_vllm_metrics(r.text).waiting
        except ValueError:
            return 0.0

    async def wait(self) -> None:
        """Return when idle; raise :class:`ReplayStopped` once the deadline has passed."""
        loop = asyncio.get_running_loop()
        backoff = self.first_backoff_s
        while True:
            if loop.time() >= self.deadline:
                raise ReplayStopped("--max-seconds reached")
            waiting = await asyncio.gather(*(self._waiting(u) for u in self.urls))
            if max(waiting, default=0.0) <= self.max_waiting:
                return
            self.waits += 1
            log.info("large model busy (%.0f waiting): backing off %.2fs", max(waiting), backoff)
            await asyncio.sleep(max(0.0, min(backoff, self.deadline - loop.time())))
            backoff = min(backoff * 2, self.max_backoff_s)


class LargeModel:
    """Asks the large model one example's question (one user turn, temperature 0)."""

    def __init__(self, pool: UpstreamPool, model: str, gate: IdleGate, *, max_tokens: int):
        self.pool = pool
        self.model = model
        self.gate = gate
        self.max_tokens = max_tokens
        self.completion_tokens: dict[str, int] = {}
        """Real completion token counts of the answers, by example id (for the stored usage)."""

    async def ask(self, example: Example) -> str:
        await self.gate.wait()
        body = {"model": self.model, "messages": [{"role": "user", "content": example.question}],
                "temperature": 0, "max_tokens": self.max_tokens, "stream": False}
        data = await self.pool.post_json("/chat/completions", body, None)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text, choice = None, {}
        if not isinstance(text, str) or not text.strip():
            raise UpstreamError(f"large model {self.model} answered no text", status_code=502, body=data)
        if choice.get("finish_reason") == "length":
            # A cut-off answer would be judged different and replace a complete one.
            raise UpstreamError(f"large model's answer to example {example.id} was cut off at "
                                f"--max-tokens {self.max_tokens}; raise it", status_code=502)
        usage = data.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens[example.id] = usage["completion_tokens"]
        log.debug("re-asked example %s", example.id)
        return text


@dataclass
class Progress:
    """What the replay did so far, kept outside it so a run cut short still reports its work."""

    keep_agreement: float
    report: ReplayReport = field(default_factory=ReplayReport)
    _asking: tuple[str, int] | None = field(default=None, init=False, repr=False)

    def wrap(self, ask, compare):
        async def ask_(example: Example) -> str:
            answer = await ask(example)
            self._asking = (example.id, example.tokens)  # tokens before a regeneration changes them
            return answer

        async def compare_(old: str, new: str) -> float:
            score = await compare(old, new)
            assert self._asking is not None
            id, tokens = self._asking
            self.report.tokens_spent += tokens
            # Same rule as replay_examples applies right after this returns.
            (self.report.validated if score >= self.keep_agreement else self.report.regenerated).append(id)
            return score

        return ask_, compare_


def embedding_agreement(embedder: Embedder):
    """``compare(old, new)``: cosine similarity of the two answers' (unit) embeddings."""

    async def compare(old: str, new: str) -> float:
        vectors = await embedder.embed([old, new])
        return float(np.dot(vectors[0], vectors[1]))

    return compare


async def _not_asked(*_: Any) -> Any:
    raise RuntimeError("the eviction-only pass asks the large model nothing")


async def _evict_only(bank, config: ReplayConfig) -> list[str]:
    """The eviction pass alone: a zero token budget lets replay_examples ask nothing."""
    report = await replay_examples(bank, _not_asked, _not_asked, config.model_copy(update={"token_budget": 0}))
    return report.evicted


@dataclass
class Outcome:
    """One run's report, whether it finished, and what happened to the store."""

    report: ReplayReport
    examples: int
    stopped: str | None = None
    failed: bool = False
    saved: dict[str, int] | None = None
    busy_waits: int = 0


async def run_replay(settings: ProxySettings, replay: ReplayConfig, *, dry_run: bool = False,
                     max_seconds: float | None = None, max_waiting: float = 0, max_tokens: int = 1024,
                     embedder: Embedder | None = None) -> Outcome:
    """Load, replay and (unless ``dry_run``) save; ``embedder`` replaces the configured one (tests)."""
    if settings.iccache is None:
        raise ConfigError("replay-examples needs the IC-Cache config: --iccache FILE (or 'iccache' in --config)")
    if max_tokens < 1 or max_waiting < 0 or (max_seconds is not None and max_seconds < 0):
        raise ConfigError("--max-tokens must be at least 1; --max-waiting and --max-seconds at least 0")
    config = load_iccache_config(settings.iccache)
    policies = load_policies(settings.policy_file)
    large_name = config.model("large").name
    pool = UpstreamPool(settings)
    candidates = pool.router.candidates(large_name)
    if not candidates:
        await pool.aclose()
        raise ConfigError(f"no upstream serves the large model {large_name!r}: add --upstream {large_name}=URL")
    own_embedder = embedder is None
    store = None
    client = httpx.AsyncClient(timeout=2.0)
    try:
        embedder = embedder or await build_default_embedder(settings)
        store = make_store(settings)
        bank = await load_bank(store, config, policies, dim=embedder.dim, embedder=embedder.identity)
        deadline = asyncio.get_running_loop().time() + (max_seconds if max_seconds is not None else math.inf)
        spec = config.model("large")
        urls = [spec.metrics_url] if spec.metrics_url else sorted({metrics_url(u.base_url) for u in candidates})
        gate = IdleGate(urls, max_waiting=max_waiting,
                        deadline=deadline, client=client)
        large = LargeModel(pool, large_name, gate, max_tokens=max_tokens)
        progress = Progress(replay.keep_agreement)
        outcome = Outcome(ReplayReport(), examples=len(bank))
        try:
            outcome.report = await replay_examples(bank, *progress.wrap(large.ask, embedding_agreement(embedder)),
                                                   replay)
        except (ReplayStopped, UpstreamError, RequestError, EmbedderError) as exc:
            outcome.stopped, outcome.failed = _why(exc), not isinstance(exc, ReplayStopped)
            outcome.report = progress.report
            outcome.report.evicted = await _evict_only(bank, replay)
        outcome.busy_waits = gate.waits
        if not dry_run:
            outcome.saved = await save_bank(store, bank, outcome.report, completion_tokens=large.completion_tokens)
        return outcome
    finally:
        await client.aclose()
        await pool.aclose()
        if store is not None:
            await store.close()
        if own_embedder and embedder is not None and hasattr(embedder, "aclose"):
            with contextlib.suppress(Exception):
                await embedder.aclose()


def _why(exc: Exception) -> str:
    """The reason a run stopped, with an upstream's OpenAI error message when it sent one."""
    error = exc.body.get("error") if isinstance(exc, UpstreamError) and isinstance(exc.body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"{exc}: {message}" if message else str(exc)


def print_summary(outcome: Outcome, replay: ReplayConfig, *, dry_run: bool, out: TextIO | None = None) -> None:
    """The run in a few lines: counts first, then the entry ids (never prompt text)."""
    out = out or sys.stdout  # looked up per call: the default would pin the stdout of import time
    r = outcome.report
    print(f"replay-examples: {outcome.examples} examples; validated {len(r.validated)}, regenerated "
          f"{len(r.regenerated)}, evicted {len(r.evicted)}; tokens spent {r.tokens_spent} of {replay.token_budget}",
          file=out)
    for name in ("validated", "regenerated", "evicted"):
        if ids := getattr(r, name):
            print(f"  {name}: {' '.join(ids)}", file=out)
    if outcome.busy_waits:
        print(f"  waited {outcome.busy_waits} times for the large model to be idle", file=out)
    if outcome.stopped:
        print(f"  stopped early: {outcome.stopped}", file=out)
    if dry_run:
        print("  dry run: nothing written to the store", file=out)
    elif outcome.saved is not None:
        s = outcome.saved
        print(f"  store: {s['written']} entries rewritten, {s['deleted']} deleted"
              + (f", {s['missing']} gone meanwhile" if s["missing"] else ""), file=out)

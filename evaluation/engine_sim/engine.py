"""The simulated engine: validates a request, waits like a GPU would, answers.

Latency model (per request, after admission to the running batch)::

    prefill  = (prompt_tokens - cached_tokens) * prefill_ms_per_token
    step     = decode_ms_per_token * (1 + decode_batch_penalty * (running - 1))
    total    = prefill + output_tokens * step

Streaming sleeps before every token; non-streaming sleeps once for the total.
``cached_tokens`` comes from the prefix cache (:mod:`.prefix_cache`), looked
up when the request is admitted to the batch, as vLLM's scheduler does.
This is a model of an engine, not an engine: there is no real compute, only
honest waiting and honest counting.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from evaluation.engine_sim.answers import AnswerBook, answer_pieces, chat_prompt, tokenize
from evaluation.engine_sim.metrics import SimMetrics
from evaluation.engine_sim.prefix_cache import PrefixCache, block_hashes
from evaluation.engine_sim.scheduler import Scheduler
from evaluation.engine_sim.settings import SimSettings


class SimRequestError(Exception):
    """A request the engine refuses, with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type_: str = "BadRequestError", param: str | None = None):
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


@dataclass
class Plan:
    """Everything decided about one request before it runs."""

    endpoint: str  # "chat" | "completions"
    id: str
    created: int
    prompt_tokens: int
    choices: list[list[str]]  # output-token strings per choice
    finish_reasons: list[str]
    include_usage: bool
    blocks: list[bytes] = field(default_factory=list)  # chained hashes of the prompt's full blocks
    cached_tokens: int = 0  # prompt tokens the prefix cache served (known once admitted)
    started: float = field(default_factory=time.perf_counter)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c) for c in self.choices)

    @property
    def steps(self) -> int:
        return max((len(c) for c in self.choices), default=0)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _int_param(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SimRequestError(400, f"{name} must be an integer in [{low}, {high}]", param=name)
    return value


class SimEngine:
    def __init__(self, settings: SimSettings):
        self.settings = settings
        self.scheduler = Scheduler(settings.max_batch, settings.max_waiting, settings.kv_cache_tokens)
        self.metrics = SimMetrics(settings.model, self.scheduler)
        self.book = AnswerBook.from_jsonl(settings.answers_file) if settings.answers_file else None
        capacity = (settings.prefix_cache_tokens or settings.kv_cache_tokens) // settings.block_size
        self.prefix_cache = PrefixCache(max(1, capacity), settings.block_size) if settings.prefix_caching else None

    def plan(self, endpoint: str, body: dict[str, Any]) -> Plan:
        s = self.settings
        model = body.get("model")
        if model != s.model:
            raise SimRequestError(404, f"The model `{model}` does not exist.", type_="NotFoundError", param="model")
        if endpoint == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise SimRequestError(400, "messages must be a non-empty list of objects", param="messages")
            prompt, question = chat_prompt(messages)
            limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        else:
            raw = body.get("prompt")
            if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
                raw = raw[0]
            if not isinstance(raw, str):
                raise SimRequestError(400, "prompt must be a string (or a list of one string)", param="prompt")
            prompt = question = raw
            limit_name = "max_tokens"
        tokens = tokenize(prompt)
        prompt_tokens = max(1, len(tokens))
        room = s.max_model_len - prompt_tokens
        if room < 1:
            raise SimRequestError(400, f"prompt is {prompt_tokens} tokens; max_model_len is {s.max_model_len}", param="messages")
        max_tokens = _int_param(body, limit_name, min(s.default_max_tokens, room), 1, room)
        n = _int_param(body, "n", 1, 1, 16)
        choices, reasons = [], []
        for i in range(n):
            pieces = answer_pieces(prompt, question, self.book, salt=i)
            reasons.append("length" if len(pieces) > max_tokens else "stop")
            choices.append(pieces[:max_tokens])
        stream_options = body.get("stream_options") or {}
        prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
        return Plan(
            endpoint=endpoint,
            id=prefix + uuid.uuid4().hex,
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
            choices=choices,
            finish_reasons=reasons,
            include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
            blocks=block_hashes(tokens, s.block_size) if self.prefix_cache is not None else [],
        )

    def token_ids(self, body: dict[str, Any]) -> list[int]:
        """Stable ids of the prompt's tokens (``/tokenize``): ``messages`` (as chat renders them) or ``prompt``."""
        messages = body.get("messages")
        if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
            text = chat_prompt(messages)[0]
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise SimRequestError(400, "give messages (a list of objects) or prompt (a string)", param="prompt")
        return [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "big") % 50000
                for t in tokenize(text)]

    # -- timing -----------------------------------------------------------------------
    def _admitted(self, plan: Plan) -> float:
        """Look the prompt up in the prefix cache as it enters the batch; its prefill time.

        The blocks join the cache right away (vLLM caches a block once computed,
        and a request arriving during this prefill waits behind it anyway).
        """
        if self.prefix_cache is not None:
            plan.cached_tokens = self.prefix_cache.cached_tokens(plan.blocks, plan.prompt_tokens)
            self.prefix_cache.insert(plan.blocks)
            self.metrics.prefix_queried(plan.prompt_tokens, plan.cached_tokens)
        return (plan.prompt_tokens - plan.cached_tokens) * self.settings.prefill_ms_per_token / 1000.0

    def _step_s(self) -> float:
        s = self.settings
        extra = max(0, self.scheduler.running - 1)
        return s.decode_ms_per_token * (1.0 + s.decode_batch_penalty * extra) / 1000.0

    def _account(self, plan: Plan) -> None:
        self.metrics.prompt_tokens.inc(plan.prompt_tokens)
        self.metrics.generation_tokens.inc(plan.completion_tokens)
        for reason in plan.finish_reasons:
            self.metrics.finished(reason)
        self.metrics.e2e.observe(time.perf_counter() - plan.started)

    # -- answering --------------------------------------------------------------------
    async def complete(self, plan: Plan) -> dict[str, Any]:
        async with self.scheduler.slot(plan.prompt_tokens + plan.completion_tokens):
            await asyncio.sleep(self._admitted(plan))
            self.metrics.ttft.observe(time.perf_counter() - plan.started)
            await asyncio.sleep(plan.steps * self._step_s())
        self._account(plan)
        model = self.settings.model
        if plan.endpoint == "chat":
            choices = [
                {"index": i, "message": {"role": "assistant", "content": "".join(p)},
                 "logprobs": None, "finish_reason": plan.finish_reasons[i]}
                for i, p in enumerate(plan.choices)
            ]
            obj = "chat.completion"
        else:
            choices = [
                {"index": i, "text": "".join(p), "logprobs": None, "finish_reason": plan.finish_reasons[i]}
                for i, p in enumerate(plan.choices)
            ]
            obj = "text_completion"
        return {"id": plan.id, "object": obj, "created": plan.created, "model": model,
                "choices": choices, "usage": plan.usage()}

    async def stream(self, plan: Plan) -> AsyncIterator[dict[str, Any]]:
        """Chunk objects in order; the caller frames them as SSE and adds ``[DONE]``."""
        chat = plan.endpoint == "chat"
        base = {"id": plan.id, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": plan.created, "model": self.settings.model}

        def chunk(i: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                    {"content": text} if text is not None else {})
                choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        steps = self._stream_steps(plan, chunk)
        finished = False
        try:
            async for item in steps:
                yield item
            finished = True
        finally:
            await steps.aclose()  # releases the batch slot now, not whenever it is collected
            if not finished:  # the client left (or the server stopped): vLLM counts an abort
                self.metrics.finished("abort")
        if plan.include_usage:
            yield {**base, "choices": [], "usage": plan.usage()}
        self._account(plan)

    async def _stream_steps(self, plan: Plan, chunk) -> AsyncIterator[dict[str, Any]]:
        chat = plan.endpoint == "chat"
        async with self.scheduler.slot(plan.prompt_tokens + plan.completion_tokens):
            await asyncio.sleep(self._admitted(plan))
            self.metrics.ttft.observe(time.perf_counter() - plan.started)
            if chat:
                for i in range(len(plan.choices)):
                    yield chunk(i, None, None, role=True)
            for step in range(plan.steps):
                await asyncio.sleep(self._step_s())
                for i, pieces in enumerate(plan.choices):
                    if step < len(pieces):
                        yield chunk(i, pieces[step], None)
        for i in range(len(plan.choices)):
            yield chunk(i, None if chat else "", plan.finish_reasons[i])

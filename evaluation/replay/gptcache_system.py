"""GPTCache itself as a replay baseline: a loopback OpenAI-compatible server around GPTCache's core.

``python -m evaluation.replay.gptcache_system --port P --upstream URL --threshold 0.8 --data-dir DIR``
answers ``/v1/chat/completions`` and ``/v1/completions`` (plain and streamed)
through ``gptcache`` 0.1.44 (the ``gptcache`` extra), configured as its README's
similar-search example: a private :class:`gptcache.Cache` (not the global one)
with ``get_data_manager(CacheBase("sqlite"), VectorBase("faiss", dimension=384))``,
``SearchDistanceEvaluation()`` and ``Config(similarity_threshold=...)``, looked
up and filled through ``gptcache.adapter.api.get`` / ``put``. Two substitutions,
both forced by the evaluation, not chosen to help it:

* embeddings are our all-MiniLM-L6-v2 (the same ``gpu_embed`` embedder
  ``semcache serve`` builds), because GPTCache's default ONNX embedding
  downloads a model from a hub (this box is offline) and the comparison must
  use one model; the vector reaches GPTCache through its own ``cache_context``
  hook, so its ``embedding_func`` returns it unchanged;
* its faiss + SQLite store, because its hnswlib store never hits (an id-type bug).

What a hit means is GPTCache's decision, unchanged: **one global threshold**,
the cache key is only the last message's content (GPTCache's ``last_content``;
``get_prompt`` for completions), so model, max_tokens, system prompt, earlier
turns and sampling parameters do not partition the cache; only the nearest
entry is considered (top_k 1); a temperature in (0, 2) makes GPTCache skip the
cache at random, as it does. Answers are stored whatever their finish reason.

Threshold mapping. faiss returns the squared L2 distance ``d2`` between unit
vectors, ``d2 = 2 - 2 cos``; ``SearchDistanceEvaluation`` scores ``4 - d2``
on ``[0, 4]`` and a hit needs ``score >= 4 * threshold``, i.e.
``cos >= 2 * threshold - 1``: GPTCache's shipped 0.8 is cosine **0.6**.
Responses carry ``X-Semcache-Status: hit|miss|bypass``, on a hit
``X-Semcache-Similarity`` (that cosine) and ``X-Gptcache-Score`` (GPTCache's
normalised score ``(1 + cos) / 2``), so the replay records it like the proxies.

GPTCache's data manager is not thread-safe (faiss index, SQLAlchemy session),
and its own server calls it synchronously from async handlers; here every
GPTCache call runs in one dedicated worker thread, keeping the event loop free
while calling GPTCache one request at a time, as it expects.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

GPTCACHE_VERSION = "0.1.44"
# gptcache pip-installs a backend it cannot import (gptcache.utils._check_library);
# these must be present so importing its faiss and SQL stores never runs pip.
BACKENDS = ("gptcache", "faiss", "sqlalchemy")


def missing_backends() -> list[str]:
    """Modules of the ``gptcache`` extra that are not installed (empty when it is usable)."""
    return [name for name in BACKENDS if importlib.util.find_spec(name) is None]


def gptcache_threshold_to_cosine(threshold: float) -> float:
    """The cosine similarity GPTCache's ``similarity_threshold`` needs with faiss + SearchDistanceEvaluation."""
    return 2 * threshold - 1


def _given_vector(_text: Any, extra_param: Any = None, **_: Any) -> Any:
    """GPTCache ``embedding_func``: the vector computed beforehand, passed as ``cache_context``."""
    if extra_param is None:
        raise ValueError("no embedding passed in cache_context['embedding_func']")
    return extra_param


class GPTCacheCore:
    """GPTCache's ``Cache`` with the faiss + SQLite store, called from one worker thread."""

    def __init__(self, data_dir: Path, threshold: float, *, dim: int, max_size: int):
        missing = missing_backends()
        if missing:
            raise RuntimeError(f"the gptcache extra is not installed (missing {missing}): "
                               "pip install -e '.[gptcache]'")
        self.threshold = threshold
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gptcache")
        self._pool.submit(self._init, Path(data_dir), threshold, dim, max_size).result()

    def _init(self, data_dir: Path, threshold: float, dim: int, max_size: int) -> None:
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase, get_data_manager
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

        import faiss

        # One query at a time against a flat index: OpenMP threads only spin against the
        # embedder on a small box (0.55 vs 1.3 ms per search measured on 2 busy cores).
        faiss.omp_set_num_threads(1)

        data_dir.mkdir(parents=True, exist_ok=True)
        manager = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{data_dir / 'sqlite.db'}"),
                                   VectorBase("faiss", dimension=dim, index_path=str(data_dir / "faiss.index")),
                                   max_size=max_size)
        self.cache = Cache()
        self.cache.init(pre_embedding_func=get_prompt, embedding_func=_given_vector, data_manager=manager,
                        similarity_evaluation=SearchDistanceEvaluation(),
                        config=Config(similarity_threshold=threshold))

    def _get(self, key: str, vector: Any, sampling: dict[str, Any]) -> tuple[str | None, float | None]:
        from gptcache.adapter.api import get

        scores: list[float] = []
        answer = get(key, cache_obj=self.cache, cache_context={"embedding_func": vector},
                     hit_callback=lambda found: scores.extend(s for _q, s in found), **sampling)
        return answer, (max(scores) if scores and answer is not None else None)

    def _put(self, key: str, vector: Any, answer: str) -> None:
        from gptcache.adapter.api import put

        put(key, answer, cache_obj=self.cache, cache_context={"embedding_func": vector})

    async def get(self, key: str, vector: Any, sampling: dict[str, Any]) -> tuple[str | None, float | None]:
        """The cached answer (or None) and GPTCache's normalised score of the best hit.

        ``sampling`` is the request's ``temperature`` / ``top_k`` when it set them: GPTCache
        reads both (a set temperature also widens its search from 1 to 5 candidates).
        """
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._get, key, vector, sampling)

    async def put(self, key: str, vector: Any, answer: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._put, key, vector, answer)

    def report(self) -> dict[str, Any]:
        """GPTCache's own counters (``cache.report``): operation counts and mean seconds."""
        rep = self.cache.report
        ops = {"pre": rep.op_pre, "embedding": rep.op_embedding, "search": rep.op_search, "data": rep.op_data,
               "evaluation": rep.op_evaluation, "post": rep.op_post, "save": rep.op_save, "llm": rep.op_llm}
        return {"hits": rep.hint_cache_count,
                **{name: {"count": op.count, "mean_s": op.average()} for name, op in ops.items()}}

    def close(self) -> None:
        # gptcache's Cache.init registered an atexit hook that flushes and closes the
        # store; closing here too would make that hook log an error at exit.
        self._pool.shutdown(wait=True)


def cache_key(endpoint: str, body: dict[str, Any]) -> str | None:
    """GPTCache's key for a request (its ``last_content`` / ``get_prompt``), or None if it cannot key it."""
    from gptcache.processor.pre import get_prompt, last_content

    try:
        key = last_content(body) if endpoint == "chat" else get_prompt(body)
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    return key if isinstance(key, str) else None


def _hit_body(endpoint: str, model: str, text: str) -> dict[str, Any]:
    """A cached answer shaped as GPTCache's OpenAI adapter returns it (zero usage)."""
    head = {"id": f"gptcache-{uuid.uuid4().hex[:16]}", "created": int(time.time()), "model": model,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "gptcache": True}
    if endpoint == "chat":
        return {**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    return {**head, "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}


def _hit_chunks(endpoint: str, model: str, text: str, include_usage: bool) -> list[dict[str, Any]]:
    """A cached answer as stream chunks, as GPTCache's adapter streams one: role, whole text, stop."""
    head = {"id": f"gptcache-{uuid.uuid4().hex[:16]}", "created": int(time.time()), "model": model,
            "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion"}
    if endpoint == "chat":
        pieces = [{"delta": {"role": "assistant"}, "finish_reason": None},
                  {"delta": {"content": text}, "finish_reason": None}, {"delta": {}, "finish_reason": "stop"}]
    else:
        pieces = [{"text": text, "finish_reason": None}, {"text": "", "finish_reason": "stop"}]
    chunks = [{**head, "choices": [{"index": 0, **p}]} for p in pieces]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                                         "total_tokens": 0}})
    return chunks


def _answer_text(endpoint: str, body: dict[str, Any]) -> str:
    """The first choice's text of a plain upstream answer (what GPTCache's adapter stores)."""
    choice = (body.get("choices") or [{}])[0]
    return ((choice.get("message") or {}).get("content") if endpoint == "chat" else choice.get("text")) or ""


def _delta_text(endpoint: str, chunk: dict[str, Any]) -> str:
    """The first choice's new text in one upstream stream chunk."""
    for choice in chunk.get("choices") or []:
        if choice.get("index", 0) == 0:
            return ((choice.get("delta") or {}).get("content") if endpoint == "chat" else choice.get("text")) or ""
    return ""


def create_app(upstream: str, data_dir: Path, threshold: float, *, max_size: int = 100_000,
               embedder: Any = None) -> FastAPI:
    """The FastAPI app; ``embedder`` replaces the default MiniLM one (built at start-up otherwise)."""
    state: dict[str, Any] = {"lookups": 0, "lookup_s": 0.0}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        emb = embedder
        if emb is None:
            from gpu_embed import build_embedder

            emb = await asyncio.to_thread(build_embedder)
        state["embedder"] = emb
        state["core"] = await asyncio.to_thread(GPTCacheCore, data_dir, threshold, dim=emb.dim, max_size=max_size)
        state["client"] = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=httpx.Timeout(300, connect=10))
        try:
            yield
        finally:
            await state["client"].aclose()
            state["core"].close()
            if embedder is None:
                await emb.aclose()

    app = FastAPI(title="GPTCache baseline", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/admin/stats")
    async def stats() -> dict[str, Any]:
        # Shaped like the proxy's /admin/stats where evaluation.reports.summary reads lookup time.
        n = state["lookups"]
        mean_ms = 1000 * state["lookup_s"] / n if n else 0.0
        return {"cache": {"categories": {"default": {"lookups": n, "mean_lookup_ms": mean_ms}}},
                "gptcache": {"version": GPTCACHE_VERSION, "threshold": threshold,
                             "cosine_threshold": gptcache_threshold_to_cosine(threshold),
                             "report": state["core"].report()}}

    async def forward(endpoint: str, path: str, body: dict[str, Any], key: str | None, vector: Any,
                      status: str) -> Response:
        client: httpx.AsyncClient = state["client"]
        headers = {"x-semcache-status": status}
        if not body.get("stream"):
            resp = await client.post(path, json=body)
            if resp.status_code == 200 and key is not None:
                text = _answer_text(endpoint, resp.json())
                if text:
                    await state["core"].put(key, vector, text)
            return Response(resp.content, status_code=resp.status_code, headers=headers,
                            media_type=resp.headers.get("content-type", "application/json"))
        upstream_resp = await client.send(client.build_request("POST", path, json=body), stream=True)
        if upstream_resp.status_code != 200:
            content = await upstream_resp.aread()
            await upstream_resp.aclose()
            return Response(content, status_code=upstream_resp.status_code, headers=headers,
                            media_type=upstream_resp.headers.get("content-type", "application/json"))

        async def relay() -> AsyncIterator[bytes]:
            pieces: list[str] = []
            try:
                async for line in upstream_resp.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        pieces.append(_delta_text(endpoint, json.loads(line[6:])))
                    yield (line + "\n").encode()
            finally:
                await upstream_resp.aclose()
            if key is not None and "".join(pieces):
                await state["core"].put(key, vector, "".join(pieces))

        return StreamingResponse(relay(), headers=headers, media_type="text/event-stream")

    async def handle(endpoint: str, path: str, request: Request) -> Response:
        body = await request.json()
        key = cache_key(endpoint, body)
        if key is None:
            return await forward(endpoint, path, body, None, None, "bypass")
        began = time.perf_counter()
        vector = (await state["embedder"].embed([key]))[0]
        sampling = {k: body[k] for k in ("temperature", "top_k") if body.get(k) is not None}
        answer, score = await state["core"].get(key, vector, sampling)
        state["lookups"] += 1
        state["lookup_s"] += time.perf_counter() - began
        if answer is None:
            return await forward(endpoint, path, body, key, vector, "miss")
        headers = {"x-semcache-status": "hit"}
        if score is not None:
            headers.update({"x-semcache-similarity": f"{2 * score - 1:.4f}", "x-gptcache-score": f"{score:.4f}"})
        model = body.get("model") or ""
        if not body.get("stream"):
            return JSONResponse(_hit_body(endpoint, model, answer), headers=headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        lines = [f"data: {json.dumps(c)}\n\n" for c in _hit_chunks(endpoint, model, answer, include_usage)]
        return StreamingResponse(iter([*lines, "data: [DONE]\n\n"]), headers=headers,
                                 media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await handle("chat", "/chat/completions", request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handle("completion", "/completions", request)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.replay.gptcache_system",
                                     description="GPTCache (faiss + sqlite, MiniLM) as an OpenAI-compatible server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="the engine's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="GPTCache's similarity_threshold (0.8 as shipped = cosine 0.6)")
    parser.add_argument("--data-dir", type=Path, required=True, help="where GPTCache keeps sqlite.db and faiss.index")
    parser.add_argument("--max-size", type=int, default=100_000,
                        help="GPTCache's LRU capacity (its default is 1000; large so capacity does not "
                             "confound the threshold comparison)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    missing = missing_backends()
    if missing:
        parser.exit(2, f"the gptcache extra is not installed (missing {missing}): pip install -e '.[gptcache]'\n")
    import uvicorn

    app = create_app(args.upstream, args.data_dir, args.threshold, max_size=args.max_size)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

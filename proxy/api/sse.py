"""Server-sent events for OpenAI streams: parse, frame, assemble, replay.

* :class:`SSEParser` splits an upstream byte stream into ``data:`` payloads.
* :func:`assemble` turns a list of chunk objects into the equivalent
  non-streamed response (what is stored when a stream ends).
* :func:`replay_chunks` turns a cached entry back into chunk objects with a
  fresh id and timestamp: the stored chunks when there are any, else chunks
  synthesised from the stored response.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def frame(payload: dict[str, Any] | str) -> bytes:
    """One SSE event carrying a chunk object (or an already-serialised payload)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return b"data: " + text.encode() + b"\n\n"


class SSEParser:
    """Incremental parser: feed bytes, get complete ``data`` payloads (strings)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        events: list[str] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                return events
            line, self._buffer = self._buffer[:cut].rstrip(b"\r"), self._buffer[cut + 1 :]
            if not line:  # blank line ends an event
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # comments (":"), "event:", "id:", "retry:" carry nothing OpenAI uses

    def close(self) -> list[str]:
        """Flush an event the stream ended without a blank line after."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events


def _merge_tool_calls(into: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    for delta in deltas:
        index = delta.get("index", len(into))
        while len(into) <= index:
            into.append({})
        call = into[index]
        for key, value in delta.items():
            if key == "index":
                continue
            if key == "function" and isinstance(value, dict):
                fn = call.setdefault("function", {})
                for fk, fv in value.items():
                    fn[fk] = (fn.get(fk) or "") + fv if isinstance(fv, str) and fk == "arguments" else fv
            else:
                call[key] = value


def assemble(chunks: list[dict[str, Any]], endpoint: str) -> dict[str, Any]:
    """The non-streamed response equivalent to ``chunks`` (chat or completions)."""
    chat = endpoint == "chat"
    first = chunks[0] if chunks else {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices") or []:
            i = c.get("index", 0)
            if chat:
                slot = choices.setdefault(i, {"index": i, "message": {"role": "assistant", "content": None},
                                              "logprobs": None, "finish_reason": None})
                delta = c.get("delta") or {}
                msg = slot["message"]
                for key, value in delta.items():
                    if key == "content" and value is not None:
                        msg["content"] = (msg["content"] or "") + value
                    elif key == "tool_calls" and value:
                        _merge_tool_calls(msg.setdefault("tool_calls", []), value)
                    elif key == "role" and value:
                        msg["role"] = value
                    elif key not in ("content", "tool_calls", "role") and value is not None:
                        msg[key] = (msg.get(key) or "") + value if isinstance(value, str) else value
            else:
                slot = choices.setdefault(i, {"index": i, "text": "", "logprobs": None, "finish_reason": None})
                slot["text"] += c.get("text") or ""
            if c.get("finish_reason"):
                slot["finish_reason"] = c["finish_reason"]
    response: dict[str, Any] = {
        "id": first.get("id", ""),
        "object": "chat.completion" if chat else "text_completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if first.get("system_fingerprint") is not None:
        response["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        response["usage"] = usage
    return response


def _synthesise(response: dict[str, Any], endpoint: str) -> list[dict[str, Any]]:
    """Chunks that replay a non-streamed response: role, content, finish (per choice)."""
    chunks: list[dict[str, Any]] = []
    base = {k: response[k] for k in ("id", "created", "model", "system_fingerprint") if k in response}
    obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
    for choice in response.get("choices", []):
        i = choice.get("index", 0)
        if endpoint == "chat":
            message = dict(choice.get("message") or {})
            role = message.pop("role", "assistant")
            content = message.pop("content", None)
            first_delta = {"role": role, "content": ""}
            chunks.append({**base, "object": obj, "choices": [
                {"index": i, "delta": first_delta, "logprobs": None, "finish_reason": None}]})
            rest = {k: v for k, v in message.items() if v is not None}
            if "tool_calls" in rest:
                rest["tool_calls"] = [{"index": n, **call} for n, call in enumerate(rest["tool_calls"])]
            if content or rest:
                delta = {**({"content": content} if content else {}), **rest}
                chunks.append({**base, "object": obj, "choices": [
                    {"index": i, "delta": delta, "logprobs": choice.get("logprobs"), "finish_reason": None}]})
            final = {"index": i, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}
        else:
            if choice.get("text"):
                chunks.append({**base, "object": obj, "choices": [
                    {"index": i, "text": choice["text"], "logprobs": choice.get("logprobs"), "finish_reason": None}]})
            final = {"index": i, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")}
        chunks.append({**base, "object": obj, "choices": [final]})
    return chunks


def replay_chunks(response: dict[str, Any], chunks: list[dict[str, Any]] | None, endpoint: str, *,
                  id_: str, created: int, include_usage: bool) -> list[dict[str, Any]]:
    """Chunk objects replaying a cached answer, re-stamped with ``id_`` and ``created``.

    A stored usage-only chunk is kept only when the caller asked for usage;
    when it asked and none was stored, one is built from the response's usage.
    """
    source = chunks if chunks else _synthesise(response, endpoint)
    out: list[dict[str, Any]] = []
    usage_seen = False
    for chunk in source:
        is_usage_only = not chunk.get("choices") and chunk.get("usage")
        if is_usage_only and not include_usage:
            continue
        restamped = {**chunk, "id": id_, "created": created}
        if not include_usage:
            restamped.pop("usage", None)
        usage_seen = usage_seen or bool(is_usage_only)
        out.append(restamped)
    if include_usage and not usage_seen and response.get("usage"):
        base = {k: response[k] for k in ("model", "system_fingerprint") if k in response}
        obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        out.append({"id": id_, "object": obj, "created": created, **base, "choices": [],
                    "usage": response["usage"]})
    return out


def unfinished(answer: dict[str, Any]) -> str | None:
    """Why ``answer`` is not a complete answer (a choice without ``finish_reason``), or None.

    An engine that cuts a stream short (llama-cpp-python's server, interrupted by
    another request) sends ``[DONE]`` without a finish_reason: the text is a prefix.
    """
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict) or not choice.get("finish_reason"):
            index = choice.get("index", 0) if isinstance(choice, dict) else "?"
            return f"choice {index} ended without a finish_reason"
    return None

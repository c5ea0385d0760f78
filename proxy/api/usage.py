"""Token usage of streamed answers: asked of the upstream, kept from the caller who did not ask.

A stored answer must carry ``usage`` so that every later hit has it, streamed
or not, whatever the first caller asked. So a streamed request goes upstream
with ``stream_options.include_usage`` set; a caller who did not ask for usage
gets the stream without it (:func:`for_caller`), exactly as the upstream would
have sent it. An engine that sends no usage even when asked (llama-cpp-python's
server) gets its tokens counted here (:func:`estimate`): word pieces and
punctuation marks, an approximation, marked ``"estimated": true`` in the usage
object so that nobody mistakes it for the engine's own count.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


def caller_asked(body: dict[str, Any]) -> bool:
    """The caller asked for the usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def asking_usage(body: dict[str, Any]) -> dict[str, Any]:
    """The request body to send upstream for a stream: usage asked for (a copy when changed)."""
    if not body.get("stream") or caller_asked(body):
        return body
    options = body.get("stream_options")
    return {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}


def for_caller(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """``chunk`` as a caller who did not ask for usage gets it: None for the usage-only chunk."""
    if not chunk.get("choices") and "usage" in chunk:
        return None
    if "usage" not in chunk:
        return chunk
    return {k: v for k, v in chunk.items() if k != "usage"}


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def estimate(body: dict[str, Any], answer: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Usage counted from the request and the answer (see the module docstring)."""
    if endpoint == "chat":
        prompt = " ".join(_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
        outputs = []
        for choice in answer.get("choices") or []:
            message = choice.get("message") or {}
            outputs.append(_text(message.get("content")))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                outputs.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    else:
        raw = body.get("prompt")
        prompt = raw if isinstance(raw, str) else " ".join(str(p) for p in raw or [])
        outputs = [str(c.get("text") or "") for c in answer.get("choices") or []]
    prompt_tokens = count_tokens(prompt)
    completion_tokens = sum(count_tokens(o) for o in outputs)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "estimated": True}

"""Cache keys: what must match exactly, and what is matched by meaning.

The rule
--------
A cached entry may only answer a request whose *exact context* is identical.
The exact context is hashed into a **partition** id from:

* the tenant and namespace (tenants never see each other's entries; a
  category's ``shared_namespace`` replaces both, on purpose);
* the embedder identity (model + backend + precision: vectors from different
  embedders are never compared);
* the category and its policy ``version`` (bumping it invalidates at once);
* the endpoint (chat or completions) and the model name;
* every request parameter, known or unknown (temperature, top_p, max_tokens,
  stop, n, seed, tools, tool_choice, response_format, logit_bias, ...),
  except the transport-only ones (``stream``, ``stream_options``) and those a
  policy lists in ``ignore_params``; an unknown parameter may change the
  output, so it is part of the key unless a policy says otherwise;
* for chat: the system prompt and every earlier turn, verbatim, plus the last
  message's role, name and any non-text content parts (images, audio).

Only the text of the last message (chat) or the prompt (completions) is
matched *semantically*, inside one partition. Requests that cannot be keyed
safely (``n`` > 1, several prompts in one call, token-id prompts, no text)
are not cacheable and say why.

A semantic match is not trusted on the similarity alone: the candidate is
also judged by what differs between the two texts (:mod:`semcache.decide.diffrule`,
policy ``guards.diff``). Atoms (ids, hashes, UUIDs, URLs, paths, long tokens,
numbers in any form) must agree as multisets; texts sharing a long body (32+
tokens) are served only when the changed part is small and, with its context,
passes the guards and the threshold on its own; otherwise exact repeats only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from semcache.errors import RequestError

KEY_SCHEMA = "semcache-key-v1"
TRANSPORT_PARAMS = frozenset({"stream", "stream_options"})
TEXT_FIELDS = frozenset({"messages", "prompt"})

Endpoint = Literal["chat", "completions"]


@dataclass(slots=True)
class CacheRequest:
    """A request as the cache sees it: the OpenAI body plus who is asking.

    ``tenant`` is an opaque id (the proxy hashes the API key); ``namespace``
    subdivides a tenant; ``category`` forces a category; ``metadata`` feeds
    category rules.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    tenant: str = "anonymous"
    namespace: str | None = None
    category: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class NormalizedRequest:
    """The parts of a request that keys are built from."""

    model: str
    text: str
    """The semantically matched text (last message or prompt)."""
    context: Any
    """JSON-able exact context (earlier turns, last message's non-text parts)."""
    params: dict[str, Any]
    """Every output-relevant parameter (all but text fields and transport)."""
    uncacheable: str | None = None
    """Why this request can never be cached, or None."""


def _content_text(content: Any, where: str) -> tuple[str, list[Any]]:
    """Split message content into its text and its non-text parts."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if isinstance(content, list):
        texts, others = [], []
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict):
                others.append(part)
            else:
                raise RequestError(f"{where}.content[{i}] must be an object", param=f"{where}.content")
        return "\n".join(texts), others
    raise RequestError(f"{where}.content must be a string or a list of parts", param=f"{where}.content")


def normalize(endpoint: Endpoint, body: dict[str, Any]) -> NormalizedRequest:
    """Extract model, semantic text, exact context and parameters from an OpenAI body.

    Raises :class:`RequestError` for bodies no upstream would accept either.
    """
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a non-empty string", param="model")
    params = {k: v for k, v in body.items() if k not in TEXT_FIELDS and k not in TRANSPORT_PARAMS and k != "model"}
    uncacheable = None
    n = body.get("n", 1)
    if n is not None and n != 1:
        uncacheable = "n > 1 (several choices per request)"

    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list", param="messages")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise RequestError(f"messages[{i}] must be an object with a 'role'", param="messages")
        last = messages[-1]
        text, other_parts = _content_text(last.get("content"), f"messages[{len(messages) - 1}]")
        last_rest = {k: v for k, v in last.items() if k != "content"}
        context = {"earlier": messages[:-1], "last": last_rest, "parts": other_parts}
    elif endpoint == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            if len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            elif prompt and all(isinstance(p, str) for p in prompt):
                uncacheable = uncacheable or "several prompts in one request"
                prompt = ""
            else:
                uncacheable = uncacheable or "token-id prompts"
                prompt = ""
        if not isinstance(prompt, str):
            raise RequestError("'prompt' must be a string or a list of strings", param="prompt")
        text = prompt
        context = {"suffix": body.get("suffix")}
    else:  # pragma: no cover - Literal guards this
        raise RequestError(f"unknown endpoint {endpoint!r}")

    if not text.strip() and uncacheable is None:
        uncacheable = "no text to match"
    return NormalizedRequest(model=model, text=text, context=context, params=params, uncacheable=uncacheable)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def partition_id(
    *,
    tenant: str,
    namespace: str,
    embedder: str,
    category: str,
    policy_version: str,
    endpoint: str,
    norm: NormalizedRequest,
    ignore_params: list[str] | tuple[str, ...] = (),
) -> str:
    """Hash of the exact context: only entries with an equal partition may match."""
    params = {k: v for k, v in norm.params.items() if k not in ignore_params}
    material = _canonical(
        [KEY_SCHEMA, tenant, namespace, embedder, category, policy_version, endpoint, norm.model, params, norm.context]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def text_digest(text: str) -> str:
    """Digest of the semantic text (exact repeats, request coalescing)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_digest(request: CacheRequest) -> str | None:
    """:func:`text_digest` of a request's semantic text; None for a body that does not normalise
    (a cheap probe before any lookup, which reports the bad body itself)."""
    try:
        return text_digest(normalize(request.endpoint, request.body).text)
    except Exception:
        return None

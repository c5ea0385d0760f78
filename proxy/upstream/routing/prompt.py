"""What routing sees of a request: its rendered prompt, its prefix blocks, its session.

The rendered prompt is the request's text in the order the engine reads it:
for chat, each message's role and content in turn (system prompt first, then
IC-Cache's examples where :func:`semcache.iccache.prompt.with_examples` puts
them, then the conversation); for completions, the prompt. Two requests that
share a leading run of messages share a leading run of rendered text, and so
of blocks: the same blocks the engine's prefix cache would reuse (up to
where the engine's own token blocks fall).

Blocks are ``block_chars`` characters, named by a hash chained over every
block before them (like vLLM's block hashes), so one block hash names a
whole prefix. Only the first ``max_chars`` characters are hashed: routing
must stay cheap however long a prompt is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_ROLE_SEP, _TURN_SEP = "\x1f", "\x1e"
_PREFIX_ROLES = frozenset({"system", "developer"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return json.dumps(content, sort_keys=True, ensure_ascii=False)  # content parts, tool calls: exact


def _turn(message: Any) -> str:
    if not isinstance(message, dict):
        return _text(message) + _TURN_SEP
    return f"{message.get('role', '')}{_ROLE_SEP}{_text(message.get('content'))}{_TURN_SEP}"


def rendered_prompt(body: dict[str, Any], max_chars: int) -> str:
    """The first ``max_chars`` characters of the request's prompt as the engine reads it."""
    messages = body.get("messages")
    if isinstance(messages, list):
        out, size = [], 0
        for m in messages:
            turn = _turn(m)
            out.append(turn)
            size += len(turn)
            if size >= max_chars:
                break
        return "".join(out)[:max_chars]
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return (prompt if isinstance(prompt, str) else _text(prompt))[:max_chars]


def block_hashes(text: str, block_chars: int) -> list[bytes]:
    """Chained hashes of the full ``block_chars`` blocks of ``text``."""
    out: list[bytes] = []
    prev = b""
    for start in range(0, len(text) - block_chars + 1, block_chars):
        h = hashlib.blake2b(prev, digest_size=12)
        h.update(text[start:start + block_chars].encode("utf-8", "surrogatepass"))
        prev = h.digest()
        out.append(prev)
    return out


def session_key(body: dict[str, Any], max_chars: int) -> str:
    """The session a request belongs to: its OpenAI ``user``, else its opening.

    The opening is the leading system/developer turns and the first user turn
    (for completions, the start of the prompt): every later turn of a
    conversation repeats them, so all its turns share the key.
    """
    user = body.get("user")
    if isinstance(user, str) and user:
        return "user:" + user
    messages = body.get("messages")
    if isinstance(messages, list):
        opening: list[str] = []
        for m in messages:
            opening.append(_turn(m))
            role = m.get("role") if isinstance(m, dict) else None
            if role not in _PREFIX_ROLES:
                break
        text = "".join(opening)
    else:
        text = rendered_prompt(body, max_chars)
    return "open:" + hashlib.blake2b(text[:max_chars].encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

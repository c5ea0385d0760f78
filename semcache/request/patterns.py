"""Policy regular expressions in linear time, and the bounded text rules look at.

Policy patterns (``match.models``, ``match.patterns``) are searched in user
text on the request path. Python's ``re`` backtracks: ``\\w+\\(\\)`` over 80k
word characters took 11.6 s and, on the event loop, stalled every request
(issue #14). They are compiled with RE2 (``google-re2``), whose matching time
is linear in the text; a pattern RE2 cannot run (look-arounds,
back-references) is rejected when the policy loads. RE2 syntax differs from
``re`` in a few places: ``\\w``, ``\\d``, ``\\b`` and ``\\s`` are ASCII-only
(``\\pL`` matches any letter).

Rules also see only a bounded part of a long text (:func:`rule_text`): its
head and its tail, where a prompt's kind and its question usually are.
"""

from __future__ import annotations

import re2

RULE_HEAD_CHARS = 16_384
"""Characters from the start of a text that rules see."""
RULE_TAIL_CHARS = 16_384
"""Characters from the end of a text that rules see."""
MODEL_NAME_CHARS = 256
"""Characters of a model name that model patterns see."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported once, as a policy error, not on stderr
_OPTIONS.max_mem = 8 << 20   # RE2's default; stated so a huge pattern fails to compile instead of growing


def compile_pattern(pattern: str):
    """Compile ``pattern`` with RE2; ``ValueError`` naming why if RE2 cannot run it."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regular expression {pattern!r} (RE2 syntax: no look-arounds or "
                         f"back-references): {reason}") from None


def head_tail(text: str, head: int, tail: int) -> str:
    """``text`` itself if it has at most ``head + tail`` characters, else its head and tail joined by a newline."""
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[len(text) - tail :]


def rule_text(text: str) -> str:
    """The part of a query text that keyword and pattern rules are matched in."""
    return head_tail(text, RULE_HEAD_CHARS, RULE_TAIL_CHARS)

"""Deterministic answers and token counts of the engine simulator.

The same prompt always gets the same answer (so a cached answer can be
compared with a fresh one); different prompts get different answers. An
optional answer book (JSONL of ``{"question", "answer"}``) makes matching
questions get a real answer, which example-based routing needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")  # a token with the whitespace before it
_WORDS = (
    "the of and to in is that for it as with was on be by this are from or an "
    "cache model answer token request engine batch queue prompt vector index "
    "latency memory store query result value system response stream data "
    "simple fast small large first last next other same each every many"
).split()


def tokenize(text: str) -> list[str]:
    """Approximate tokenizer: words and punctuation marks."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Number of :func:`tokenize` tokens (at least 1 per text)."""
    return max(1, len(tokenize(text)))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def chat_prompt(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """Return (full prompt text, last user message) of a chat request."""
    parts = [f"{m.get('role', '')}: {_content_text(m.get('content'))}" for m in messages]
    last_user = next(
        (_content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    return "\n".join(parts), last_user


def _normalise(question: str) -> str:
    return " ".join(question.lower().split())


class AnswerBook:
    """Answers keyed by normalised question, loaded from a JSONL file."""

    def __init__(self, answers: dict[str, str]):
        self._answers = answers

    @classmethod
    def from_jsonl(cls, path: Path) -> AnswerBook:
        answers: dict[str, str] = {}
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    answers[_normalise(row["question"])] = str(row["answer"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{lineno}: expected {{question, answer}}: {exc}") from exc
        return cls(answers)

    def get(self, question: str) -> str | None:
        return self._answers.get(_normalise(question))

    def __len__(self) -> int:
        return len(self._answers)


def answer_pieces(prompt: str, question: str, book: AnswerBook | None, salt: int = 0) -> list[str]:
    """The answer as a list of output-token strings (joined, they form the text).

    Without a book entry the answer is a pseudo-sentence of 8 to 48 words and a full stop
    drawn from a hash of the full prompt (and ``salt``, the choice index).
    """
    if book is not None:
        known = book.get(question)
        if known is not None:
            return _PIECE.findall(known) or [known]
    seed = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    length = 8 + seed[0] % 41
    words = [_WORDS[b % len(_WORDS)] for b in (seed * 2)[1 : length + 1]]
    words[0] = words[0].capitalize()
    return [w if i == 0 else " " + w for i, w in enumerate(words)] + ["."]

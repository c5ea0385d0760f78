"""Tokenisation shared by every backend: :class:`TextTokenizer`.

All backends (ONNX and torch) feed the model the same token ids, so a long
prompt is cut the same way whichever backend embeds it.

Long inputs: the model sees ``max_seq_length`` tokens (256 for MiniLM,
specials included). Plain truncation keeps the head, but long LLM prompts
usually put context (documents, history, boilerplate instructions) first and
the actual question last, so two prompts sharing a long preamble would embed
almost identically whatever they ask. We therefore keep the first
``head_tokens`` tokens (64 by default: enough to see the kind of task, e.g. a
system line) and fill the remaining budget from the *end* of the text, where
the question usually is. Text in the middle of a long prompt does not reach
the vector; a cache key for such prompts is only as precise as head + tail.

Bounded work: tokenising a whole 4 MB prompt took seconds while holding the
GIL, stalling every request (issue #14). Only a head and a tail of at most
:data:`CHARS_PER_TOKEN` x ``max_length`` characters each, cut at whitespace,
are tokenised (:meth:`TextTokenizer.bounded`). Wherever those windows hold
enough tokens (any text averaging under 32 characters per token) the ids are
exactly those of the whole text; otherwise fewer tokens reach the model, the
same way for the query and the stored entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semcache.errors import EmbedderError

CHARS_PER_TOKEN = 32
"""Characters per token kept, at most, on each side of a long text (English averages ~4-5)."""


class TextTokenizer:
    """Turns texts into padded ``input_ids``/``attention_mask``/``token_type_ids``."""

    def __init__(self, model_path: Path, max_length: int, head_tokens: int = 64):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise EmbedderError("the 'tokenizers' package is required by gpu_embed") from exc
        self._tok = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        # We truncate (head + tail) and pad ourselves; the file's own settings
        # would truncate the head only and pad to a fixed length.
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_length = int(max_length)
        self.head_tokens = max(0, min(int(head_tokens), self.max_length - 2))
        pad = self._tok.token_to_id("[PAD]")
        if pad is None:
            pad = self._tok.token_to_id("<pad>")
        self.pad_id = int(pad or 0)

    def bounded(self, text: str) -> str:
        """``text``, or for a long one its head and tail windows (cut at whitespace) joined by a space."""
        window = CHARS_PER_TOKEN * self.max_length
        if len(text) <= 2 * window:
            return text
        head, tail = text[:window], text[len(text) - window :]
        # Cut at whitespace so the words at the cuts tokenise as in the whole text.
        head_words = head.rsplit(None, 1)
        if len(head_words) == 2:
            head = head_words[0]
        tail_words = tail.split(None, 1)
        if len(tail_words) == 2:
            tail = tail_words[1]
        return head + " " + tail

    def _clip(self, ids: list[int], special: list[int]) -> list[int]:
        """Keep the leading specials + ``head_tokens`` and the tail of ``ids``."""
        if len(ids) <= self.max_length:
            return ids
        lead = 0
        while lead < len(special) and special[lead]:
            lead += 1
        head_end = lead + self.head_tokens
        tail_len = self.max_length - head_end
        return ids[:head_end] + ids[len(ids) - tail_len :]

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenise ``texts`` into int64 arrays padded to the longest row."""
        if len(texts) == 1:
            encodings = [self._tok.encode(self.bounded(texts[0]))]
        else:
            encodings = self._tok.encode_batch([self.bounded(t) for t in texts])
        rows = [self._clip(e.ids, e.special_tokens_mask) for e in encodings]
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def token_count(self, text: str) -> int:
        """Number of tokens the model would see for ``text`` (after clipping)."""
        return min(len(self._tok.encode(self.bounded(text)).ids), self.max_length)

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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semcache.errors import EmbedderError


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
            encodings = [self._tok.encode(texts[0])]
        else:
            encodings = self._tok.encode_batch(list(texts))
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
        return min(len(self._tok.encode(text).ids), self.max_length)

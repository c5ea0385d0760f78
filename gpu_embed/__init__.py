"""gpu_embed: fast query embeddings for semcache.

Public API (everything heavy is imported lazily; ``import gpu_embed`` loads
neither torch nor sentence-transformers nor onnxruntime)::

    from gpu_embed import EmbedderSettings, build_embedder
    embedder = build_embedder(EmbedderSettings(backend="auto"))
    vectors = await embedder.embed(["how do I reset my password?"])
    await embedder.aclose()

Modules: ``settings`` (EmbedderSettings), ``factory`` (build_embedder,
backend selection), ``embedder`` (LocalEmbedder), ``remote`` (RemoteEmbedder),
``batcher`` (MicroBatcher), ``lru``, ``tokenize`` (long-input policy),
``export`` (ONNX export/quantisation cache), ``probe`` (built-in int8 check),
``quality`` (int8-vs-fp32 check on pair data), ``server`` (embedding service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpu_embed.settings import EmbedderSettings

if TYPE_CHECKING:
    from gpu_embed.embedder import LocalEmbedder
    from gpu_embed.remote import RemoteEmbedder

__all__ = ["EmbedderSettings", "LocalEmbedder", "RemoteEmbedder", "build_embedder"]

_LAZY = {
    "build_embedder": "gpu_embed.factory",
    "LocalEmbedder": "gpu_embed.embedder",
    "RemoteEmbedder": "gpu_embed.remote",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gpu_embed' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

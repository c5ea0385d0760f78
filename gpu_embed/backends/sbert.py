"""torch / sentence-transformers backend: :class:`TorchBackend` (CPU fp32, CUDA fp16).

sentence-transformers is imported only when this backend is built (importing
it takes seconds), never by ``import gpu_embed``. Texts are tokenised by the
shared :class:`~gpu_embed.tokenize.TextTokenizer`, so long inputs are cut
exactly as on the ONNX backends; the model's own modules do the pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semcache.errors import EmbedderError

from gpu_embed.backends.base import encode_in_chunks, l2_normalize, make_identity
from gpu_embed.hardware import cpu_count
from gpu_embed.model_dir import ModelInfo
from gpu_embed.tokenize import TextTokenizer

_CPU_CHUNK = 64


class TorchBackend:
    """sentence-transformers on ``device`` ("cpu" -> fp32, "cuda" -> fp16)."""

    def __init__(self, info: ModelInfo, device: str = "cpu", *, head_tokens: int = 64,
                 cuda_batch_size: int = 256, threads: int | None = None):
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(
                "the torch backends need torch and sentence-transformers "
                "(pip install 'semcache[torch]'); or use backend='onnx-int8'"
            ) from exc
        if device == "cuda" and not torch.cuda.is_available():
            raise EmbedderError("backend 'cuda' requested but torch sees no CUDA device")
        self._torch = torch
        self.device = device
        if device == "cpu":
            torch.set_num_threads(threads or cpu_count())
        model = SentenceTransformer(str(info.path), device=device)
        self.precision = "fp16" if device == "cuda" else "fp32"
        if device == "cuda":
            model = model.half()  # fp16 tensor cores; vectors are renormalised in fp32
        self._model = model.eval()
        self._tokenizer = TextTokenizer(info.path, info.max_seq_length, head_tokens)
        self._chunk = cuda_batch_size if device == "cuda" else _CPU_CHUNK
        self.kind = "cuda" if device == "cuda" else "torch"
        self.dim = info.dim
        self.identity = make_identity(info, self.kind, self.precision, head_tokens)

    def _run(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        features = {
            k: torch.from_numpy(v).to(self.device, non_blocking=True)
            for k, v in self._tokenizer.encode(texts).items()
        }
        with torch.inference_mode():
            pooled = self._model(features)["sentence_embedding"]
        return l2_normalize(pooled.float().cpu().numpy())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_in_chunks(texts, self._chunk, self._run, self.dim)

    def close(self) -> None:
        self._model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

"""Synchronous model backends (ONNX Runtime, torch); see :mod:`gpu_embed.backends.base`.

Submodules import their heavy dependencies lazily, inside constructors.
"""

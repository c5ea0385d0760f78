"""The engine simulator: a small OpenAI-compatible server with a vLLM-like latency model.

It stands in for a GPU engine in load and latency experiments; see
:mod:`evaluation.engine_sim.engine` for the latency model.
"""

from evaluation.engine_sim.app import create_app
from evaluation.engine_sim.settings import SimSettings

__all__ = ["SimSettings", "create_app"]

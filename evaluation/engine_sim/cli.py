"""``semcache engine-sim``: run the engine simulator (also ``python -m evaluation.engine_sim``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from evaluation.engine_sim.settings import SimSettings

HELP = "run the engine simulator: a fake OpenAI-compatible engine with a vLLM-like latency model"
DESCRIPTION = """\
A small OpenAI-compatible server that stands in for a GPU engine in load and
latency experiments. It answers deterministically from the prompt (or from an
answer book, --answers), waits like vLLM would (prefill per prompt token,
decode per output token, at most --max-batch requests at once, the rest in a
FIFO queue) and exports vLLM's metric names on /metrics. It generates no real
text: use it to measure semcache, not to judge answers.

Every option can also be set as an environment variable SEMCACHE_SIM_<NAME>,
e.g. SEMCACHE_SIM_DECODE_MS_PER_TOKEN=15.
"""

_OPTIONS = {  # flag -> (settings field, type, help)
    "--model": ("model", str, "served model name (default: sim-model)"),
    "--host": ("host", str, "listen address (default: 127.0.0.1)"),
    "--port": ("port", int, "listen port (default: 8100)"),
    "--prefill-ms-per-token": ("prefill_ms_per_token", float, "prefill time per prompt token (default: 0.05)"),
    "--decode-ms-per-token": ("decode_ms_per_token", float, "decode time per output token (default: 10)"),
    "--decode-batch-penalty": ("decode_batch_penalty", float,
                               "decode slowdown per extra running request, 0.01 = 1%% (default: 0)"),
    "--max-batch": ("max_batch", int, "requests decoded at once (default: 32)"),
    "--max-waiting": ("max_waiting", int, "queued requests before answering 503 (default: 1024)"),
    "--kv-cache-tokens": ("kv_cache_tokens", int, "KV-cache capacity in tokens (default: 65536)"),
    "--block-size": ("block_size", int, "tokens per KV block of the prefix cache (default: 16)"),
    "--prefix-cache-tokens": ("prefix_cache_tokens", int, "prefix-cache capacity in tokens, LRU "
                                                         "(default: --kv-cache-tokens)"),
    "--max-model-len": ("max_model_len", int, "context length (default: 8192)"),
    "--default-max-tokens": ("default_max_tokens", int, "output tokens when a request names none (default: 32)"),
    "--answers": ("answers_file", str, 'JSONL file of {"question": ..., "answer": ...} lines'),
    "--api-key": ("api_key", str, "require 'Authorization: Bearer KEY' on /v1 routes, as vLLM's --api-key"),
    "--fault": ("fault", str, "misbehave on purpose: cut_stream, drop_stream, json_to_stream, openai_headers, rate_limited "
                "(default: none; a request's sim_fault field picks its own)"),
}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, typ, help_) in _OPTIONS.items():
        parser.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    parser.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_const", const=False,
                        default=None, help="prefill every prompt in full (vLLM's --no-enable-prefix-caching)")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    given = {dest: getattr(args, dest) for dest, _, _ in _OPTIONS.values() if getattr(args, dest, None) is not None}
    if getattr(args, "prefix_caching", None) is not None:
        given["prefix_caching"] = args.prefix_caching
    return SimSettings(**given)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from evaluation.engine_sim.app import create_app

    settings = settings_from_args(args)
    print(f"engine-sim: serving model {settings.model!r} on http://{settings.host}:{settings.port}/v1", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                loop="uvloop", http="httptools", access_log=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entry point of group ``semcache.commands``: add ``engine-sim``."""
    parser = subparsers.add_parser("engine-sim", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.engine_sim", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))

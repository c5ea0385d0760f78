"""``semcache eval pairs|groups|workload|replay`` and ``semcache report`` (also ``python -m evaluation.cli``).

Registered through the ``semcache.commands`` entry-point group that
``proxy.cli`` loads: :func:`register_eval` adds ``eval``, :func:`register_report`
adds ``report``. The heavy parts (embedder, matplotlib, tqdm) are imported only
when a command runs, so ``semcache --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from semcache.errors import ConfigError


def register_eval(sub: argparse._SubParsersAction) -> None:
    from evaluation.replay import group_replay, pairs, replay
    from evaluation.workloads import workload

    p = sub.add_parser("eval", help="evaluate the cache: labelled pairs, workloads, replay through live proxies")
    inner = p.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)
    pairs.add_parser(inner)
    group_replay.add_parser(inner)
    workload.add_parser(inner)
    replay.add_parser(inner)


def register_report(sub: argparse._SubParsersAction) -> None:
    from evaluation.reports import report

    report.add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_eval(sub)
    register_report(sub)
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except ConfigError as exc:
        print(f"semcache: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

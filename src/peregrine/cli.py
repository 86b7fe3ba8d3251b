"""``peregrine`` command line: wires the faces together; holds no engine logic."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import peregrine


def _demo(args: argparse.Namespace) -> int:
    from peregrine.demo import run_demo

    run_demo(Path(args.data), n_texts=args.n)
    return 0


def _info(args: argparse.Namespace) -> int:
    import orjson

    with peregrine.open(args.data) as db:
        for name in db.list_collections():
            info = db.collection(name).info()
            sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peregrine", description=__doc__)
    parser.add_argument("--version", action="version", version=peregrine.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="embed real text, store it, search it, print latency")
    demo.add_argument("--data", default="./data", help="database directory (default ./data)")
    demo.add_argument("--n", type=int, default=5000, help="number of texts (default 5000)")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="print collection statistics of a database")
    info.add_argument("--data", default="./data")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        result: int = args.func(args)
        return result
    except peregrine.PeregrineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

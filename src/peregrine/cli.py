"""``peregrine`` command line: parses arguments, then hands over to the composition root.

``serve`` takes one flag per setting, generated from the settings classes, so
flags, ``PEREGRINE_*`` variables and the TOML file always name the same
settings (``--http-port`` is ``PEREGRINE_HTTP_PORT`` is ``[http] port``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
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
            info = db.collection(name).info().to_dict()
            sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from peregrine import bootstrap
    from peregrine.core.settings import settings_of

    overrides = {s.key: getattr(args, _dest(s.key)) for s in settings_of(bootstrap.Settings)}
    settings = bootstrap.load(args.config, overrides=overrides)
    on_started = None
    if args.demo:
        from peregrine.demo import start_served_demo

        on_started = partial(start_served_demo, n_texts=args.demo_n)
    return bootstrap.serve(settings, on_started)


def _dest(key: str) -> str:
    return "setting_" + key.replace(".", "__")


def build_parser() -> argparse.ArgumentParser:
    from peregrine.bootstrap import Settings
    from peregrine.core.settings import settings_of

    parser = argparse.ArgumentParser(prog="peregrine", description=__doc__)
    parser.add_argument("--version", action="version", version=peregrine.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="embed real text, store it, search it, print latency")
    demo.add_argument("--data", default="./data", help="database directory (default ./data)")
    demo.add_argument("--n", type=int, default=5000, help="number of texts (default 5000)")
    demo.set_defaults(func=_demo)
    serve = sub.add_parser("serve", help="run the server (Qdrant's REST API at /)",
                           description="Settings: defaults < --config TOML file < PEREGRINE_* "
                           "environment variables < flags (see docs/server.md).")
    serve.add_argument("--config", default=None, help="TOML config file")
    for setting in settings_of(Settings):
        text = (setting.help or setting.key).replace("%", "%%")
        if setting.kind is bool:  # --x / --no-x; absent leaves the config's value
            serve.add_argument(setting.flag, dest=_dest(setting.key),
                               action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            serve.add_argument(setting.flag, dest=_dest(setting.key), default=None,
                               metavar=setting.name.upper(), help=text)
    serve.add_argument("--demo", action="store_true",
                       help="load a real-text demo collection 'docs' and print an example query")
    serve.add_argument("--demo-n", type=int, default=2000, help="texts in the demo collection")
    serve.set_defaults(func=_serve)
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

"""``peregrine`` command line: wires the faces together; holds no engine logic."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import peregrine

if TYPE_CHECKING:
    from peregrine.config import ServerConfig


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


_SERVE_FLAGS = {
    # flag: (config key, type, help)
    "--data": ("data", str, "database directory (default ./data)"),
    "--host": ("host", str, "address to bind (default 127.0.0.1; 0.0.0.0 for all)"),
    "--port": ("port", int, "TCP port (default 6333, as Qdrant)"),
    "--api-key": ("api_key", str, "key for all routes but health (header api-key or Bearer)"),
    "--read-only-api-key": ("read_only_api_key", str, "key that can read but not write"),
    "--tls-cert": ("tls_cert", str, "PEM certificate: serve HTTPS"),
    "--tls-key": ("tls_key", str, "PEM private key of --tls-cert"),
    "--fsync": ("fsync", str, "WAL fsync: always | group (default) | never"),
    "--log-level": ("log_level", str, "debug | info (default) | warning | error"),
    "--max-body-bytes": ("max_body_bytes", int, "largest request body (default 32 MiB)"),
    "--max-batch": ("max_batch", int, "most points/searches per request (default 10000)"),
    "--max-limit": ("max_limit", int, "largest limit + offset (default 10000)"),
    "--request-timeout": ("request_timeout_s", float, "seconds per request (default 30)"),
    "--cache-entries": ("cache_entries", int, "result cache size; 0 disables (default 10000)"),
    "--idle-poll": ("idle_poll", bool, "keep idle CPUs polling instead of halting: lower "
                    "wake-up latency on a VM, at the cost of every idle CPU at 100%%"),
}


def _serve(args: argparse.Namespace) -> int:
    from peregrine.api.server import serve
    from peregrine.config import load_config

    overrides = {key: getattr(args, key) for key, _, _ in _SERVE_FLAGS.values()}
    config = load_config(args.config, overrides=overrides)
    if args.demo:
        _start_demo_loader(config, args.demo_n)
    return serve(config)


def _start_demo_loader(config: ServerConfig, n_texts: int) -> None:
    """Load the demo collection once the server is up, then show one real query."""
    import threading

    from peregrine.demo import run_served_demo

    threading.Thread(target=run_served_demo, args=(config, n_texts), daemon=True,
                     name="demo-loader").start()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peregrine", description=__doc__)
    parser.add_argument("--version", action="version", version=peregrine.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="embed real text, store it, search it, print latency")
    demo.add_argument("--data", default="./data", help="database directory (default ./data)")
    demo.add_argument("--n", type=int, default=5000, help="number of texts (default 5000)")
    demo.set_defaults(func=_demo)
    serve = sub.add_parser("serve", help="run the Qdrant-compatible REST server",
                           description="Settings: defaults < --config TOML file < PEREGRINE_* "
                           "environment variables < flags (see docs/server.md).")
    serve.add_argument("--config", default=None, help="TOML config file")
    for flag, (key, kind, text) in _SERVE_FLAGS.items():
        if kind is bool:  # a switch: present means on, absent leaves the config's value
            serve.add_argument(flag, dest=key, action="store_const", const=True,
                               default=None, help=text)
        else:
            serve.add_argument(flag, dest=key, type=kind, default=None, help=text)
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

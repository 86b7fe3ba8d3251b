"""Command line: a run, ``--render-only``, and the internal subcommands the run spawns."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import httpbench
from httpbench.common import REPORT_MD, RESULTS_JSON
from httpbench.orchestrate import Bench
from httpbench.report import render
from httpbench.summary import print_table
from httpbench.workers import build_main, chroma_load_main, floor_server_main, worker_main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=httpbench.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="base vectors (default 200000)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries to use")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: n=20000 (unless --n), 3 s per throughput point")
    ap.add_argument("--passes", type=int, default=5, help="timed passes at 1 client")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per throughput point (default 10, quick 3)")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients")
    ap.add_argument("--skip-chroma", action="store_true")
    ap.add_argument("--no-http-ingest", dest="http_ingest", action="store_false",
                    help="skip loading the vectors once more through HTTP")
    ap.add_argument("--workdir", default="", help="data directories (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default=str(RESULTS_JSON))
    ap.add_argument("--out", default=str(REPORT_MD))
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the report from the results JSON")
    args = ap.parse_args(argv)
    args.n = args.n or (20_000 if args.quick else 200_000)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.clients = [int(c) for c in args.clients.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_worker", "_build", "_chroma_load", "_floor_server"):
        sub = argparse.ArgumentParser()
        for name in ("--client", "--target", "--queries", "--mode", "--dir", "--base", "--floor",
                     "--inproc", "--poller-pids"):
            sub.add_argument(name, default="")
        for name, default in (("--passes", 2), ("--warmup", 100), ("--threads", 1),
                              ("--offset", 0), ("--n", 0), ("--work-us", 0),
                              ("--server-pid", 0), ("--floor-pid", 0)):
            sub.add_argument(name, type=int, default=default)
        sub.add_argument("--duration", type=float, default=10.0)
        sargs = sub.parse_args(argv[1:])
        handler = {"_worker": worker_main, "_build": build_main,
                   "_chroma_load": chroma_load_main, "_floor_server": floor_server_main}[argv[0]]
        return handler(sargs)
    args = parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.out)
    if args.render_only:
        res = json.loads(json_path.read_text())
    else:
        res = Bench(args).run()
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render(res))
    print_table(res)
    print(f"\nwrote {md_path}" if args.render_only else f"\nwrote {json_path} and {md_path}")
    return 0

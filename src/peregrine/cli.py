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
    recover = None
    if args.storage_snapshot is not None:
        recover = bootstrap.StorageRecovery(Path(args.storage_snapshot), args.force_snapshot)
    return bootstrap.serve(settings, on_started, recover)


def _llm(args: argparse.Namespace) -> int:
    from peregrine import bootstrap

    overrides = {key: value for key, value in (
        ("http.port", args.port if args.port is not None else 8000), ("http.host", args.host),
        ("llm.model", args.model), ("llm.replicas", args.replicas),
        ("llm.threads", args.threads)) if value is not None}
    return bootstrap.serve_llm(bootstrap.load(args.config, overrides=overrides))


def _bench_llm(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    import orjson

    from peregrine.loadgen.llm import LoadConfig, run_load

    cfg = LoadConfig(url=args.url, concurrency=args.concurrency, duration_s=args.duration,
                     rate=args.rate, prompt_tokens=args.prompt_tokens,
                     shared_prefix=args.shared_prefix, max_tokens=args.max_tokens,
                     model=args.model, chat=args.chat, priority=args.priority,
                     api_key=args.api_key)
    summary = {"config": vars(cfg), **asyncio.run(run_load(cfg)).summary()}
    text = orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    if args.output:
        Path(args.output).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _mq(args: argparse.Namespace) -> int:
    from peregrine import bootstrap

    overrides: dict[str, object] = {
        f"mq.{k[3:]}": v for k, v in vars(args).items() if k.startswith("mq_") and v is not None}
    if args.nats:
        overrides["mq.nats"] = args.nats
    if args.data:
        overrides["data"] = args.data
    return bootstrap.serve_mq(bootstrap.load(args.config, overrides=overrides), args.service)


def _bench_mq(args: argparse.Namespace) -> int:
    from pathlib import Path

    import orjson

    from peregrine.loadgen.mq import MqLoad, run_processes

    cfg = MqLoad(nats=args.nats, subject=args.subject, concurrency=args.concurrency,
                 rate=args.rate, duration_s=args.duration, invalid=args.invalid)
    summary = run_processes(cfg, args.processes)
    table = summary.pop("table")
    text = orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    if args.output:
        Path(args.output).write_text(text + "\n")
    sys.stdout.write(table + "\n" + text + "\n")
    return 0


def _stream_settings(args: argparse.Namespace) -> tuple[object, str]:
    """[stream] settings of the config file and variables, with this command's flags."""
    import dataclasses

    from peregrine import bootstrap

    settings = bootstrap.load(args.config)
    changes = {k: v for k, v in (("nats", args.nats),
                                 ("vector_url", getattr(args, "vector_url", None))) if v}
    return dataclasses.replace(settings.stream, **changes), args.data or settings.data


def _worker(args: argparse.Namespace) -> int:
    from peregrine.stream.service import serve_worker

    stream, data = _stream_settings(args)
    return serve_worker(args.pipeline, stream, data, args.metrics_port)  # type: ignore[arg-type]


def _dlq(args: argparse.Namespace) -> int:
    import orjson

    from peregrine.stream.service import (
        dead_letters,
        delete_dead_letters,
        replay_dead_letters,
    )

    stream, data = _stream_settings(args)
    if args.action == "list":
        for letter in dead_letters(stream, data, args.pipeline, args.limit):  # type: ignore[arg-type]
            sys.stdout.write(orjson.dumps(letter).decode() + "\n")
    elif args.action == "replay":
        count = replay_dead_letters(stream, data, args.pipeline,  # type: ignore[arg-type]
                                    args.seq or None)
        sys.stdout.write(f"replayed {count}\n")
    else:
        count = delete_dead_letters(stream, data, args.pipeline,  # type: ignore[arg-type]
                                    args.seq or None)
        sys.stdout.write(f"deleted {count}\n")
    return 0


def _pipelines(args: argparse.Namespace) -> int:
    import orjson

    from peregrine.stream.service import pipelines

    stream, data = _stream_settings(args)
    for found in pipelines(stream, data):  # type: ignore[arg-type]
        sys.stdout.write(orjson.dumps(found).decode() + "\n")
    return 0


_SHORT_FLAGS = {"http.port": ("--port",), "http.host": ("--host",),
                "stream.nats": ("--nats",), "stream.nats_port": ("--nats-port",),
                "stream.nats_host": ("--nats-host",), "state.redis": ("--redis",)}


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
            # The bus is named often enough to have short flags too.
            flags = (setting.flag, *_SHORT_FLAGS.get(setting.key, ()))
            serve.add_argument(*flags, dest=_dest(setting.key), default=None,
                               metavar=setting.name.upper(), help=text)
    serve.add_argument("--demo", action="store_true",
                       help="load a real-text demo collection 'docs' and print an example query")
    serve.add_argument("--demo-n", type=int, default=2000, help="texts in the demo collection")
    serve.add_argument("--storage-snapshot", metavar="PATH", default=None,
                       help="recover this storage snapshot (every collection and alias) "
                       "into the data directory before serving; existing names are refused")
    serve.add_argument("--force-snapshot", action="store_true",
                       help="with --storage-snapshot: replace existing collections and "
                       "re-point existing aliases")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run a stream pipeline (module:attribute)",
                            description="Runs one pipeline; start more to share its work.")
    worker.add_argument("pipeline", help="module:attribute naming a Pipeline")
    pipes = sub.add_parser("pipelines", help="list the pipelines on the bus, with their lag "
                           "and dead letters (one JSON line each)")
    dlq = sub.add_parser("dlq", help="list, replay or delete a pipeline's dead letters")
    dlq.add_argument("action", choices=("list", "replay", "delete"))
    dlq.add_argument("pipeline", help="the pipeline's name")
    dlq.add_argument("--limit", type=int, default=100, help="most letters listed")
    dlq.add_argument("--seq", type=int, action="append",
                     help="replay or delete only this dead-letter sequence (repeatable)")
    for command in (worker, dlq, pipes):
        command.add_argument("--config", default=None, help="TOML config file")
        command.add_argument("--data", default=None, help="data directory of the local "
                             "`peregrine serve`, where its NATS URL is recorded")
        command.add_argument("--nats", default=None, help="NATS URL ([stream] nats)")
    worker.add_argument("--url", "--vector-url", dest="vector_url", default=None,
                        help="Peregrine server to write to ([stream] vector_url)")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics on this port")
    worker.set_defaults(func=_worker)
    dlq.set_defaults(func=_dlq)
    pipes.set_defaults(func=_pipelines)
    llm = sub.add_parser("llm", help="serve a language model behind the OpenAI API (/v1)",
                         description="Continuous batching over llama.cpp; the built-in "
                         "Gemma 3 270M unless --model names a GGUF file. Other [llm] "
                         "settings come from --config and PEREGRINE_LLM_* variables.")
    llm.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    llm.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1)")
    llm.add_argument("--model", default=None, help="GGUF file ([llm] model)")
    llm.add_argument("--replicas", type=int, default=None,
                     help="engine processes behind a router ([llm] replicas)")
    llm.add_argument("--threads", type=int, default=None, help="llama.cpp threads per "
                     "engine ([llm] threads; default: the cores, shared among replicas)")
    llm.add_argument("--config", default=None, help="TOML config file")
    llm.set_defaults(func=_llm)
    mq = sub.add_parser("mq", help="run a message-queue service (module:attribute)",
                        description="One worker of a request/reply service on NATS; start "
                        "more to share its queue group. SIGTERM drains it. Other [mq] "
                        "settings come from --config and PEREGRINE_MQ_* variables.")
    mq.add_argument("service", help="module:attribute naming a peregrine.mq Service")
    mq.add_argument("--nats", default=None, help="NATS URL(s) ([mq] nats)")
    mq.add_argument("--data", default=None, help="directory for the service's local state")
    for flag, key in (("--tls-ca", "tls_ca"), ("--tls-cert", "tls_cert"),
                      ("--tls-key", "tls_key"), ("--creds", "creds"),
                      ("--nkey-seed", "nkey_seed"), ("--token", "token"), ("--user", "user"),
                      ("--password", "password"), ("--drain-s", "drain_s"),
                      ("--metrics-port", "metrics_port")):
        mq.add_argument(flag, dest="mq_" + key, default=None, help=f"[mq] {key}")
    mq.add_argument("--config", default=None, help="TOML config file")
    mq.set_defaults(func=_mq)
    bench = sub.add_parser("bench", help="load generators (bench llm: any OpenAI server; "
                           "bench mq: NATS request/reply)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    bl = bench_sub.add_parser("llm", help="streaming load on an OpenAI-compatible server: "
                              "TTFT, inter-token and end-to-end latency, tokens/s")
    bl.add_argument("--url", required=True, help="the server (http://host:port[/v1])")
    bl.add_argument("--concurrency", type=int, default=8, help="clients (closed loop)")
    bl.add_argument("--rate", type=float, default=0.0,
                    help="requests a second (open loop; overrides --concurrency)")
    bl.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    bl.add_argument("--prompt-tokens", type=int, default=64)
    bl.add_argument("--shared-prefix", type=int, default=0,
                    help="tokens of preamble every prompt shares")
    bl.add_argument("--max-tokens", type=int, default=64)
    bl.add_argument("--model", default="")
    bl.add_argument("--chat", action="store_true", help="chat completions (else completions)")
    bl.add_argument("--priority", default=None, help="x-priority header")
    bl.add_argument("--api-key", default="none")
    bl.add_argument("--output", default=None, help="write the summary here (JSON)")
    bl.set_defaults(func=_bench_llm)
    bm = bench_sub.add_parser("mq", help="order requests on NATS: HDR percentiles, throughput")
    bm.add_argument("--nats", required=True, help="NATS URL")
    bm.add_argument("--subject", default="orders.in")
    bm.add_argument("--concurrency", type=int, default=1, help="requests in flight "
                    "(closed loop)")
    bm.add_argument("--rate", type=float, default=0.0,
                    help="requests a second (open loop; overrides --concurrency)")
    bm.add_argument("--duration", type=float, default=10.0)
    bm.add_argument("--invalid", type=float, default=0.1, help="share of invalid orders")
    bm.add_argument("--processes", type=int, default=1, help="load-generator processes")
    bm.add_argument("--output", default=None, help="write the summary here (JSON)")
    bm.set_defaults(func=_bench_mq)
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

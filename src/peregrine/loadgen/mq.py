"""``peregrine bench mq``: order requests on NATS, timed as HDR histograms.

Orders are random ``finance.Order`` FlatBuffers (``schemas/order.fbs``), built
with the flatbuffers runtime: realistic symbols, prices and sizes, with a share
``invalid`` that breaks one rule each (or is not an Order at all). Closed loop:
``concurrency`` requests in flight per process, each sent when the last came
back. Open loop: ``rate`` requests a second per process, sent on schedule
whatever the answers, and timed from when each was due, so a server that falls
behind shows its queueing (no coordinated omission). Several processes
(``--processes``) keep the client from being the ceiling; their histograms are
merged.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import flatbuffers
from hdrh.histogram import HdrHistogram

_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V",
            "XOM", "SPY", "QQQ", "EURUSD", "BTC-USD")
_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class MqLoad:
    nats: str
    subject: str = "orders.in"
    concurrency: int = 1
    rate: float = 0.0
    duration_s: float = 10.0
    invalid: float = 0.1
    seed: int = 0
    warmup_s: float = 1.0
    timeout_s: float = 2.0
    payload: str = "flatbuffers"  # or "json" (the same orders as JSON objects)


def build_order(order_id: int, symbol: str | None, price: float, quantity: int, side: int,
                timestamp: int) -> bytes:
    """A ``finance.Order`` (field slots as ``schemas/order.fbs`` declares them)."""
    b = flatbuffers.Builder(64)
    sym = b.CreateString(symbol) if symbol is not None else None
    b.StartObject(6)
    b.PrependUint64Slot(0, order_id, 0)
    if sym is not None:
        b.PrependUOffsetTRelativeSlot(1, sym, 0)
    b.PrependFloat64Slot(2, price, 0.0)
    b.PrependUint32Slot(3, quantity, 0)
    b.PrependInt8Slot(4, side, 0)
    b.PrependUint64Slot(5, timestamp, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def make_orders(n: int, invalid: float, seed: int, as_json: bool = False) -> list[bytes]:
    """``n`` orders, a share ``invalid`` of them breaking one rule each (FlatBuffers, or
    the same fields as JSON objects)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        symbol: str | None = rng.choice(_SYMBOLS)
        price = round(rng.lognormvariate(4.5, 0.8), 2)
        quantity, side = rng.choice((1, 5, 10, 50, 100, 500)), rng.randrange(2)
        if rng.random() < invalid:
            broken = rng.randrange(6)
            if broken == 0:
                price = rng.choice((0.0, -1.5, float("nan"), float("inf")))
            elif broken == 1:
                quantity = 0
            elif broken == 2:
                side = rng.choice((2, 7, -1))
            elif broken == 3:
                symbol = rng.choice(("", "lowercase", "TOO-LONG-SYMBOL", "A B", "€UR"))
            elif broken == 4:
                out.append(rng.randbytes(rng.randrange(1, 40)))  # not an Order at all
                continue
            else:
                symbol = None
        if as_json:
            out.append(json.dumps({"id": i, "symbol": symbol, "price": price,
                                   "quantity": quantity, "side": side,
                                   "timestamp": time.time_ns()}).encode())
        else:
            out.append(build_order(i, symbol, price, quantity, side, time.time_ns()))
    return out


async def _load(cfg: MqLoad) -> dict[str, Any]:
    import nats

    orders = make_orders(4096, cfg.invalid, cfg.seed, as_json=cfg.payload == "json")
    hist = HdrHistogram(1, 60_000_000, 3)
    counts = {"ok": 0, "error": 0, "timeout": 0}
    nc = await nats.connect(cfg.nats)
    i = 0
    async def one(due: float, record: bool) -> None:
        """One request, timed from when it was due; a timeout counts at the timeout."""
        nonlocal i
        payload = orders[i % len(orders)]
        i += 1
        try:
            msg = await nc.request(cfg.subject, payload, timeout=cfg.timeout_s)
        except Exception:
            if record:
                counts["timeout"] += 1
                hist.record_value(max(1, min(int(cfg.timeout_s * 1e6), 60_000_000)))
            return
        if record:
            micros = (time.perf_counter() - due) * 1e6
            hist.record_value(max(1, min(int(micros), 60_000_000)))
            counts["error" if msg.headers and "Nats-Service-Error-Code" in msg.headers
                   else "ok"] += 1

    started = time.perf_counter()
    end = started + cfg.warmup_s + cfg.duration_s
    measured_from = started + cfg.warmup_s
    if cfg.rate > 0:
        tasks: set[asyncio.Task[None]] = set()
        gap, due = 1.0 / cfg.rate, started
        while due < end:
            wait = due - time.perf_counter()
            if wait > 0.002:  # the loop's timers are coarse: sleep most of it, then spin
                await asyncio.sleep(wait - 0.002)
            while time.perf_counter() < due:
                pass
            task = asyncio.create_task(one(due, due >= measured_from))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += gap
        await asyncio.gather(*tasks)
    else:
        async def client() -> None:
            while (now := time.perf_counter()) < end:
                await one(now, now >= measured_from)

        await asyncio.gather(*(client() for _ in range(cfg.concurrency)))
    await nc.close()
    return {"histogram": hist.encode().decode(), "counts": counts,
            "seconds": cfg.duration_s}


def run(cfg: MqLoad) -> dict[str, Any]:
    return asyncio.run(_load(cfg))


def run_processes(cfg: MqLoad, processes: int = 1) -> dict[str, Any]:
    """The load from ``processes`` processes at once; merged percentiles (µs) and
    throughput, and a printable table."""
    if processes <= 1:
        parts = [run(cfg)]
    else:
        procs = []
        for p in range(processes):
            one = asdict(cfg) | {"seed": cfg.seed + p}
            procs.append(subprocess.Popen([sys.executable, "-m", "peregrine.loadgen.mq",
                                           json.dumps(one)], stdout=subprocess.PIPE))
        parts = [json.loads(proc.communicate()[0]) for proc in procs]
    merged = HdrHistogram(1, 60_000_000, 3)
    counts = {"ok": 0, "error": 0, "timeout": 0}
    for part in parts:
        merged.decode_and_add(part["histogram"])
        for k in counts:
            counts[k] += part["counts"][k]
    answered = counts["ok"] + counts["error"]
    # Processes start one after another: their windows overlap almost wholly, and the
    # rate is counted over one window.
    summary: dict[str, Any] = {
        "config": asdict(cfg), "processes": processes, **counts,
        "throughput_per_s": answered / cfg.duration_s,
        **{f"p{q:g}_us": merged.get_value_at_percentile(q) for q in _PERCENTILES},
        "max_us": merged.get_max_value(), "mean_us": merged.get_mean_value()}
    header = "| p50 | p90 | p99 | p99.9 | max | requests/s |"
    row = "| " + " | ".join(f"{summary[f'p{q:g}_us']} µs" for q in _PERCENTILES) + \
        f" | {summary['max_us']} µs | {summary['throughput_per_s']:,.0f} |"
    summary["table"] = "\n".join([header, "|---|---|---|---|---|---|", row])
    return summary


if __name__ == "__main__":  # one process of run_processes
    sys.stdout.write(json.dumps(run(MqLoad(**json.loads(sys.argv[1])))))

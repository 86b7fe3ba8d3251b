"""Settings, kinds of path and their labels, shared by the HTTP benchmark's modules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# The script the run starts its workers, helper servers and loaders with (bench/ on sys.path).
ENTRY = ROOT / "bench" / "http_bench.py"
PEERS_PY = ROOT / ".venv-peers" / "bin" / "python"
RESULTS_JSON = ROOT / "bench" / "results" / "http_bench.json"
REPORT_MD = ROOT / "docs" / "benchmarks-http.md"

K = 10
EF = 64  # search ef everywhere (Peregrine's default, set explicitly on Chroma)
M, EF_CONSTRUCTION = 16, 100  # as bench/systems.py
COLLECTION = "bench"
CHROMA_BATCH = 5000  # under Chroma's max batch size (5461 here)
HTTP_INGEST_BATCH = 1000
GREEN_WAIT_S = 300  # longest wait for the HTTP-ingested collection to finish indexing

# The targets at 200k x 384.
TARGET_P99_MS = 2.0
TARGET_OVERHEAD_P50_MS = 0.5
TARGET_CHROMA_RATIO = 2.0

LATENCY_BLOCK = 100  # queries a path runs in a row in the latency phase
PEREGRINE_CLIENTS = ("peregrine-json", "peregrine-msgpack", "peregrine-json-stdlib",
                     "qdrant-client")
CHROMA_CLIENTS = ("chroma", "chroma-raw")
# Control row: the same uvicorn stack serving an app that only busy-waits as long as the
# in-process search takes (p50) and returns a fixed answer. Its p99 is what this machine
# allows a request of that length, whatever the server does.
FLOOR = "http-floor"
# The in-process engine again, on a copy of the data directory opened by the latency
# client while the server runs, its blocks taking turns with the HTTP paths: the HTTP
# overhead is then measured at the same moments, not across this machine's drift.
INPROC_PAIRED = "inproc-paired"
# The same path again with the server's threads on one vCPU and the client on another
# (bench/cpu_pinning.py says why); latency only, taking turns with the unpinned paths.
PINNED = "+pinned"
PINNED_PEREGRINE = ("peregrine-json", "peregrine-msgpack", FLOOR)
PINNED_CHROMA = ("chroma",)
# The same path again with idle vCPUs polling instead of halting, as `peregrine serve
# --runtime-idle-poll` runs (src/peregrine/runtime/idle_poll.py): this run starts those
# pollers, stopped, and the client resumes them for these rows' blocks only, because their
# effect is machine-wide and the other rows must not get it. Latency only.
IDLE_POLL = "+idlepoll"
IDLE_POLL_FLAG = "--runtime-idle-poll"  # the `peregrine serve` flag that starts those pollers
IDLE_POLL_PEREGRINE = PINNED_PEREGRINE
IDLE_POLL_CHROMA = PINNED_CHROMA
VARIANT_SETTLE = 10  # untimed queries at the start of a pinned or idle-poll block
LABELS = {
    "inproc": "Peregrine in-process (`Collection.search`)",
    "peregrine-json": "Peregrine HTTP, JSON (lean keep-alive socket client)",
    "peregrine-msgpack": "Peregrine HTTP, msgpack binary (lean keep-alive socket client)",
    "peregrine-json-stdlib": "Peregrine HTTP, JSON (`http.client` keep-alive)",
    "qdrant-client": "Peregrine HTTP via qdrant-client 1.15 (REST `query_points`, no payload)",
    "chroma": "Chroma HTTP, its own client (`HttpClient`, `collection.query`)",
    "chroma-raw": "Chroma HTTP, raw JSON (lean keep-alive socket client), reference only",
    INPROC_PAIRED: "Peregrine in-process, taking turns with the HTTP paths (copy of the data "
                   "directory)",
    FLOOR: "Control: uvicorn + an app that only waits the in-process p50 (no search, no "
           "parsing; lean client, JSON)",
}
LABELS.update({kind + PINNED: LABELS[kind] + "; **server and client pinned to separate vCPUs**"
               for kind in (*PINNED_PEREGRINE, *PINNED_CHROMA)})
LABELS.update({kind + IDLE_POLL: LABELS[kind] + f"; **idle vCPUs polling** (`{IDLE_POLL_FLAG}`)"
               for kind in (*IDLE_POLL_PEREGRINE, *IDLE_POLL_CHROMA)})


def base_kind(kind: str) -> str:
    return kind.removesuffix(PINNED).removesuffix(IDLE_POLL)


def pct(values: Sequence[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0

"""HTTP search benchmark: Peregrine's REST server vs its in-process engine vs Chroma's server.

Answers, side by side in one run on the same cached all-MiniLM-L6-v2 vectors
(``bench/dataset.py``), the questions of the HTTP performance issue:

* single-client latency (p50/p99 over 5 passes (default) of the 1000 held-out
  queries, after a warm-up pass) of Peregrine's in-process engine, its HTTP
  search with a JSON body, with the msgpack binary fast path and through
  qdrant-client, and of Chroma's HTTP server through its own Python client;
* throughput (requests/s) at 1, 4 and 16 concurrent clients, each client a
  separate process with its own keep-alive connection, each running for a
  fixed duration over the query set (the in-process engine: threads in one
  process, as a directory can be opened by one process only);
* recall@10 of every path against exact ground truth, so that every path is
  known to have done real work, and the median Server-Timing split
  (parse / engine / serialize) of Peregrine's responses.

Each server runs alone (never both at once) and is stopped with SIGTERM after
its phase. Peregrine's result cache is disabled (``--vector-cache-entries 0``)
and both servers' per-request logging is off. Everything talking to Chroma runs
under ``.venv-peers/bin/python`` (its pins clash with ours), by re-running
``bench/http_bench.py`` there as a worker; this package therefore imports only
the standard library and numpy at module level.

    .venv/bin/python bench/http_bench.py             # 200k x 384, ~15 min
    .venv/bin/python bench/http_bench.py --quick     # 20k, 3 s per point: smoke test
    .venv/bin/python bench/http_bench.py --render-only

Writes ``bench/results/http_bench.json`` and ``docs/benchmarks-http.md``.
"""

from __future__ import annotations

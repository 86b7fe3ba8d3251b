"""Upsert throughput, side by side with another revision's engine.

Each round runs one fresh process per revision (alternating, so both see the
same machine noise) that upserts the same real-text vectors in batches of
1,000 with an integer payload field under a declared index, while the
background optimizer does whatever its policy does meanwhile, as a client's
ingest would see it. Reports points/s per round, the median per revision and
their ratio.

    git worktree add /tmp/base <rev>
    python bench/upsert_ab.py --baseline-src /tmp/base/src --n 200000

Writes bench/results/upsert_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "upsert_ab.json"

CHILD = r"""
import json, sys, tempfile, time
import numpy as np
import peregrine
base = np.load(sys.argv[1], mmap_mode="r")
n, batch = int(sys.argv[2]), int(sys.argv[3])
vectors = np.ascontiguousarray(base[:n])
with tempfile.TemporaryDirectory() as d:
    db = peregrine.open(d)
    c = db.create_collection("ab", vectors.shape[1], "cosine",
                             index={"m": 16, "ef_construction": 100})
    c.create_payload_index("bucket", "integer")
    began = time.perf_counter()
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        c.upsert(np.arange(start, stop), vectors[start:stop],
                 [{"bucket": i % 100} for i in range(start, stop)])
    took = time.perf_counter() - began
    db.close()
print(json.dumps({"points_per_s": n / took, "seconds": took}))
"""


def run(src: Path, base: Path, n: int, batch: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEREGRINE_")}
    env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", CHILD, str(base), str(n), str(batch)],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-src", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from dataset import dataset_dir

    cached = sorted(p for p in dataset_dir(args.n, 1000).parent.glob("minilm-b*-q1000")
                    if int(p.name.split("-b")[1].split("-")[0]) >= args.n)
    if not cached:
        raise SystemExit("no cached dataset of that size: run bench/dataset.py first")
    base = cached[0] / "base.npy"
    revisions = {"baseline": args.baseline_src.resolve(), "this": ROOT / "src"}
    rounds: dict[str, list[float]] = {name: [] for name in revisions}
    for i in range(args.rounds):
        for name, src in (revisions.items() if i % 2 == 0 else reversed(revisions.items())):
            rate = run(src, base, args.n, args.batch)["points_per_s"]
            rounds[name].append(rate)
            print(f"round {i + 1} {name:8s} {rate:10.0f} points/s", flush=True)
    median = {name: statistics.median(rates) for name, rates in rounds.items()}
    result = {
        "command": "python bench/upsert_ab.py " + " ".join(sys.argv[1:]),
        "n": args.n, "batch": args.batch, "rounds": rounds, "median_points_per_s": median,
        "ratio_this_to_baseline": median["this"] / median["baseline"],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    ratio = result["ratio_this_to_baseline"]
    print(json.dumps(result["median_points_per_s"]), f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()

"""What ``[llm] batch_invariant`` costs: the same decode shapes in the default mode
and the batch-invariant one, alternating in one run, each in a process of its own
(the two modes load different builds of llama.cpp).

Shapes: a 512-token prompt prefilled in one step, a step of 8 sequences decoding
one token each, and a step of one sequence. Each child reports its best of three
rounds; the table shows the median over ``--runs`` children per mode and the
ratio invariant / default.

    python bench/llm_invariance.py [--runs 3] [--threads 2]

writes ``bench/results/llm_invariance.json`` and ``docs/llm-invariance.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ROOT, provenance

SHAPES = ("prefill_512_ms", "step_8_seqs_ms", "step_1_seq_ms")


def child(invariant: bool, threads: int) -> dict[str, float]:
    from peregrine.serve.model import LlamaModel, default_model_path

    m = LlamaModel(default_model_path(), slots=8, n_ctx=8192, n_batch=512,
                   threads=threads, batch_invariant=invariant)
    tokens = np.random.default_rng(0).integers(1000, 20000, 512).astype(np.int32)
    best = dict.fromkeys(SHAPES, float("inf"))

    def decode(n: int, pos: list[int], seqs: list[int]) -> None:
        outs = np.zeros(n, dtype=bool)
        outs[-1] = True
        m.decode(tokens[:n], np.asarray(pos, np.int32), np.asarray(seqs, np.int32), outs)

    for _ in range(3):
        for s in range(8):
            m.seq_clear(s)
        t = time.perf_counter()
        decode(512, list(range(512)), [0] * 512)
        best["prefill_512_ms"] = min(best["prefill_512_ms"], (time.perf_counter() - t) * 1e3)
        for s in range(1, 8):
            decode(64, list(range(64)), [s] * 64)
        t = time.perf_counter()
        for i in range(20):
            decode(8, [512 + i] + [64 + i] * 7, list(range(8)))
        best["step_8_seqs_ms"] = min(best["step_8_seqs_ms"],
                                     (time.perf_counter() - t) / 20 * 1e3)
        t = time.perf_counter()
        for i in range(20):
            decode(1, [532 + i], [0])
        best["step_1_seq_ms"] = min(best["step_1_seq_ms"],
                                    (time.perf_counter() - t) / 20 * 1e3)
    m.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=("default", "invariant"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "invariant", args.threads)))
        return
    runs: dict[str, list[dict[str, float]]] = {"default": [], "invariant": []}
    for _ in range(args.runs):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--threads",
                                  str(args.threads)], capture_output=True, text=True,
                                 check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {mode: {k: statistics.median(r[k] for r in rs) for k in SHAPES}
              for mode, rs in runs.items()}
    ratio = {k: median["invariant"][k] / median["default"][k] for k in SHAPES}
    result = {**provenance("llm_invariance.py"), "threads": args.threads,
              "median": median, "ratio": ratio, "runs": runs}
    (ROOT / "bench/results/llm_invariance.json").write_text(json.dumps(result, indent=1))
    rows = "\n".join(f"| {k} | {median['default'][k]:.1f} | {median['invariant'][k]:.1f} "
                     f"| {ratio[k]:.2f}x |" for k in SHAPES)
    (ROOT / "docs/llm-invariance.md").write_text(f"""# What batch invariance costs

`{result['command']}` on {result['machine']}, {result['date']}, commit
{result['git']}; Gemma 3 270M Q4_K_M, {args.threads} threads. Median of
{args.runs} processes per mode, each its best of three rounds, modes alternating.

| shape | default (ms) | batch_invariant (ms) | ratio |
|---|---|---|---|
{rows}
""")
    print(rows)


if __name__ == "__main__":
    main()

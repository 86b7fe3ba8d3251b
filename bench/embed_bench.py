"""Peregrine's ONNX embedder vs sentence-transformers ``encode``, side by side.

One run, same real texts (``corpus.real_text_corpus``: Python docstrings and
Debian package descriptions found offline), same process: sentence-transformers
one text at a time and at batch sizes 8/32/64, then Peregrine's embedder
(int8 and float32 ONNX graphs) the same ways. Rounds are interleaved so that
load from other jobs on the shared machine hits every contender alike; the
best round per contender is kept. Cosine is each text's vector vs the
sentence-transformers vector of the same text (min and mean).

    python bench/embed_bench.py --n 1000

Writes bench/results/embed_bench.json and docs/embed-benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

BATCHES = (1, 8, 32, 64)


def _rate(fn: Callable[[], np.ndarray], n: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t0), out


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="texts (default 1000)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args(argv)

    import onnxruntime
    import sentence_transformers
    import torch

    from corpus import real_text_corpus
    from peregrine.embed import TextEmbedder

    texts = real_text_corpus(args.n, seed=0)
    torch.set_num_threads(args.threads)
    st = TextEmbedder(backend="torch", num_threads=args.threads)._model
    assert st is not None
    ref = st.encode(texts, batch_size=32, normalize_embeddings=True)
    ours = {
        "int8": TextEmbedder(int8=True, num_threads=args.threads, onnx_batch=64),
        "fp32": TextEmbedder(int8=False, num_threads=args.threads, onnx_batch=64),
    }

    def st_run(bs: int) -> Callable[[], np.ndarray]:
        if bs == 1:
            return lambda: np.vstack([st.encode([t], normalize_embeddings=True) for t in texts])
        return lambda: st.encode(texts, batch_size=bs, normalize_embeddings=True)

    def our_run(emb: TextEmbedder, bs: int) -> Callable[[], np.ndarray]:
        if bs == 1:
            return lambda: np.vstack([emb.encode([t]) for t in texts])
        return lambda: emb.encode(texts, batch_size=bs)

    runs: dict[tuple[str, int], Callable[[], np.ndarray]] = {}
    for bs in BATCHES:
        runs[("sentence-transformers", bs)] = st_run(bs)
        for name, emb in ours.items():
            runs[(f"peregrine-onnx-{name}", bs)] = our_run(emb, bs)
    best: dict[tuple[str, int], float] = {}
    cos: dict[tuple[str, int], np.ndarray] = {}
    for _ in range(args.rounds):
        for key, fn in runs.items():
            rate, out = _rate(fn, len(texts))
            best[key] = max(best.get(key, 0.0), rate)
            cos[key] = (out * ref).sum(axis=1)
    st_best = max(v for (who, _), v in best.items() if who == "sentence-transformers")
    rows = [
        {
            "embedder": who, "batch": bs, "texts_per_s": round(best[(who, bs)], 1),
            "ratio_to_st_best": round(best[(who, bs)] / st_best, 2),
            "cos_min": round(float(cos[(who, bs)].min()), 5),
            "cos_mean": round(float(cos[(who, bs)].mean()), 5),
        }
        for (who, bs) in runs
    ]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lengths = [len(st.tokenizer(t)["input_ids"]) for t in texts]
    result = {
        "command": "python bench/embed_bench.py " + " ".join(argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)), "processor": platform.processor()
            or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
            "onnxruntime": onnxruntime.__version__, "threads": args.threads,
        },
        "texts": {"n": len(texts), "source": "bench/corpus.py real_text_corpus(seed=0)",
                  "tokens_mean": round(float(np.mean(lengths)), 1), "tokens_max": max(lengths)},
        "rounds": args.rounds,
        "st_best_texts_per_s": round(st_best, 1),
        "rows": rows,
    }
    out = ROOT / "bench" / "results" / "embed_bench.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "docs" / "embed-benchmark.md").write_text(render(result))
    for r in rows:
        print(f"{r['embedder']:28} b={r['batch']:<3} {r['texts_per_s']:8.1f}/s "
              f"x{r['ratio_to_st_best']:<5} cos min {r['cos_min']:.4f} mean {r['cos_mean']:.4f}")
    return 0


def render(res: dict[str, object]) -> str:
    """The docs page, generated from the JSON only."""
    r: dict[str, object] = res
    m = r["machine"]
    t = r["texts"]
    assert isinstance(m, dict) and isinstance(t, dict) and isinstance(r["rows"], list)
    lines = [
        "# Text embedding benchmark",
        "",
        "Generated by `bench/embed_bench.py` from `bench/results/embed_bench.json`; do not edit.",
        "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}, git commit `{r['git_commit']}`",
        f"- Machine: {m['cpus']} CPUs ({m['processor']}), {m['threads']} threads; "
        f"Python {m['python']}, torch {m['torch']}, sentence-transformers "
        f"{m['sentence_transformers']}, onnxruntime {m['onnxruntime']}",
        f"- Texts: {t['n']} real texts from {t['source']}, {t['tokens_mean']} tokens on "
        f"average (max {t['tokens_max']})",
        f"- Best of {r['rounds']} interleaved rounds per row; the machine is shared, so "
        "read the ratios (measured side by side), not the absolute rates.",
        f"- sentence-transformers' best: {r['st_best_texts_per_s']} texts/s",
        "",
        "| embedder | batch | texts/s | × ST best | cos min | cos mean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['embedder']} | {row['batch']} | {row['texts_per_s']} | "
            f"{row['ratio_to_st_best']} | {row['cos_min']:.4f} | {row['cos_mean']:.4f} |"
        )
    lines += [
        "",
        "Batch 1 calls `encode` once per text. Peregrine's default is `peregrine-onnx-int8` "
        "(outlier input channels kept in float, see `src/peregrine/embed/_export.py`); "
        "`TextEmbedder` caps ONNX batches at 8 by default (`onnx_batch`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

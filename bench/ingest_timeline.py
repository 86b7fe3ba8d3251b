"""Search latency, indexing backlog and memory while vectors stream in, and after.

Ingests N real-text vectors (the cached all-MiniLM-L6-v2 dataset of
``bench/dataset.py``, 384-d, cosine) through Peregrine's API in batches of
1,000, embedded (``Collection.upsert``) and/or over HTTP (``peregrine serve``,
``PUT /collections/{c}/points?wait=true``), with payload ``bucket = i % 100``
under an integer payload index created before the first write. From the first
acknowledged batch until ``--tail-s`` after the last write, a sampler thread
measures every ``--interval-s``:

* single-query search latency p50/p99 (ef ``--ef``, unfiltered) over a rotating
  window of ``--queries-per-sample`` held-out queries, and their recall@10
  against exact ground truth over the rows acknowledged at the time;
* the collection's segments, unindexed rows (points - indexed points) and status;
* RSS of the process holding the data (the subject itself, or the server).

A poller thread also reads the collection's info and RSS every 0.5 s (no
searches), for the plots and for when the status turned green.

After the tail, ef sweeps (``--efs``) unfiltered and with a 1% filter
(``bucket == 7``) and a 50% filter (``bucket < 50``) give the cheapest ef that
reaches recall@10 >= 0.95 ("at equal recall"); embedded, the same again after
``optimize()``. Beside them, each in its own process on the same vectors: a bare
FAISS ``IndexHNSWFlat`` (its build time and RSS are the yardsticks) and Qdrant's
engine embedded (``qdrant-edge-py``, same m / ef_construct, payload index on
``bucket``, after its ``optimize()``). Each subject runs in its own process
(``bench/ingest_timeline_subjects.py``) so that RSS growth is its own.

The issue's targets are checked and written with two plots (latency and RSS
against time) to ``--doc``; everything measured goes to ``--out``.

    .venv/bin/python bench/ingest_timeline.py --n 200000            # the full run, ~20 min
    .venv/bin/python bench/ingest_timeline.py --n 20000 --tail-s 20  # smoke test
    .venv/bin/python bench/ingest_timeline.py --quantization int8 \\
        --out bench/results/ingest_timeline_int8.json --doc docs/ingest-benchmark-int8.md
    .venv/bin/python bench/ingest_timeline.py --render-only          # doc from --out

The dataset must be cached (``bench/dataset.py --n N``); if only a larger one
is, its first N rows are used and exact ground truth is recomputed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# bench/ is sys.path[0] when this runs as a script: its modules import as top-level names.
from dataset import cache_root, dataset_dir, exact_topk
from ingest_timeline_subjects import (
    EF_CONSTRUCTION,
    FILTER_NAMES,
    FILTERS,
    QDRANT_FULL_SCAN_KB,
    K,
    M,
    filter_mask,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SUBJECTS_PY = BENCH / "ingest_timeline_subjects.py"
RECALL_TARGET = 0.95
# The issue's bounds.
STEADY_VS_OPTIMIZED = 1.3
STEADY_WITHIN_FAISS_BUILD = 1.2
BACKLOG_P50_MS = 10.0
RSS_VS_FAISS = {"none": 1.5, "int8": 1.0}
THROUGHPUT_TOLERANCE = 0.9  # "unchanged": at least this fraction of a baseline run's
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MODE_SUBJECTS = {"embedded": "peregrine", "http": "peregrine-http"}
LABELS = {"peregrine": "Peregrine embedded", "peregrine-http": "Peregrine HTTP",
          "faiss": "FAISS HNSWFlat (raw)", "qdrant-edge": "Qdrant edge (qdrant-edge-py)"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------
def prepare_data(n: int, n_queries: int, work: Path) -> dict[str, Any]:
    """Queries and exact ground truth (unfiltered, 1%, 50%) into ``work``; the base's path."""
    exact = dataset_dir(n, 1000)
    if (exact / "meta.json").exists():
        path, source = exact, f"cache {exact.name}"
    else:
        sizes = []
        for d in cache_root().glob("minilm-b*-q1000"):
            if (d / "meta.json").exists():
                rows = int(json.loads((d / "meta.json").read_text())["n_base"])
                if rows >= n:
                    sizes.append((rows, d))
        if not sizes:
            raise SystemExit(f"no cached dataset with >= {n} rows under {cache_root()}; "
                             f"run: .venv/bin/python bench/dataset.py --n {n}")
        path = min(sizes)[1]
        source = f"first {n} rows of cache {path.name}"
    meta = json.loads((path / "meta.json").read_text())
    base = np.load(path / "base.npy", mmap_mode="r")[:n]
    queries = np.ascontiguousarray(np.load(path / "queries.npy")[:n_queries], dtype=np.float32)
    np.save(work / "queries.npy", queries)
    t0 = time.perf_counter()
    base_ram = np.asarray(base, dtype=np.float32)
    for name in FILTER_NAMES:
        if name == "none" and path == exact:
            truth = np.load(path / "gt_ids.npy")[:n_queries, :K]
        else:
            mask = None if name == "none" else filter_mask(name, n)
            truth, _ = exact_topk(base_ram, queries, K, mask=mask)
        np.save(work / f"truth-{name.rstrip('%')}.npy", truth)
    log(f"data: {source}, {n_queries} queries, ground truth in {time.perf_counter() - t0:.1f} s")
    return {"n": n, "dim": int(base.shape[1]), "queries": int(queries.shape[0]),
            "source": source, "base_path": str(path / "base.npy"), "model": meta.get("model"),
            "corpus": meta.get("sources")}


def prefix_topk(base: npt.NDArray[np.float32], q: npt.NDArray[np.float32],
                lo: npt.NDArray[np.int64], k: int, block: int = 32768
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact top-k by inner product of each query among rows ``0..lo[i]-1``."""
    s = q.shape[0]
    best_ids = np.full((s, k), -1, dtype=np.int64)
    best = np.full((s, k), -np.inf, dtype=np.float32)
    for start in range(0, int(lo.max(initial=0)), block):
        stop = min(int(lo.max()), start + block)
        scores = q @ np.asarray(base[start:stop], dtype=np.float32).T
        scores[np.arange(start, stop)[None, :] >= lo[:, None]] = -np.inf
        kk = min(k, stop - start)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        ids = np.concatenate([best_ids, part + start], axis=1)
        sc = np.concatenate([best, np.take_along_axis(scores, part, axis=1)], axis=1)
        keep = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        best_ids = np.take_along_axis(ids, keep, axis=1)
        best = np.take_along_axis(sc, keep, axis=1)
    return best_ids, best


def sample_recall(raw: dict[str, Any], base: npt.NDArray[np.float32],
                  queries: npt.NDArray[np.float32], truth: npt.NDArray[np.int32]
                  ) -> tuple[float | None, int]:
    """Recall@10 of one timeline sample against the rows visible to each query.

    Rows ``0..lo-1`` were acknowledged before the query was sent; rows up to
    ``hi`` may have been visible (the batch in flight). The reference for a
    query is the exact top-10 over the acknowledged rows plus the in-flight rows
    the engine did return: a row in flight that it did not return cannot be
    told apart from one not yet visible, so it is not counted as a miss.
    """
    n = base.shape[0]
    qidx = np.asarray(raw["queries"], dtype=np.int64)
    lo = np.asarray(raw["lo"], dtype=np.int64)
    hi = np.asarray(raw["hi"], dtype=np.int64)
    found: list[list[int]] = raw["found"]
    hits = total = 0
    if bool(np.all(lo >= n)):
        for f, j in zip(found, qidx, strict=True):
            want = {int(x) for x in truth[j][:K] if x >= 0}
            hits += len(want & set(f[:K]))
            total += len(want)
        return (hits / total if total else None), len(found)
    q = queries[qidx]
    best_ids, best = prefix_topk(base, q, lo, K)
    for i, f in enumerate(found):
        extra = sorted({x for x in f if lo[i] <= x < hi[i]})
        ids = np.concatenate([best_ids[i][best_ids[i] >= 0], np.asarray(extra, dtype=np.int64)])
        scores = np.concatenate([best[i][best_ids[i] >= 0],
                                 (np.asarray(base[extra], dtype=np.float32) @ q[i]
                                  if extra else np.empty(0, np.float32))])
        want = {int(x) for x in ids[np.argsort(-scores, kind="stable")[:K]]}
        hits += len(want & set(f[:K]))
        total += len(want)
    return (hits / total if total else None), len(found)


# -- running subjects ------------------------------------------------------------------------
def run_subject(subject: str, args: argparse.Namespace, data: dict[str, Any],
                work: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(SUBJECTS_PY), subject, "--work", str(work),
           "--base", data["base_path"], "--n", str(args.n), "--batch", str(args.batch),
           "--ef", str(args.ef), "--efs", args.efs,
           "--queries-per-sample", str(args.queries_per_sample),
           "--sweep-queries", str(args.sweep_queries),
           "--interval-s", str(args.interval_s), "--tail-s", str(args.tail_s),
           "--quantization", args.quantization]
    log("$ " + " ".join(cmd[1:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        log(f"{subject} failed ({proc.returncode})")
        return {"error": f"exit {proc.returncode}", "subject": subject}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def add_recall(result: dict[str, Any], data: dict[str, Any], work: Path) -> None:
    """Recall of every timeline sample (computed here, after the run); drops the raw ids."""
    samples = result.get("timeline", {}).get("samples", [])
    if not samples:
        return
    base = np.load(data["base_path"], mmap_mode="r")[: data["n"]]
    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth-none.npy")
    t0 = time.perf_counter()
    for s in samples:
        s["recall"], s["recall_queries"] = sample_recall(s.pop("raw"), base, queries, truth)
    log(f"{result['subject']}: timeline recall computed in {time.perf_counter() - t0:.1f} s")


# -- analysis --------------------------------------------------------------------------------
def at_recall(sweep: list[dict[str, Any]], flt: str, target: float = RECALL_TARGET
              ) -> dict[str, Any] | None:
    """The smallest ef of one filter's sweep that reaches ``target`` recall.

    The smallest ef, not the lowest p50: where every ef reaches it (an exact
    filtered scan) the p50s differ by noise only.
    """
    ok = [p for p in sweep if p["filter"] == flt and p["recall"] >= target]
    return min(ok, key=lambda p: p["ef"]) if ok else None


def best_recall(sweep: list[dict[str, Any]], flt: str) -> dict[str, Any] | None:
    points = [p for p in sweep if p["filter"] == flt]
    return max(points, key=lambda p: (p["recall"], -p["p50_ms"])) if points else None


def point_at_ef(sweep: list[dict[str, Any]], flt: str, ef: int) -> dict[str, Any] | None:
    return next((p for p in sweep if p["filter"] == flt and p["ef"] == ef), None)


def phase_of(s: dict[str, Any]) -> str:
    if s["writing"]:
        return "ingest"
    return "steady" if s.get("status") == "green" else "backlog"


def analyse_timeline(res: dict[str, Any], faiss: dict[str, Any] | None) -> dict[str, Any]:
    """Backlog latency, when the index caught up, when latency settled."""
    tl = res["timeline"]
    samples, last = tl["samples"], tl["last_write_s"]
    for s in samples:
        s["phase"] = phase_of(s)
    out: dict[str, Any] = {"last_write_s": last, "samples": len(samples)}
    # The issue's backlog: after the last write, until the index is green. Samples
    # taken while the upserts still run are reported beside it.
    for prefix, phase in (("backlog", "backlog"), ("ingest", "ingest")):
        chosen = [s for s in samples if s["phase"] == phase]
        if chosen:
            worst = max(chosen, key=lambda s: s["p50_ms"])
            out[f"{prefix}_max_p50_ms"] = worst["p50_ms"]
            out[f"{prefix}_max_p50_at_s"] = worst["t_s"]
            out[f"{prefix}_max_p99_ms"] = max(s["p99_ms"] for s in chosen)
            out[f"{prefix}_samples"] = len(chosen)
    # When the collection turned green for good after the last write, from the polls
    # (every 0.5 s) and the samples.
    states = sorted([(p["t_s"], p["status"]) for p in tl.get("polls", [])]
                    + [(s["t_s"], s.get("status")) for s in samples])
    green_at = None
    for t, status in states:
        if status != "green":
            green_at = None
        elif green_at is None and t >= last:
            green_at = t
    out["green_after_last_write_s"] = green_at - last if green_at is not None else None
    out["peak_rss_growth_mb"] = max((s["rss_growth_mb"] for s in _states(tl, "rss_growth_mb")),
                                    default=None)
    out["final_sample"] = {k: samples[-1].get(k) for k in (
        "t_s", "points", "unindexed", "segments", "status", "p50_ms", "p99_ms", "recall",
        "rss_growth_mb")} if samples else None
    reference = point_at_ef(res.get("optimized", {}).get("sweep", []), "none",
                            samples[0]["ef"] if samples else 0)
    if reference:
        bound = STEADY_VS_OPTIMIZED * reference["p50_ms"]
        after = [s for s in samples if not s["writing"]]
        # Each sample against the optimized p50 of the same queries (sample k
        # searches window k mod windows), when the run measured those; else
        # against the sweep's p50 over all queries.
        windows = res.get("optimized_windows_p50_ms") or []

        def bound_of(sample: dict[str, Any]) -> float:
            if windows:
                return STEADY_VS_OPTIMIZED * windows[int(sample["k"]) % len(windows)]
            return bound

        # Reached: the first sample after the last write with nothing left to
        # index (green) and p50 within the bound. Later samples over the bound
        # are counted apart: on this shared host p50 drifts by up to 2x within
        # minutes, and one slow window does not undo a layout.
        settled_at = None
        for s in after:
            if s.get("status") == "green" and s["p50_ms"] <= bound_of(s):
                settled_at = s["t_s"]
                break
        later = [x for x in after if settled_at is not None and x["t_s"] >= settled_at]
        out["settle_reference"] = ("optimized p50 of the same query window" if windows
                                   else "optimized sweep p50")
        out["settle_reference_p50_ms"] = reference["p50_ms"]
        out["settled_after_last_write_s"] = (max(0.0, settled_at - last)
                                             if settled_at is not None else None)
        out["settled_samples_over_bound"] = sum(x["p50_ms"] > bound_of(x) for x in later)
        out["settled_samples"] = len(later)
    if faiss and "build_s" in faiss:
        out["faiss_build_s"] = faiss["build_s"]
    return out


def check(target: str, subject: str, measured: float | None, bound: float | None,
          ok: bool | None, unit: str = "", note: str = "") -> dict[str, Any]:
    return {"target": target, "subject": subject, "measured": measured, "bound": bound,
            "unit": unit, "pass": ok, "note": note}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each measured against its bound."""
    subj = results["subjects"]
    faiss, qdrant = subj.get("faiss", {}), subj.get("qdrant-edge", {})
    quant = results["settings"]["quantization"]
    out = []
    for name in ("peregrine", "peregrine-http"):
        res = subj.get(name)
        if not res or "error" in res:
            continue
        an = res["analysis"]
        label = LABELS[name]
        if name == "peregrine":
            steady = at_recall(res["steady"]["sweep"], "none")
            opt = at_recall(res["optimized"]["sweep"], "none")
            if steady and opt:
                out.append(check("steady-state p50 <= 1.3x optimized p50 (recall >= 0.95)",
                                 label, steady["p50_ms"], STEADY_VS_OPTIMIZED * opt["p50_ms"],
                                 steady["p50_ms"] <= STEADY_VS_OPTIMIZED * opt["p50_ms"], "ms",
                                 f"ef {steady['ef']} vs ef {opt['ef']}; ratio "
                                 f"{steady['p50_ms'] / opt['p50_ms']:.2f}"))
            else:
                out.append(check("steady-state p50 <= 1.3x optimized p50 (recall >= 0.95)",
                                 label, None, None, False, "ms", "recall 0.95 not reached"))
            settle = an.get("settled_after_last_write_s")
            settle_target = ("steady state reached (green, sample p50 <= 1.3x optimized p50 of "
                             "the same queries at the timeline ef) within 1.2x raw FAISS build "
                             "time after the last write")
            if "build_s" not in faiss:
                out.append(check(settle_target, label, settle, None, None, "s", "no FAISS run"))
            else:
                bound = STEADY_WITHIN_FAISS_BUILD * faiss["build_s"]
                out.append(check(
                    settle_target, label, settle, bound,
                    settle is not None and settle <= bound, "s",
                    f"FAISS build {faiss['build_s']:.1f} s; samples every "
                    f"{results['settings']['interval_s']:g} s; index green "
                    f"{_fmt(an.get('green_after_last_write_s'), '.1f')} s after the last write; "
                    f"{an.get('settled_samples_over_bound', 0)} of "
                    f"{an.get('settled_samples', 0)} later samples over the bound"))
        worst = an.get("backlog_max_p50_ms")
        out.append(check("p50 during the backlog <= 10 ms", label, worst, BACKLOG_P50_MS,
                         worst is not None and worst <= BACKLOG_P50_MS, "ms",
                         f"worst of {an.get('backlog_samples', 0)} samples after the last "
                         "write while not green" if worst is not None else "no backlog sample"))
        during = an.get("ingest_max_p50_ms")
        if during is not None:
            out.append(check("p50 while the upserts run (reference)", label, during,
                             BACKLOG_P50_MS, None, "ms",
                             f"worst of {an.get('ingest_samples', 0)} samples; the client's "
                             "ingest shares the 2 cores"))
        phases = [("steady", "steady state")] + (
            [("optimized", "after optimize()")] if "optimized" in res else [])
        for flt in FILTERS:
            theirs = at_recall(qdrant.get("optimized", {}).get("sweep", []), flt)
            for key, phase in phases:
                ours = at_recall(res[key]["sweep"], flt)
                tname = f"filtered p50 ({flt}) <= Qdrant edge at recall >= 0.95, {phase}"
                if not qdrant or "error" in qdrant:
                    out.append(check(tname, label, ours["p50_ms"] if ours else None, None,
                                     None, "ms", "no Qdrant edge run"))
                elif ours and theirs:
                    # Over HTTP the request's own cost is in the p50: for reference only.
                    http = name == "peregrine-http"
                    out.append(check(tname, label, ours["p50_ms"], theirs["p50_ms"],
                                     None if http else ours["p50_ms"] <= theirs["p50_ms"], "ms",
                                     f"ef {ours['ef']} (recall {ours['recall']:.3f}) vs ef "
                                     f"{theirs['ef']} (recall {theirs['recall']:.3f})"
                                     + ("; HTTP vs embedded: for reference" if http else "")))
                else:
                    out.append(check(tname, label, ours["p50_ms"] if ours else None,
                                     theirs["p50_ms"] if theirs else None,
                                     False if not ours else None,
                                     "ms", "recall 0.95 not reached by "
                                     + ("Peregrine" if not ours else "Qdrant edge")))
        factor = RSS_VS_FAISS[quant]
        if "rss_growth_mb" not in faiss.get("optimized", {}):
            out.append(check(f"RSS growth at steady state vs {factor:g}x bare FAISS", label,
                             res["steady"]["rss_growth_mb"], None, None, "MB", "no FAISS run"))
        else:
            bound = factor * faiss["optimized"]["rss_growth_mb"]
            growth = res["steady"]["rss_growth_mb"]
            word = "<=" if quant == "none" else "<"
            ok = growth <= bound if quant == "none" else growth < bound
            peak = an.get("peak_rss_growth_mb")
            out.append(check(f"RSS growth at steady state {word} {factor:g}x bare FAISS "
                             f"({'float32' if quant == 'none' else 'int8'})", label, growth,
                             bound, ok, "MB",
                             f"FAISS {faiss['optimized']['rss_growth_mb']:.0f} MB; peak during "
                             f"the timeline {_fmt(peak, '.0f')} MB"
                             + (f"; after optimize() {res['optimized']['rss_growth_mb']:.0f} MB"
                                if "optimized" in res else "")))
        tput = res["timeline"]["points_per_s"]
        base = (results.get("baseline") or {}).get(name)
        out.append(check("upsert throughput unchanged", label, tput,
                         base and THROUGHPUT_TOLERANCE * base,
                         (tput >= THROUGHPUT_TOLERANCE * base) if base else None, "points/s",
                         f"baseline {base:,.0f} points/s" if base else "no --baseline run"))
    return out


# -- report ----------------------------------------------------------------------------------
def _load(results: dict[str, Any]) -> str:
    """1-minute load average at the start and the end of the run."""
    start, end = results.get("loadavg_start"), results.get("loadavg_end")
    return f"{start[0]:g} -> {end[0]:g}" if start and end else "n/a"


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _growths(d: dict[str, Any]) -> dict[str, float]:
    return {k: d.get(k, 0.0) for k in ("rss_growth_mb", "anon_growth_mb", "file_growth_mb")}


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per subject, phase and filter: the cheapest ef reaching recall 0.95."""
    rows = []
    for name, res in results["subjects"].items():
        if "error" in res:
            continue
        phases: list[tuple[str, dict[str, Any]]] = []
        if name.startswith("peregrine"):
            phases.append(("steady state (end of tail)", res["steady"]))
            if "optimized" in res:
                phases.append(("after optimize()", res["optimized"]))
            backlog = [s for s in res["timeline"]["samples"] if s["phase"] != "steady"]
            if backlog:
                worst = max(backlog, key=lambda s: s["p50_ms"])
                rows.append({"subject": name,
                             "phase": f"worst sample before green (t={worst['t_s']:.0f} s)",
                             "filter": "none", "ef": worst["ef"],
                             "recall": worst.get("recall"), "p50_ms": worst["p50_ms"],
                             "p99_ms": worst["p99_ms"], "segments": worst.get("segments"),
                             "unindexed": worst.get("unindexed"),
                             **_growths(worst), "reached": True})
        else:
            phases.append(("after optimize()" if name == "qdrant-edge" else "built",
                           res["optimized"]))
        for label, phase in phases:
            for flt in FILTER_NAMES:
                point = at_recall(phase["sweep"], flt)
                reached = point is not None
                point = point or best_recall(phase["sweep"], flt)
                if point is None:
                    continue
                rows.append({"subject": name, "phase": label, "filter": flt, "ef": point["ef"],
                             "recall": point["recall"], "p50_ms": point["p50_ms"],
                             "p99_ms": point["p99_ms"], "segments": phase["state"].get("segments"),
                             "unindexed": phase["state"].get("unindexed"),
                             **_growths(phase), "reached": reached})
    return rows


def _states(timeline: dict[str, Any], key: str = "unindexed") -> list[dict[str, Any]]:
    """Samples and the polls between them that carry ``key``, in time order."""
    states = [s for s in timeline.get("polls", []) + timeline["samples"] if key in s]
    return sorted(states, key=lambda s: s["t_s"])


def plot(results: dict[str, Any], latency_png: Path, rss_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subj = results["subjects"]
    timelines = [(name, subj[name]) for name in MODE_SUBJECTS.values()
                 if name in subj and "timeline" in subj[name]]
    colours = {"peregrine": "tab:blue", "peregrine-http": "tab:orange"}
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    for name, res in timelines:
        tl, c = res["timeline"], colours[name]
        samples, states = tl["samples"], _states(tl)
        t = [s["t_s"] for s in samples]
        ax.plot(t, [s["p50_ms"] for s in samples], marker="o", ms=3, color=c,
                label=f"{LABELS[name]} p50")
        ax.plot(t, [s["p99_ms"] for s in samples], linestyle=":", color=c,
                label=f"{LABELS[name]} p99")
        ax2.plot([s["t_s"] for s in states], [s["unindexed"] for s in states], color=c,
                 drawstyle="steps-post", label=f"{LABELS[name]} unindexed rows")
        acked = [(0.0, 0)] + [(b[0], min(tl["n"], (i + 1) * tl["batch"]))
                              for i, b in enumerate(tl["batches"])]
        ax2.plot([a[0] for a in acked], [a[1] for a in acked], color=c, linestyle="--",
                 alpha=0.5, drawstyle="steps-post", label=f"{LABELS[name]} points acknowledged")
        for a in (ax, ax2):
            a.axvline(res["timeline"]["last_write_s"], color=c, linestyle="--", linewidth=1)
    ax.axhline(BACKLOG_P50_MS, color="red", linestyle=":", linewidth=1,
               label="10 ms (backlog p50 bound)")
    pg = subj.get("peregrine", {})
    ref = pg.get("analysis", {}).get("settle_reference_p50_ms")
    if ref:
        ax.axhline(ref, color="grey", linestyle="-.", linewidth=1,
                   label=f"optimized p50 at ef {results['settings']['ef']}")
        ax.axhline(STEADY_VS_OPTIMIZED * ref, color="grey", linestyle=":", linewidth=1,
                   label="1.3x optimized p50")
    ax.set_yscale("log")
    ax.set_ylabel("search latency (ms, 1 client)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"Ingest of {results['data']['n']:,} vectors in batches of "
                 f"{results['settings']['batch']:,} (dashed line: last write)", fontsize=10)
    ax2.set_xlabel("seconds since the first write")
    ax2.set_ylabel("rows")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, res in timelines:
        states, c = _states(res["timeline"], "rss_growth_mb"), colours[name]
        ax.plot([s["t_s"] for s in states], [s["rss_growth_mb"] for s in states],
                color=c, label=f"{LABELS[name]} RSS growth")
        ax.axvline(res["timeline"]["last_write_s"], color=c, linestyle="--", linewidth=1)
    for name, style in (("faiss", "-."), ("qdrant-edge", ":")):
        growth = subj.get(name, {}).get("optimized", {}).get("rss_growth_mb")
        if growth is not None:
            ax.axhline(growth, color="grey", linestyle=style, linewidth=1,
                       label=f"{LABELS[name]}, built")
    faiss_growth = subj.get("faiss", {}).get("optimized", {}).get("rss_growth_mb")
    factor = RSS_VS_FAISS[results["settings"]["quantization"]]
    if faiss_growth is not None and factor != 1.0:
        ax.axhline(factor * faiss_growth, color="red", linestyle=":", linewidth=1,
                   label=f"{factor:g}x FAISS (bound)")
    ax.set_xlabel("seconds since the first write")
    ax.set_ylabel("RSS growth (MB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(rss_png, dpi=110)
    plt.close(fig)


def write_doc(results: dict[str, Any], doc: Path, latency_png: Path, rss_png: Path) -> None:
    st, data, subj = results["settings"], results["data"], results["subjects"]
    rel = os.path.relpath
    lines = [
        "# Ingest timeline benchmark",
        "",
        f"Generated by `{results['command']}` on {results['machine']} ({results['date']}, "
        f"commit {results.get('git')}; load average {_load(results)}"
        + "".join(f", {k}={v}" for k, v in results.get("env", {}).items() if v) + ").",
        "",
        f"{data['n']:,} real-text vectors ({data.get('model')}, {data['dim']}-d, cosine; "
        f"{data['source']}) are upserted in batches of {st['batch']:,} with payload "
        f"`bucket = i % 100` (integer payload index created first), HNSW m={M}, "
        f"ef_construction={EF_CONSTRUCTION}, quantization `{st['quantization']}`. From the first "
        f"acknowledged batch until {st['tail_s']:g} s after the last write, every "
        f"{st['interval_s']:g} s a sampler thread runs {st['queries_per_sample']} single "
        f"queries (one at a time, ef {st['ef']}, a rotating window of the {data['queries']} "
        "held-out queries) and reads the collection's info and the RSS of the process holding "
        "the data (the server's over HTTP); a poller thread reads the info and RSS every "
        "0.5 s besides (the plots' row and RSS curves). Recall of a sample is against exact "
        "ground truth over the rows acknowledged when each query was sent (plus in-flight rows "
        "it returned). "
        f"The ef sweeps ({st['efs']}) run {st.get('sweep_queries', data['queries'])} queries "
        "per point; filters: 1% = `bucket == 7`, 50% = `bucket < 50`, against exact filtered "
        "ground truth. "
        f"Each subject runs in its own process; RSS growth is over its state before the first "
        "write (after the vectors were loaded).",
        "",
        "## Targets",
        "",
        "| target | subject | measured | bound | result | note |",
        "|---|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        result = {True: "**pass**", False: "**FAIL**", None: "n/a"}[t["pass"]]
        spec = ",.0f" if t["unit"] == "points/s" else ".2f" if t["unit"] == "ms" else ".1f"
        unit = f" {t['unit']}" if t["unit"] else ""
        measured = _fmt(t["measured"], spec) + (unit if t["measured"] is not None else "")
        bound = _fmt(t["bound"], spec) + (unit if t["bound"] is not None else "")
        lines.append(f"| {t['target']} | {t['subject']} | {measured} | {bound} | {result} | "
                     f"{t['note']} |")
    lines += ["", "Crash guarantees are not measured here (the crash tests under `tests/` "
              "are). Upsert throughput is measured with the sampler and poller running beside "
              "it, and checked against the run given as `--baseline` (at least "
              f"{THROUGHPUT_TOLERANCE:.0%} of it). The settle time has the samples' resolution "
              f"({st['interval_s']:g} s).", "",
              "## Summary (cheapest ef reaching recall@10 >= 0.95)", "",
              "| subject | phase | filter | ef | recall@10 | p50 ms | p99 ms | segments | "
              "unindexed | RSS growth MB (anon / file) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary_rows(results):
        ef = f"{r['ef']}" + ("" if r["reached"] else " (max recall)")
        lines.append(f"| {LABELS[r['subject']]} | {r['phase']} | {r['filter']} | {ef} | "
                     f"{_fmt(r['recall'], '.3f')} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{_fmt(r['segments'], '')} | {_fmt(r['unindexed'], ',')} | "
                     f"{r['rss_growth_mb']:.0f} ({r['anon_growth_mb']:.0f} / "
                     f"{r['file_growth_mb']:.0f}) |")
    lines += ["", "## Ingest", ""]
    for name in ("peregrine", "peregrine-http"):
        res = subj.get(name)
        if not res:
            continue
        if "error" in res:
            lines.append(f"- {LABELS[name]}: failed ({res['error']})")
            continue
        tl, an = res["timeline"], res["analysis"]
        lines.append(
            f"- {LABELS[name]}: **{tl['points_per_s']:,.0f} points/s** ({tl['upsert_s']:.1f} s; "
            f"per batch p50 {tl['batch_p50_ms']:.1f} ms, p99 {tl['batch_p99_ms']:.1f} ms, max "
            f"{tl['batch_max_ms']:.1f} ms); status green "
            f"{_fmt(an.get('green_after_last_write_s'), '.1f')} s after the last write"
            + (f"; latency settled {an['settled_after_last_write_s']:.1f} s after it"
               if an.get("settled_after_last_write_s") is not None else "")
            + f"; peak RSS growth {_fmt(an.get('peak_rss_growth_mb'), '.0f')} MB"
            + (f"; `optimize()` afterwards took {res['optimize_s']:.1f} s" if "optimize_s" in res
               else ""))
    if "build_s" in subj.get("faiss", {}):
        f = subj["faiss"]
        lines.append(f"- {LABELS['faiss']}: built in **{f['build_s']:.1f} s** "
                     f"({f['build_threads']} threads, one `add` of all vectors); serialized "
                     f"index {f['index_bytes'] / 2**20:.0f} MB")
    if "upsert_s" in subj.get("qdrant-edge", {}):
        q = subj["qdrant-edge"]
        lines.append(f"- {LABELS['qdrant-edge']} {results['versions'].get('qdrant-edge-py')}: "
                     f"upsert {q['points_per_s']:,.0f} points/s ({q['upsert_s']:.1f} s, "
                     f"{q['before_optimize']['state']['segments']} segments, "
                     f"{q['before_optimize']['state']['indexed']:,} indexed before optimize), "
                     f"`optimize()` {q['optimize_s']:.1f} s; full_scan_threshold "
                     f"{QDRANT_FULL_SCAN_KB} KB (its default)")
    lines += ["", "## Latency and RSS against time", "",
              f"![latency against time]({rel(latency_png, doc.parent)})", "",
              f"![RSS against time]({rel(rss_png, doc.parent)})", ""]
    for name in ("peregrine", "peregrine-http"):
        res = subj.get(name)
        if not res or "timeline" not in res:
            continue
        lines += [f"<details><summary>{LABELS[name]}: every sample</summary>", "",
                  "| t s | phase | acked | points | unindexed | segments | status | p50 ms | "
                  "p99 ms | recall@10 | RSS growth MB (anon / file) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in res["timeline"]["samples"]:
            lines.append(f"| {s['t_s']:.1f} | {s['phase']} | {s['acked']:,} | {s['points']:,} | "
                         f"{s['unindexed']:,} | {_fmt(s.get('segments'), '')} | "
                         f"{s.get('status')} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                         f"{_fmt(s.get('recall'), '.3f')} | {s['rss_growth_mb']:.0f} "
                         f"({s.get('anon_growth_mb', 0):.0f} / {s.get('file_growth_mb', 0):.0f}) |")
        lines += ["", "</details>", ""]
    lines += ["<details><summary>Full ef sweeps</summary>", "",
              "| subject | phase | filter | ef | recall@10 | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|"]
    for name, res in subj.items():
        for key in ("steady", "optimized"):
            for p in res.get(key, {}).get("sweep", []):
                lines.append(f"| {LABELS[name]} | {key} | {p['filter']} | {p['ef']} | "
                             f"{p['recall']:.3f} | {p['p50_ms']:.3f} | {p['p99_ms']:.3f} |")
    lines += ["", "</details>", "", "## Reproducing", "",
              "1. `.venv/bin/pip install -e '.[bench]'` (matplotlib, psutil, qdrant-edge-py).",
              f"2. `.venv/bin/python bench/dataset.py --n {data['n']}` (cached real-text "
              "vectors; see that script).",
              f"3. `{results['command']}`; `--render-only` rewrites this page from "
              f"`{rel(results['out'], ROOT)}`.", ""]
    doc.write_text("\n".join(lines) + "\n")


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for pkg in ("peregrine", "faiss-cpu", "qdrant-edge-py", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_rev() -> str | None:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return (proc.stdout.strip() + ("+dirty src" if dirty else "")) if proc.returncode == 0 else None


def render(results: dict[str, Any], doc: Path) -> None:
    for name, res in results["subjects"].items():
        if name.startswith("peregrine") and "timeline" in res:
            res["analysis"] = analyse_timeline(res, results["subjects"].get("faiss"))
    results["targets"] = targets(results)
    stem = doc.with_suffix("")
    latency_png = stem.with_name(stem.name + "-latency.png")
    rss_png = stem.with_name(stem.name + "-rss.png")
    doc.parent.mkdir(parents=True, exist_ok=True)
    plot(results, latency_png, rss_png)
    write_doc(results, doc, latency_png, rss_png)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="vectors to ingest")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries used")
    ap.add_argument("--batch", type=int, default=1000, help="points per upsert")
    ap.add_argument("--queries-per-sample", type=int, default=200)
    ap.add_argument("--sweep-queries", type=int, default=1000,
                    help="queries per point of the ef sweeps (unfiltered, 1%%, 50%%)")
    ap.add_argument("--interval-s", type=float, default=5.0)
    ap.add_argument("--tail-s", type=float, default=120.0, help="sampling after the last write")
    ap.add_argument("--ef", type=int, default=64, help="ef of the timeline samples")
    ap.add_argument("--efs", default="32,64,96,128,192,256", help="ef sweep after the tail")
    ap.add_argument("--mode", choices=("embedded", "http", "both"), default="both")
    ap.add_argument("--quantization", choices=("none", "int8"), default="none")
    ap.add_argument("--skip-peers", action="store_true", help="no FAISS / Qdrant edge runs")
    ap.add_argument("--peers-from", type=Path,
                    help="reuse the FAISS and Qdrant edge results of an earlier --out file")
    ap.add_argument("--baseline", type=Path,
                    help="an earlier --out file: upsert throughput is checked against it")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "ingest_timeline.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "ingest-benchmark.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite --doc from --out")
    args = ap.parse_args(argv)
    if str(args.ef) not in args.efs.split(","):
        args.efs = f"{args.efs},{args.ef}"  # the settle check compares at the timeline's ef
    if args.render_only:
        saved: dict[str, Any] = json.loads(args.out.read_text())
        render(saved, args.doc)
        print(args.doc.read_text())
        return 0
    results: dict[str, Any] = {
        "command": "python bench/ingest_timeline.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                   f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git": git_rev(),
        "versions": versions(),
        "settings": {"n": args.n, "batch": args.batch, "ef": args.ef, "efs": args.efs,
                     "queries_per_sample": args.queries_per_sample,
                     "sweep_queries": args.sweep_queries,
                     "interval_s": args.interval_s, "tail_s": args.tail_s, "mode": args.mode,
                     "quantization": args.quantization, "m": M,
                     "ef_construction": EF_CONSTRUCTION, "k": K},
        "out": str(args.out.resolve()),
        # BLAS threading changes exact-scan latency a lot on a busy 2-core machine.
        "env": {k: os.environ.get(k) for k in THREAD_ENV},
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "subjects": {},
    }
    if args.baseline:
        old = json.loads(args.baseline.read_text())["subjects"]
        results["baseline"] = {name: res["timeline"]["points_per_s"]
                               for name, res in old.items() if "timeline" in res}
    work = Path(tempfile.mkdtemp(prefix="ingest-timeline-"))
    try:
        data = prepare_data(args.n, args.queries, work)
        results["data"] = {k: v for k, v in data.items() if k != "base_path"}
        order: list[str] = []
        if args.peers_from:
            old = json.loads(args.peers_from.read_text())["subjects"]
            results["subjects"].update({k: old[k] for k in ("faiss", "qdrant-edge") if k in old})
            results["peers_from"] = str(args.peers_from)
        elif not args.skip_peers:
            order += ["faiss", "qdrant-edge"]
        modes = ("embedded", "http") if args.mode == "both" else (args.mode,)
        order += [MODE_SUBJECTS[m] for m in modes]
        for subject in order:
            res = run_subject(subject, args, data, work)
            add_recall(res, data, work)
            results["subjects"][subject] = res
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")  # kept if the report fails
    render(results, args.doc)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(args.doc.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

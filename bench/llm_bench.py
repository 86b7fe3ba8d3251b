"""LLM serving, side by side in one run: Peregrine's engine against
llama-cpp-python's own OpenAI server, same model (the built-in Gemma 3 270M
Q4_K_M), same threads, driven by the same load generator (`peregrine bench llm`).

Phases:
1. Throughput: 8 concurrent streams (and 1, the control) on each server,
   completions of 64 tokens (ignore_eos on both; the peer honours it too).
2. Prefix cache (each server): time to first token of 520-token prompts that
   share nothing, then of prompts sharing a 500-token preamble.
3. Priority classes (Peregrine): premium requests at 1/s alone, then while a
   batch-class client floods at 10/s.

Writes bench/results/llm_bench.json and docs/llm-benchmark.md. Needs the bench
extra (llama-cpp-python[server]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from peregrine.loadgen.llm import LoadConfig, run_load  # noqa: E402
from peregrine.runtime.nats import free_port  # noqa: E402
from peregrine.serve.model import default_model_path  # noqa: E402
from provenance import provenance  # noqa: E402


def _start(cmd: list[str], url: str, log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited: see {log}")
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def load(url: str, **kw: Any) -> dict[str, Any]:
    return asyncio.run(run_load(LoadConfig(url=url, **kw))).summary()


def common_phases(url: str, d: float) -> dict[str, Any]:
    """What both servers go through: 1 and 8 streams, then cold and cached prefixes."""
    base = {"prompt_tokens": 64, "max_tokens": 64}
    return {
        "one_stream": load(url, concurrency=1, duration_s=d / 2, **base),
        "eight_streams": load(url, concurrency=8, duration_s=d, **base),
        "prefix_cold": load(url, concurrency=1, duration_s=d / 2, prompt_tokens=520,
                            max_tokens=1),
        "prefix_cached": load(url, concurrency=1, duration_s=d / 2, prompt_tokens=520,
                              shared_prefix=500, max_tokens=1)}


async def _both(premium: LoadConfig, batch: LoadConfig) -> tuple[Any, Any]:
    return await asyncio.gather(run_load(premium), run_load(batch))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_bench.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "llm-benchmark.md")
    args = ap.parse_args()
    model = str(default_model_path())
    work = Path("/tmp") / f"llm-bench-{os.getpid()}"
    work.mkdir(exist_ok=True)
    ours_port, ref_port = free_port(), free_port()
    ours_url, ref_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{ref_port}"
    d = args.duration
    res: dict[str, Any] = {
        **provenance("llm_bench.py"), "model": Path(model).name, "threads": args.threads}
    # -- the peer alone, then Peregrine alone (never both loading the cores) -----------
    ref = _start([sys.executable, "-m", "llama_cpp.server", "--model", model,
                  "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                  "--n_ctx", "4096", "--host", "127.0.0.1", "--port", str(ref_port),
                  # its default lets a new request cut off the one streaming: serve all
                  "--interrupt_requests", "False"],
                 ref_url, work / "ref.log")
    try:
        res["reference"] = common_phases(ref_url, d)
    finally:
        _stop(ref)
    ours = _start([sys.executable, "-m", "peregrine", "llm", "--port", str(ours_port),
                   "--threads", str(args.threads)], ours_url, work / "ours.log",
                  {"PEREGRINE_LLM_SLOTS": "8", "PEREGRINE_LLM_QUEUE": "64"})
    try:
        res["peregrine"] = common_phases(ours_url, d)
        premium = dict(rate=1.0, duration_s=d, prompt_tokens=64, max_tokens=16,
                       priority="premium", seed=11)
        res["peregrine"]["premium_idle"] = load(ours_url, **premium)
        flood = LoadConfig(url=ours_url, rate=10.0, duration_s=d, prompt_tokens=64,
                           max_tokens=64, priority="batch", seed=12, warmup=0)
        p, b = asyncio.run(_both(LoadConfig(url=ours_url, warmup=0, **premium), flood))
        res["peregrine"]["premium_under_flood"] = p.summary()
        res["peregrine"]["batch_flood"] = b.summary()
    finally:
        _stop(ours)
    pg, rf = res["peregrine"], res["reference"]
    res["ratios"] = {
        "tokens_per_s_8_streams_vs_reference":
            pg["eight_streams"]["tokens_per_s"] / rf["eight_streams"]["tokens_per_s"],
        "cached_vs_cold_ttft_p50": pg["prefix_cached"]["ttft"]["p50_ms"]
            / pg["prefix_cold"]["ttft"]["p50_ms"],
        "reference_cached_vs_cold_ttft_p50": rf["prefix_cached"]["ttft"]["p50_ms"]
            / rf["prefix_cold"]["ttft"]["p50_ms"],
        "premium_p99_ttft_flood_vs_idle": pg["premium_under_flood"]["ttft"]["p99_ms"]
            / pg["premium_idle"]["ttft"]["p99_ms"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    args.doc.write_text(render(res))
    print(args.doc.read_text())
    return 0


def render(res: dict[str, Any]) -> str:
    pg, rf, r = res["peregrine"], res["reference"], res["ratios"]

    def row(label: str, s: dict[str, Any]) -> str:
        return (f"| {label} | {s['tokens_per_s']:.1f} | {s['ttft']['p50_ms']:.0f} / "
                f"{s['ttft']['p99_ms']:.0f} | {s['itl']['p50_ms'] or 0:.1f} / "
                f"{s['itl']['p99_ms'] or 0:.1f} | {s['e2e']['p50_ms']:.0f} / "
                f"{s['e2e']['p99_ms']:.0f} | {s['requests']} | {s['rejected_429']} |")

    lines = [
        "# LLM serving benchmark", "",
        f"Generated by `{res['command']}` on {res['machine']} ({res['date']}, commit "
        f"{res['git']}). Model {res['model']}, {res['threads']} threads on both servers; "
        "load from `peregrine bench llm` (streaming; completions of 64 tokens from "
        "64-token prompts unless said). The peer is llama-cpp-python's own OpenAI server "
        "(`python -m llama_cpp.server --interrupt_requests False`: by default a new "
        "request cuts off the one streaming), run alone before Peregrine.", "",
        "| run | tokens/s | TTFT p50 / p99 ms | inter-token p50 / p99 ms | end-to-end "
        "p50 / p99 ms | requests | 429 |", "|---|---|---|---|---|---|---|",
        row("llama-cpp-python server, 1 stream", rf["one_stream"]),
        row("llama-cpp-python server, 8 streams", rf["eight_streams"]),
        row("Peregrine, 1 stream", pg["one_stream"]),
        row("Peregrine, 8 streams", pg["eight_streams"]),
        row("llama-cpp-python, 520-token prompts, nothing shared (1 token)", rf["prefix_cold"]),
        row("llama-cpp-python, 520-token prompts, 500 shared (1 token)", rf["prefix_cached"]),
        row("Peregrine, 520-token prompts, nothing shared (1 token)", pg["prefix_cold"]),
        row("Peregrine, 520-token prompts, 500 shared (1 token)", pg["prefix_cached"]),
        row("Peregrine premium at 1/s, alone (16 tokens)", pg["premium_idle"]),
        row("Peregrine premium at 1/s, batch flooding at 10/s", pg["premium_under_flood"]),
        row("Peregrine batch flood at 10/s (64 tokens)", pg["batch_flood"]),
        "",
        "Targets (issue 15) and what this run reached:", "",
        f"- aggregate tokens/s at 8 streams >= 2x the peer: "
        f"**{r['tokens_per_s_8_streams_vs_reference']:.2f}x**",
        f"- TTFT with a cached 500-token prefix <= 0.3x cold: "
        f"**{r['cached_vs_cold_ttft_p50']:.2f}x** (p50; the peer, which reuses the KV "
        f"of its previous prompt: {r['reference_cached_vs_cold_ttft_p50']:.2f}x)",
        f"- premium p99 TTFT under a 10x batch flood <= 1.5x idle: "
        f"**{r['premium_p99_ttft_flood_vs_idle']:.2f}x**", "",
        f"Reproduce: `{res['command']}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

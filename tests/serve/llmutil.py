"""Helpers of the inference tests: an engine on the real built-in model, and
blocking runs of requests through it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from peregrine.runtime.nats import free_port
from peregrine.serve.engine import InferenceEngine
from peregrine.serve.model import LlamaModel, default_model_path
from peregrine.serve.sampling import SamplingParams, TokenInfo
from peregrine.serve.scheduler import Request
from peregrine.serve.settings import LlmSettings

if importlib.util.find_spec("llama_cpp") is None:  # found, not imported: which build
    pytest.skip("needs the llm extra", allow_module_level=True)  # loads is the model's
openai = pytest.importorskip("openai")

MODEL = "gemma-3-270m-q4_k_m"


def make_engine(**overrides: Any) -> InferenceEngine:
    settings = LlmSettings(**{"slots": 4, "n_ctx": 4096, "step_tokens": 256,
                              "prefill_chunk": 64, "threads": 2, **overrides}).validate()
    model = LlamaModel(default_model_path(), slots=settings.slots, n_ctx=settings.n_ctx,
                       n_batch=settings.step_tokens, threads=settings.n_threads,
                       batch_invariant=settings.batch_invariant)
    return InferenceEngine(model, settings)


@dataclass
class Run:
    """One request's events, collected from the engine thread."""

    request: Request
    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    finished_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def submit(engine: InferenceEngine, prompt: str, priority: str = "standard",
           **params: Any) -> Run:
    tokens = engine.model.tokenize(prompt, add_special=True, parse_special=False)
    run: Run

    def on_event(event: tuple[str, Any, Any]) -> None:
        kind, a, b = event
        if kind == "token":
            run.text += a
            if b is not None:
                run.tokens.append(b)
        elif kind == "done":
            run.finish, run.usage = a, b
            run.finished_at = time.perf_counter()
            run.done.set()
        else:
            run.error = a
            run.done.set()

    defaults = {"temperature": 0.0, "max_tokens": 24}
    request = Request(tokens, SamplingParams(**{**defaults, **params}), priority, on_event,
                      time.perf_counter())
    run = Run(request)
    engine.submit(request)
    return run


def wait(*runs: Run, timeout: float = 120) -> None:
    for run in runs:
        assert run.done.wait(timeout), "the request did not finish"
        assert run.error is None, run.error


def each_alone(engine: InferenceEngine, prompts: list[str], **params: Any) -> list[Run]:
    """Each prompt run by itself, from a cold cache (which is cold again after)."""
    runs = []
    for prompt in prompts:
        clear_cache(engine)
        run = submit(engine, prompt, **params)
        wait(run)
        runs.append(run)
    clear_cache(engine)
    return runs


def clear_cache(engine: InferenceEngine) -> None:
    """Forget every cached prefix (the engine must be idle)."""
    with engine._cv:
        for slot in range(len(engine.slots)):
            if engine.slots[slot] is None:
                engine._evict(slot)


def close_enough(a: list[TokenInfo], b: list[TokenInfo], tie: float = 0.35) -> bool:
    """Greedy outputs that agree token for token, or that part only where the two
    top tokens were a near tie (llama.cpp's CPU kernels sum in an order that
    depends on the batch, as vLLM's tests allow for): at the first difference each
    run's token is in the other's top list, within ``tie`` nats of its best."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x.id == y.id:
            continue
        x_top, y_top = dict(x.top), dict(y.top)
        if y.id not in x_top or x.id not in y_top:
            raise AssertionError(f"token {i}: {x.id} vs {y.id}, not in each other's top")
        gap = max(x_top[x.id] - x_top[y.id], y_top[y.id] - y_top[x.id])
        if gap > tie:
            raise AssertionError(f"token {i}: {x.id} vs {y.id} with a gap of {gap:.3f} nats")
        return True
    return True


class LlmServer:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"llm-{self.port}.log").open("wb")
        full = {**os.environ, **{f"PEREGRINE_{k.upper()}": v for k, v in env.items()}}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peregrine", "llm", "--port", str(self.port),
             "--threads", "2"], stdout=self.log, stderr=self.log, env=full)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "peregrine llm exited"
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("peregrine llm did not start")

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             timeout=60)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                   for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

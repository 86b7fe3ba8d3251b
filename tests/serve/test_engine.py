"""The inference engine on the real model (Gemma 3 270M, CPU): continuous batching,
prefix reuse, cancellation, bounded queues and priority classes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llmutil import clear_cache, close_enough, each_alone, make_engine, submit, wait

from peregrine.core.errors import UnavailableError
from peregrine.serve.engine import OverloadedError
from peregrine.serve.model import LlamaModel, default_model_path, invariant_lib_dir
from peregrine.serve.prefix import BLOCK, PrefixIndex
from peregrine.serve.scheduler import Request, Sequence, plan_step
from peregrine.serve.settings import CLASSES, LlmSettings

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The best way to learn a language is",
           "Water boils at a temperature of", "In 1969, the first humans"]


def test_a_sequence_decodes_the_same_alone_and_in_a_batch() -> None:
    engine = make_engine(slots=8, n_ctx=8192)
    try:
        alone = each_alone(engine, PROMPTS, max_tokens=32, logprobs=5, ignore_eos=True)
        steps = engine.steps
        together = [submit(engine, p, max_tokens=32, logprobs=5, ignore_eos=True)
                    for p in PROMPTS]
        wait(*together)
        # All six advanced in the same steps: about 32 steps, not 6 x 32.
        assert engine.steps - steps < 2 * 32
        identical = 0
        for one, many in zip(alone, together, strict=True):
            assert len(one.tokens) == len(many.tokens) == 32
            assert close_enough(one.tokens, many.tokens)
            identical += [t.id for t in one.tokens] == [t.id for t in many.tokens]
        assert identical >= len(PROMPTS) // 2  # most agree token for token
    finally:
        engine.close()


def test_batch_invariant_mode_decodes_bit_for_bit_alone_in_a_batch_and_cached() -> None:
    """With ``batch_invariant`` the near ties above cannot happen: every token and its
    log-probability are the same bits alone, in a batch of six and after a cached
    prefix. (A process of its own: that mode loads its own build of llama.cpp.)"""
    if not invariant_lib_dir().joinpath("libllama.so").is_file():
        pytest.fail(f"no batch-invariant llama.cpp in {invariant_lib_dir()}: "
                    "run scripts/setup.sh")
    probe = Path(__file__).with_name("invariant_probe.py")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                         timeout=600, cwd=probe.parent, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["together_steps"] < 2 * 32  # really decoded together
    for one, many in zip(got["alone"], got["together"], strict=True):
        assert len(one) == 32
        assert one == many  # token ids and float log-probabilities, exactly
    assert got["warm_cached"] >= 64
    assert got["warm"] == got["cold"]


def test_batch_invariant_mode_is_refused_after_the_default_build_loaded() -> None:
    make_engine(slots=1, n_ctx=512).close()  # this process now holds the default build
    with pytest.raises(UnavailableError, match=r"already uses a llama\.cpp"):
        LlamaModel(default_model_path(), slots=1, n_ctx=512, n_batch=64, threads=1,
                   batch_invariant=True)


def test_a_cached_prefix_gives_the_same_greedy_output() -> None:
    engine = make_engine()
    system = ("You are a helpful assistant for a travel company. Answer briefly and "
              "politely, and always mention the weather at the destination. ") * 3
    try:
        cold = submit(engine, system + "Question: what should I pack for Paris?",
                      max_tokens=24, logprobs=5, ignore_eos=True)
        wait(cold)
        assert cold.request.cached_tokens == 0
        warm = submit(engine, system + "Question: what should I pack for Paris?",
                      max_tokens=24, logprobs=5, ignore_eos=True)
        other = submit(engine, system + "Question: is Rome hot in July?", max_tokens=8)
        wait(warm, other)
        n_system = len(engine.model.tokenize(system, True, False))
        assert warm.request.cached_tokens >= n_system - BLOCK  # the prompt came from cache
        assert other.request.cached_tokens >= BLOCK  # shares the system prompt only
        assert warm.usage is not None
        assert warm.usage["prompt_tokens_details"]["cached_tokens"] == \
            warm.request.cached_tokens
        assert close_enough(cold.tokens, warm.tokens)
        assert engine.stats()["prefix_hit_ratio"] > 0.3
    finally:
        engine.close()


def test_cancelling_frees_the_slot_at_once() -> None:
    engine = make_engine(slots=1)
    try:
        long = submit(engine, "Count: one, two, three,", max_tokens=2000, ignore_eos=True)
        while not long.text:
            time.sleep(0.01)
        queued = submit(engine, "Hello", max_tokens=4)
        time.sleep(0.2)
        assert not queued.done.is_set()  # the one slot is taken
        engine.cancel(long.request)
        started = time.perf_counter()
        wait(queued, timeout=30)
        assert time.perf_counter() - started < 5
        assert not long.done.is_set() and len(long.request.generated) < 2000
        assert engine.stats()["running"] == 0
    finally:
        engine.close()


def test_a_full_queue_refuses_with_a_retry_hint() -> None:
    engine = make_engine(slots=1, queue=2)
    try:
        runs = [submit(engine, "Tell me a story", max_tokens=200, ignore_eos=True)]
        while not runs[0].text:
            time.sleep(0.01)
        runs += [submit(engine, "Hi", max_tokens=2) for _ in range(2)]
        with pytest.raises(OverloadedError) as refused:
            submit(engine, "One more", max_tokens=2)
        assert refused.value.retry_after_s >= 1
        for run in runs:
            engine.cancel(run.request)
    finally:
        engine.close()


def test_premium_is_never_queued_behind_a_batch_burst() -> None:
    engine = make_engine(slots=2, windows="premium=2,standard=2,batch=2")
    try:
        burst = [submit(engine, f"Batch job {i}: write a long essay about rivers.", "batch",
                        max_tokens=60, ignore_eos=True) for i in range(6)]
        while not burst[0].text:
            time.sleep(0.01)
        premium = submit(engine, "Premium question: the capital of France is", "premium",
                         max_tokens=8)
        wait(premium, *burst)
        # The premium request preempted a running batch sequence and finished before
        # every batch request that was waiting when it came.
        assert premium.finished_at < min(r.finished_at for r in burst[2:])
        assert all(r.finish == "length" and len(r.request.generated) == 60 for r in burst)
        assert any(r.request.preemptions for r in burst)
        # A preempted sequence resumes where it was: same greedy text as alone.
        clear_cache(engine)
        again = submit(engine, "Batch job 0: write a long essay about rivers.", "batch",
                       max_tokens=60, ignore_eos=True)
        wait(again)
        assert again.text.split()[:5] == burst[0].text.split()[:5]
    finally:
        engine.close()


def test_a_step_decodes_every_running_sequence_and_chunks_long_prompts() -> None:
    settings = LlmSettings(slots=4, step_tokens=64, prefill_chunk=16)
    shares = settings.class_shares()

    def seq(priority: str, prompt: int, n_kv: int, admitted: int) -> Sequence:
        req = Request([1] * prompt, None, priority, lambda e: None, 0.0)  # type: ignore[arg-type]
        return Sequence(req, admitted, [1] * prompt, n_kv, admitted)

    decoding = seq("standard", 10, 9, 1)  # past its prompt: one token per step
    long_prompt = seq("batch", 500, 0, 2)
    premium_prompt = seq("premium", 40, 0, 3)
    items = plan_step([decoding, long_prompt, premium_prompt], 64, 16, shares)
    fed = {it.seq.admitted: it.count for it in items}
    assert fed == {3: 16}  # a premium prompt being read has the step to itself
    items = plan_step([decoding, long_prompt], 64, 16, shares)
    fed = {it.seq.admitted: it.count for it in items}
    assert fed == {1: 1, 2: 16}  # the decode is never stalled by the long prompt
    assert [it.seq.admitted for it in items] == [1, 2]  # decodes, then prompts
    assert sum(it.count for it in items) <= 64
    assert set(CLASSES) == set(shares)


def test_prefix_index_finds_the_longest_holder() -> None:
    index = PrefixIndex(3)
    base = list(range(100))
    index.assign(0, base[:40])
    index.assign(1, [*base[:70], 999])
    index.assign(2, [5] * 50)
    assert index.longest([*base, 1, 2]) == (1, 70)
    assert index.longest(base[:30]) in ((0, 30), (1, 30))
    assert index.longest([7, 7, 7]) == (None, 0)
    index.extend(0, base[40:90])
    assert index.longest(base) == (0, 90)
    index.clear(0)
    assert index.longest(base) == (1, 70)


def test_a_large_cached_prefix_never_blocks_admission() -> None:
    """The slot holding a prompt's prefix is taken over, not counted twice: a
    conversation that outgrows half the cells still runs (it once deadlocked)."""
    engine = make_engine(slots=2, n_ctx=512)
    try:
        prompt = "Tell me about the history of the harbor town. " * 14  # ~150 tokens
        first = submit(engine, prompt, max_tokens=200, ignore_eos=True)
        wait(first)
        again = submit(engine, prompt, max_tokens=200, ignore_eos=True)
        other = submit(engine, "Hello", max_tokens=4)
        wait(again, other, timeout=60)
        assert again.request.cached_tokens > 100
    finally:
        engine.close()


def test_text_after_a_stop_sequence_is_never_sent() -> None:
    from peregrine.serve.engine import TextStream

    text = TextStream(("\n",))
    assert text.push(b"ab") == ("ab", False)
    assert text.push(b"\n\xe2\x80") == ("", True)  # half a character after the stop
    stream = TextStream(("END",))
    assert stream.push(b"xx EN") == ("xx ", False)  # "EN" may begin the stop: held
    assert stream.push(b"D tail") == ("", True)


def test_premium_traffic_keeps_lower_classes_steps_short() -> None:
    shares = LlmSettings().class_shares()

    def seq(priority: str, prompt: int, admitted: int) -> Sequence:
        req = Request([1] * prompt, None, priority, lambda e: None, 0.0)  # type: ignore[arg-type]
        return Sequence(req, admitted, [1] * prompt, 0, admitted)

    batch = [seq("batch", 400, i) for i in range(3)]
    calm = plan_step(batch, 256, 128, shares)
    busy = plan_step(batch, 256, 128, shares, premium_recent=True)
    assert sum(it.count for it in calm) == int(0.25 * 256)
    assert sum(it.count for it in busy) <= 16  # a step in flight stays short

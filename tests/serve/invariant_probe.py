"""Run by ``test_engine.py`` in a process of its own (the batch-invariant build of
llama.cpp must be the first one loaded): greedy runs alone, together and from a
cached prefix in batch-invariant mode, printed as JSON for the test to compare."""

from __future__ import annotations

import json
import sys

from llmutil import Run, clear_cache, each_alone, make_engine, submit, wait

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The best way to learn a language is",
           "Water boils at a temperature of", "In 1969, the first humans"]
SYSTEM = ("You are a helpful assistant for a travel company. Answer briefly and "
          "politely, and always mention the weather at the destination. ") * 3


def tokens(run: Run) -> list[tuple[int, float]]:
    return [(t.id, t.logprob) for t in run.tokens]


def main() -> None:
    engine = make_engine(slots=8, n_ctx=8192, batch_invariant=True)
    try:
        alone = [tokens(run) for run in each_alone(engine, PROMPTS, max_tokens=32,
                                                   logprobs=5, ignore_eos=True)]
        steps = engine.steps
        together = [submit(engine, p, max_tokens=32, logprobs=5, ignore_eos=True)
                    for p in PROMPTS]
        wait(*together)
        steps = engine.steps - steps
        clear_cache(engine)
        question = SYSTEM + "Question: what should I pack for Paris?"
        cold = submit(engine, question, max_tokens=24, logprobs=5, ignore_eos=True)
        wait(cold)
        warm = submit(engine, question, max_tokens=24, logprobs=5, ignore_eos=True)
        other = submit(engine, SYSTEM + "Question: is Rome hot in July?", max_tokens=8)
        wait(warm, other)
        json.dump({"alone": alone, "together": [tokens(r) for r in together],
                   "together_steps": steps, "cold": tokens(cold), "warm": tokens(warm),
                   "warm_cached": warm.request.cached_tokens}, sys.stdout)
    finally:
        engine.close()


if __name__ == "__main__":
    main()

"""What runs in the next step: priority classes, admission and the token budget.

Requests wait in one bounded queue per class (``premium``, ``standard``,
``batch``). Between steps the scheduler admits waiting requests into free
sequence slots, highest class first, within each class's window (its most
running sequences) and the KV cells left. A premium request that finds every
slot taken preempts the lowest-class sequence admitted last: that sequence
goes back to the head of its queue with what it has generated, and its cells
stay in its slot as a cached prefix, so it resumes with little recomputation.
So a premium request never waits behind a batch-class burst.

A step then takes one decode token from every sequence past its prompt and
fills the rest of its token budget with prompt chunks (at most
``prefill_chunk`` per sequence), classes in order, each class within its share
of the step. A long prompt therefore never stalls the decode of the others.
While a premium prompt is being read, the lower classes pause (no decode, no
prompt) for those steps, so its first token waits only for the step in flight;
and while premium requests keep coming, lower classes read few prompt tokens a
step, so that step is short.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peregrine.serve.sampling import SamplingParams
from peregrine.serve.settings import CLASSES

RANK = {c: i for i, c in enumerate(CLASSES)}
LOWER_CHUNK_UNDER_PREMIUM = 8  # with budget/32: what a lower class takes per step then
_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One completion as the engine knows it. ``on_event`` is called from the engine
    thread with ("token", text, TokenInfo or None), ("done", finish_reason, usage)
    or ("error", message, None)."""

    prompt: list[int]
    params: SamplingParams
    priority: str
    on_event: Callable[[tuple[str, Any, Any]], None]
    arrived: float
    key: str = ""
    generated: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    cancelled: bool = False
    first_token_at: float = 0.0
    last_token_at: float = 0.0
    cached_tokens: int = 0
    preemptions: int = 0
    seq: int = field(default_factory=lambda: next(_ids))
    text: Any = None  # the engine's TextStream


@dataclass(eq=False)
class Sequence:
    """A request in a slot: ``tokens`` is prompt plus generated; ``n_kv`` of them are
    in the slot's KV cells (the last sampled token is not, until fed)."""

    req: Request
    slot: int
    tokens: list[int]
    n_kv: int
    admitted: int

    @property
    def rank(self) -> int:
        return RANK[self.req.priority]

    @property
    def reserve(self) -> int:
        """Cells this sequence may still come to hold."""
        return len(self.tokens) + max(0, self.req.params.max_tokens - len(self.req.generated))


@dataclass
class StepItem:
    seq: Sequence
    start: int  # first token index fed
    count: int  # tokens fed
    output: bool  # the step samples after the last one


class Queues:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting: dict[str, deque[Request]] = {c: deque() for c in CLASSES}

    def depth(self, cls: str | None = None) -> int:
        if cls is not None:
            return len(self.waiting[cls])
        return sum(len(q) for q in self.waiting.values())

    def full(self, cls: str) -> bool:
        return len(self.waiting[cls]) >= self.limit

    def push(self, req: Request, front: bool = False) -> None:
        (self.waiting[req.priority].appendleft if front else
         self.waiting[req.priority].append)(req)

    def first(self) -> Request | None:
        for cls in CLASSES:
            if self.waiting[cls]:
                return self.waiting[cls][0]
        return None

    def remove(self, req: Request) -> bool:
        try:
            self.waiting[req.priority].remove(req)
            return True
        except ValueError:
            return False


def plan_step(running: list[Sequence], budget: int, chunk: int,
              shares: dict[str, float], premium_recent: bool = False) -> list[StepItem]:
    """The step's work: decodes first, then prompt chunks, by class and age. While
    premium requests come (``premium_recent``), lower classes take at most
    ``LOWER_CHUNK_UNDER_PREMIUM`` + ``budget``/32 tokens a step (16 by default), so
    a step in flight when a premium request arrives is short."""
    caps = {c: max(1, int(shares[c] * budget)) for c in CLASSES}
    if premium_recent:
        for c in CLASSES[1:]:
            caps[c] = min(caps[c], LOWER_CHUNK_UNDER_PREMIUM + budget // 32)
    used = dict.fromkeys(CLASSES, 0)
    items: list[StepItem] = []
    order = sorted(running, key=lambda s: (s.rank, s.admitted))
    # While a premium prompt is being read, the step is its alone (with premium decodes):
    # its first token waits for nothing of the lower classes, who pause for that step.
    premium_reading = any(s.rank == 0 and len(s.tokens) - s.n_kv > 1 for s in order)
    for seq in order:  # one token each for the sequences past their prompt
        left = len(seq.tokens) - seq.n_kv
        cls = seq.req.priority
        if premium_reading and seq.rank > 0:
            continue
        if left == 1 and budget > 0 and used[cls] < caps[cls]:
            items.append(StepItem(seq, seq.n_kv, 1, True))
            budget -= 1
            used[cls] += 1
    for seq in order:  # then prompt chunks with what is left
        left = len(seq.tokens) - seq.n_kv
        cls = seq.req.priority
        if left <= 1:  # decoding (or its last prompt token waits for the decode share)
            continue
        if premium_reading and seq.rank > 0:
            continue
        n = min(left, chunk, budget, caps[cls] - used[cls])
        if n <= 0:
            continue
        items.append(StepItem(seq, seq.n_kv, n, seq.n_kv + n == len(seq.tokens)))
        budget -= n
        used[cls] += n
    return items

"""The inference engine: continuous batching over one ``LlamaModel``.

One thread runs steps. Each step: drop cancelled requests (their slots free at
once), admit waiting ones (``scheduler``), plan the step's tokens, run one
multi-sequence ``llama_decode``, sample every sequence that produced logits,
and hand each request its new text. New requests join between steps and
finished ones leave, so a sequence never waits for another to finish.

Prefix reuse: when a request is admitted, the ``PrefixIndex`` names the slot
holding the longest prefix of its prompt. An idle slot holding it is taken over
(its cells truncated to the shared part); a running one lends its cells
through ``seq_cp`` (not in batch-invariant mode, where each slot has a KV stream
of its own). Only the rest of the prompt is computed.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError, UnavailableError
from peregrine.serve.model import KVFullError, LlamaModel
from peregrine.serve.prefix import BLOCK, PrefixIndex
from peregrine.serve.sampling import TokenInfo, logprobs_of, penalise, sample
from peregrine.serve.scheduler import RANK, Queues, Request, Sequence, plan_step
from peregrine.serve.settings import CLASSES, LlmSettings

log = logging.getLogger("peregrine.serve")
_PREMIUM_RECENT_S = 5.0  # premium traffic this recent keeps lower classes' steps short


class OverloadedError(Exception):
    """The class's queue is full: answer 429 with ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TextStream:
    """Token bytes to text deltas: UTF-8 split across tokens is held until whole, and
    text that may be the start of a stop sequence is held until it is not."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""
        self.sent = 0

    def push(self, piece: bytes) -> tuple[str, bool]:
        """The text now safe to send, and whether a stop sequence ended the output."""
        self.text += self._decoder.decode(piece)
        if self.stops:
            cut = -1
            for stop in self.stops:
                at = self.text.find(stop, max(0, self.sent - len(stop)))
                if at >= 0 and (cut < 0 or at < cut):
                    cut = at
            if cut >= 0:
                self.text = self.text[:cut]
                return self._take(len(self.text)), True
            hold = 0
            for stop in self.stops:  # the longest tail that could begin a stop
                for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(stop[:k]):
                        hold = max(hold, k)
                        break
            return self._take(len(self.text) - hold), False
        return self._take(len(self.text)), False

    def flush(self) -> str:
        self.text += self._decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out = self.text[self.sent:upto]
        self.sent = upto
        return out


class InferenceEngine:
    def __init__(self, model: LlamaModel, settings: LlmSettings, metrics: Any = None) -> None:
        self.model, self.settings, self.metrics = model, settings, metrics
        self.name = model.info.name
        self.windows = settings.class_windows()
        self.shares = settings.class_shares()
        self.queues = Queues(settings.queue)
        self.slots: list[Sequence | None] = [None] * model.slots
        self.last_used = [0.0] * model.slots
        self.index = PrefixIndex(model.slots)
        self._admitted = 0
        self._cv = threading.Condition()
        self._stop = False
        self._cancels: list[Request] = []
        self._premium_at = -1e9  # when the last premium request came
        self.steps = 0
        self.prefix_hit_tokens = 0
        self.prompt_tokens = 0
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._thread.start()

    # -- the API (any thread) ---------------------------------------------------------
    def submit(self, req: Request) -> None:
        p = req.params
        if not req.prompt:
            raise InvalidInputError("the prompt is empty")
        if len(req.prompt) > self.settings.max_prompt_tokens:
            raise InvalidInputError(f"the prompt has {len(req.prompt)} tokens, the limit is "
                                    f"{self.settings.max_prompt_tokens}")
        if len(req.prompt) + p.max_tokens > self.model.seq_cells:
            raise InvalidInputError(f"prompt ({len(req.prompt)} tokens) plus max_tokens "
                                    f"({p.max_tokens}) exceed a sequence's context "
                                    f"({self.model.seq_cells})")
        if req.priority not in CLASSES:
            raise InvalidInputError(f"priority must be one of {CLASSES}")
        with self._cv:
            if self._stop:
                raise UnavailableError("the engine is shutting down")
            if self.queues.full(req.priority):
                if self.metrics is not None:
                    self.metrics.rejected.labels(self.name, req.priority, "queue_full").inc()
                raise OverloadedError(f"the {req.priority} queue is full "
                                      f"({self.settings.queue} waiting)", self._retry_after())
            req.text = TextStream(p.stop)
            if req.priority == CLASSES[0]:
                self._premium_at = time.monotonic()
            self.queues.push(req)
            self._cv.notify()
        self._gauges()

    def cancel(self, req: Request) -> None:
        """Stop ``req`` (a client gone): its slot is free before the next step."""
        with self._cv:
            req.cancelled = True
            self._cancels.append(req)
            self._cv.notify()

    def stats(self) -> dict[str, Any]:
        with self._cv:
            running = [s for s in self.slots if s is not None]
            return {
                "model": self.name, "slots": len(self.slots), "running": len(running),
                "waiting": {c: self.queues.depth(c) for c in CLASSES},
                "kv_used": self.kv_used(), "kv_cells": self.model.n_ctx,
                "prefix_hit_ratio": (self.prefix_hit_tokens / self.prompt_tokens
                                     if self.prompt_tokens else 0.0),
                "steps": self.steps,
            }

    def kv_used(self) -> int:
        return sum(len(self.index.tokens(i)) for i in range(len(self.slots)))

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(30)
        self.model.close()

    # -- the step thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._cancels and not self.queues.depth() \
                        and not any(self.slots):
                    self._cv.wait()
                if self._stop:
                    self._fail_all("the server is shutting down")
                    return
                cancels, self._cancels = self._cancels, []
                for req in cancels:
                    self._drop(req)
                self._admit()
            running = [s for s in self.slots if s is not None]
            if not running:
                self._gauges()
                with self._cv:  # nothing admissible now (cells): wait for a change
                    if not self._cancels and not self._stop:
                        self._cv.wait(0.05)
                continue
            try:
                self._step(running)
            except Exception as exc:  # a failed step fails its sequences, not the server
                log.exception("llm step failed")
                with self._cv:
                    for seq in running:
                        self._finish(seq, None, error=str(exc))
                        self._evict(seq.slot)  # its cells and the index may disagree now
            self._gauges()

    def _step(self, running: list[Sequence]) -> None:
        s = self.settings
        recent = time.monotonic() - self._premium_at < _PREMIUM_RECENT_S
        items = plan_step(running, s.step_tokens, s.prefill_chunk, self.shares, recent)
        if not items:
            return
        tokens = np.fromiter((t for it in items
                              for t in it.seq.tokens[it.start:it.start + it.count]),
                             dtype=np.int32)
        positions = np.concatenate([np.arange(it.start, it.start + it.count, dtype=np.int32)
                                    for it in items])
        counts = np.fromiter((it.count for it in items), dtype=np.int64, count=len(items))
        seqs = np.repeat(np.fromiter((it.seq.slot for it in items), dtype=np.int32,
                                     count=len(items)), counts)
        outputs = np.zeros(tokens.size, dtype=bool)
        ends = np.cumsum(counts) - 1
        wants = np.fromiter((it.output for it in items), dtype=bool, count=len(items))
        outputs[ends[wants]] = True
        started = time.perf_counter()
        try:
            logits = self.model.decode(tokens, positions, seqs, outputs)
        except KVFullError:
            self._relieve_kv(running)
            return
        self.steps += 1
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.step_seconds.labels(self.name).observe(now - started)
            self.metrics.step_tokens.labels(self.name).observe(tokens.size)
        row = 0
        with self._cv:
            for it in items:
                seq = it.seq
                self.index.extend(seq.slot, seq.tokens[it.start:it.start + it.count])
                seq.n_kv += it.count
                if it.output:
                    self._emit(seq, logits[row], now)
                    row += 1

    def _emit(self, seq: Sequence, logits: np.ndarray, now: float) -> None:
        req, p = seq.req, seq.req.params
        if seq.slot >= 0 and self.slots[seq.slot] is not seq:
            return  # cancelled or preempted meanwhile
        penalise(logits, req.counts, p)
        token = sample(logits, p)
        info = (logprobs_of(logits, token, p.logprobs) if p.logprobs is not None
                else TokenInfo(token))
        req.generated.append(token)
        req.counts[token] = req.counts.get(token, 0) + 1
        seq.tokens.append(token)
        m = self.metrics
        if not req.first_token_at:
            req.first_token_at = now
            if m is not None:
                m.ttft.labels(self.name, req.priority).observe(now - req.arrived)
        elif m is not None:
            m.itl.labels(self.name, req.priority).observe(now - req.last_token_at)
        req.last_token_at = now
        if m is not None:
            m.generated.labels(self.name, req.priority).inc()
        if self.model.is_eog(token) and not p.ignore_eos:
            self._finish(seq, "stop")
            return
        delta, stopped = req.text.push(self.model.piece_bytes(token))
        if delta or p.logprobs is not None:
            req.on_event(("token", delta, info))
        if stopped:
            self._finish(seq, "stop", flush=False)
        elif len(req.generated) >= p.max_tokens or len(seq.tokens) >= self.model.seq_cells:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: str | None, error: str | None = None,
                flush: bool = True) -> None:
        """The request is done: its slot becomes idle, keeping its cells as a prefix."""
        req = seq.req
        if self.slots[seq.slot] is seq:
            self.slots[seq.slot] = None
            self.last_used[seq.slot] = time.monotonic()
        if error is not None:
            req.on_event(("error", error, None))
            return
        tail = req.text.flush() if flush else ""  # after a stop: nothing more
        if tail:
            req.on_event(("token", tail, None))
        usage = {"prompt_tokens": len(req.prompt), "completion_tokens": len(req.generated),
                 "total_tokens": len(req.prompt) + len(req.generated),
                 "prompt_tokens_details": {"cached_tokens": req.cached_tokens}}
        if self.metrics is not None:
            self.metrics.e2e.labels(self.name, req.priority).observe(
                time.perf_counter() - req.arrived)
            self.metrics.finished.labels(self.name, req.priority, reason).inc()
        req.on_event(("done", reason, usage))

    # -- admission ----------------------------------------------------------------------
    def _admit(self) -> None:
        """Waiting requests into slots, best class first (under the lock)."""
        while (req := self.queues.first()) is not None:
            if req.cancelled:
                self.queues.remove(req)
                continue
            running = [s for s in self.slots if s is not None]
            in_class = sum(1 for s in running if s.req.priority == req.priority)
            if in_class >= self.windows[req.priority]:
                if not self._admit_lower(req, running):
                    return
                continue
            if self._try_place(req, running):
                continue
            if self._preempt_for(req, running):
                continue
            if not running:  # cannot happen within the submit checks; never hang
                self.queues.remove(req)
                req.on_event(("error", "no room in the KV cache for this request", None))
                continue
            return

    def _try_place(self, req: Request, running: list[Sequence]) -> bool:
        """Out of its queue into a slot, if a slot and cells for it can be found now."""
        tokens = req.prompt + req.generated
        need = len(tokens) + req.params.max_tokens - len(req.generated)
        source, _ = self.index.longest(tokens)
        slot = self._free_slot(sum(s.reserve for s in running) + need, source)
        if slot is None:
            return False
        self.queues.remove(req)
        source, shared = self.index.longest(tokens)  # after any eviction
        self._place(req, slot, tokens, source, shared)
        return True

    def _admit_lower(self, req: Request, running: list[Sequence]) -> bool:
        """The first class is at its window: try the next classes' heads instead."""
        for cls in CLASSES[RANK[req.priority] + 1:]:
            q = self.queues.waiting[cls]
            if q and sum(1 for s in running if s.req.priority == cls) < self.windows[cls] \
                    and self._try_place(q[0], running):
                return True
        return False

    def _free_slot(self, cells_needed: int, keep: int | None) -> int | None:
        """A slot for a new sequence with room for ``cells_needed`` cells in all (its
        whole length, shared prefix included), evicting idle cached prefixes, least
        recently used first, when short. ``keep``, an idle slot holding the new
        sequence's prefix, is taken over when possible: its cells become the new
        sequence's, so they are not counted twice; it is evicted last, when nothing
        else makes room. Otherwise an empty slot before a cached one."""
        idle = [i for i, s in enumerate(self.slots) if s is None]
        if not idle:
            return None
        keep = keep if keep in idle else None
        if not self.model.unified:  # a stream per slot: no slot's cells crowd another's
            if keep is not None:
                return keep
            return min(idle, key=lambda i: (len(self.index.tokens(i)) > 0, self.last_used[i]))
        if cells_needed > self.model.n_ctx:
            return None
        cached = sum(len(self.index.tokens(i)) for i in idle if i != keep)
        order = sorted((i for i in idle if i != keep), key=lambda i: self.last_used[i])
        for i in order:
            if cells_needed + cached <= self.model.n_ctx:
                break
            cached -= len(self.index.tokens(i))
            self._evict(i)
        if cells_needed + cached > self.model.n_ctx:
            return None
        if keep is not None:
            return keep
        return min(idle, key=lambda i: (len(self.index.tokens(i)) > 0, self.last_used[i]))

    def _evict(self, slot: int) -> None:
        self.model.seq_clear(slot)
        self.index.clear(slot)

    def _place(self, req: Request, slot: int, tokens: list[int], source: int | None,
               shared: int) -> None:
        """Put ``req`` into ``slot``, reusing the longest cached prefix of its tokens
        (``shared`` tokens held by ``source``)."""
        shared = min(shared, len(tokens) - 1)  # the last token is fed for its logits
        holder = self.slots[source] if source is not None else None
        if holder is not None:
            shared = min(shared, holder.n_kv)
        if source == slot and shared > 0:  # an idle slot holding the prefix: no copy
            if self.model.seq_truncate(slot, shared):
                self.index.assign(slot, tokens[:shared])
            else:  # the cache cannot cut it short: start over
                self.index.clear(slot)
                shared = 0
        else:
            if self.index.tokens(slot):
                self._evict(slot)
            if source is not None and shared >= BLOCK and self.model.unified:
                self.model.seq_copy(source, slot, shared)
                self.index.assign(slot, tokens[:shared])
            else:
                shared = 0
        self._admitted += 1
        seq = Sequence(req, slot, list(tokens), shared, self._admitted)
        self.slots[slot] = seq
        if not req.preemptions:
            req.cached_tokens = shared
            self.prefix_hit_tokens += shared
            self.prompt_tokens += len(req.prompt)
            if self.metrics is not None:
                self.metrics.prompt_tokens.labels(self.name, "cached").inc(shared)
                self.metrics.prompt_tokens.labels(self.name, "computed").inc(
                    len(req.prompt) - shared)

    def _preempt_for(self, req: Request, running: list[Sequence]) -> bool:
        """Make room for ``req`` by sending back the lowest-class sequence admitted
        last, if it ranks below ``req``."""
        victims = [s for s in running if s.rank > RANK[req.priority]]
        if not victims:
            return False
        victim = max(victims, key=lambda s: (s.rank, s.admitted))
        self.slots[victim.slot] = None
        self.last_used[victim.slot] = time.monotonic()
        victim.req.preemptions += 1
        self.queues.push(victim.req, front=True)
        if self.metrics is not None:
            self.metrics.preempted.labels(self.name, victim.req.priority).inc()
        return True

    def _drop(self, req: Request) -> None:
        if self.queues.remove(req):
            return
        for seq in self.slots:
            if seq is not None and seq.req is req:
                self.slots[seq.slot] = None
                self.last_used[seq.slot] = time.monotonic()
                if self.metrics is not None:
                    self.metrics.finished.labels(self.name, req.priority, "cancelled").inc()

    def _relieve_kv(self, running: list[Sequence]) -> None:
        """llama.cpp found no cells: evict idle prefixes, else send back the newest."""
        with self._cv:
            idle = [i for i, s in enumerate(self.slots) if s is None and self.index.tokens(i)]
            if idle:
                for i in idle:
                    self._evict(i)
                return
            victim = max(running, key=lambda s: (s.rank, s.admitted))
            self.slots[victim.slot] = None
            self._evict(victim.slot)
            victim.req.preemptions += 1
            self.queues.push(victim.req, front=True)

    def _fail_all(self, message: str) -> None:
        for seq in self.slots:
            if seq is not None:
                self._finish(seq, None, error=message)
        for cls in CLASSES:
            while self.queues.waiting[cls]:
                self.queues.waiting[cls].popleft().on_event(("error", message, None))

    def _retry_after(self) -> float:
        """A hint for 429s: about the time the running sequences need to finish."""
        running = [s for s in self.slots if s is not None]
        left = max((s.req.params.max_tokens - len(s.req.generated) for s in running),
                   default=1)
        return max(1.0, min(60.0, left * 0.02))

    def _gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        for cls in CLASSES:
            m.queue_depth.labels(self.name, cls).set(self.queues.depth(cls))
        m.running.labels(self.name).set(sum(1 for s in self.slots if s is not None))
        m.kv_utilisation.labels(self.name).set(self.kv_used() / self.model.n_ctx)


Callback = Callable[[tuple[str, Any, Any]], None]

"""Deadlines that reach into engine work, so a timed-out request stops computing.

A caller (the HTTP edge, a stream stage) sets a deadline for the work it
starts; engine loops call ``check_deadline()`` between their units of work
(a segment, a filter clause, a block of an exact scan) and stop with
``DeadlineExceededError`` once it has passed. The deadline travels in a
context variable, which ``contextvars.copy_context().run`` carries into the
thread that does the work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from peregrine.core.errors import DeadlineExceededError

_deadline: ContextVar[float] = ContextVar("peregrine_deadline", default=math.inf)


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Work inside the block must end by ``at`` (a ``time.perf_counter()`` value)."""
    token = set_deadline(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def set_deadline(at: float) -> Token[float]:
    """``deadline`` without the context manager, for hot paths: pass the token to
    ``reset_deadline`` when the work is done."""
    return _deadline.set(min(at, _deadline.get()))


def reset_deadline(token: Token[float]) -> None:
    _deadline.reset(token)


def check_deadline() -> None:
    at = _deadline.get()
    if at != math.inf and time.perf_counter() > at:
        raise DeadlineExceededError("the operation ran past its deadline and was stopped")

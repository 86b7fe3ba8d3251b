"""Choosing the next token from a row of logits, with numpy.

Greedy when the temperature is 0. Otherwise the softmax at that temperature,
cut to ``top_k`` and then to the smallest set whose mass reaches ``top_p``, and
drawn from with the request's own generator (so a ``seed`` repeats a
completion). Candidates come from an ``argpartition`` of the 256 most likely
tokens (or ``top_k``), with a full sort only when those do not reach
``top_p``: a 262k-token vocabulary is not sorted at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

_CANDIDATES = 256


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; N: the chosen token's and the N most likely
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Any integer seeds (OpenAI's range is signed): its low 64 bits.
        self.rng = np.random.default_rng(None if self.seed is None
                                         else self.seed & 0xFFFF_FFFF_FFFF_FFFF)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def penalise(logits: npt.NDArray[np.float32], counts: dict[int, int],
             params: SamplingParams) -> None:
    """OpenAI's presence and frequency penalties, in place, over the tokens generated."""
    if not counts or (params.presence_penalty == 0 and params.frequency_penalty == 0):
        return
    tokens = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    logits[tokens] -= params.frequency_penalty * n + params.presence_penalty


class TokenInfo(NamedTuple):
    id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


def logprobs_of(logits: npt.NDArray[np.float32], token: int, n: int) -> TokenInfo:
    """The chosen token's log-probability and the ``n`` most likely tokens' (before
    temperature, as OpenAI reports them)."""
    z = logits.astype(np.float64)
    z -= z.max()
    lse = float(np.log(np.exp(z).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if n > 0:
        idx = np.argpartition(-z, n - 1)[:n]
        idx = idx[np.argsort(-z[idx], kind="stable")]
        top = tuple((int(i), float(z[i] - lse)) for i in idx)
    return TokenInfo(token, float(z[token] - lse), top)


def sample(logits: npt.NDArray[np.float32], params: SamplingParams) -> int:
    if params.greedy:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    v = p.size
    k = params.top_k if 0 < params.top_k < v else 0
    if k == 0 and params.top_p >= 1.0:  # the whole distribution: inverse CDF
        cdf = np.cumsum(p)
        return int(min(np.searchsorted(cdf, params.rng.random() * cdf[-1], side="right"),
                       v - 1))
    m = k or min(_CANDIDATES, v)
    idx = np.argpartition(-p, m - 1)[:m] if m < v else np.arange(v)
    idx = idx[np.argsort(-p[idx], kind="stable")]
    if params.top_p < 1.0:
        cum = np.cumsum(p[idx])
        if not k and cum[-1] < params.top_p and m < v:  # the tail matters: sort it all
            idx = np.argsort(-p, kind="stable")
            cum = np.cumsum(p[idx])
        cut = int(np.searchsorted(cum, params.top_p, side="left")) + 1
        idx = idx[:cut]
    q = p[idx]
    return int(idx[params.rng.choice(idx.size, p=q / q.sum())])

"""Which KV slot already holds the longest prefix of a prompt.

Every slot's tokens (what its KV cells hold) are cut into blocks of
``BLOCK`` tokens, each named by a hash chained over the blocks before it, so a
block's name stands for the whole prefix up to it (vLLM's scheme for prefix
caching). A dictionary from block names to the slots holding them is a radix
index over the cached prefixes: a lookup walks the prompt's blocks until a
name is missing, then compares the prompt with the remaining holders token by
token (a hash collision can narrow the candidates, never fake a match). Slots
keep their prefix after their request ends (the engine evicts the least
recently used idle slot when it needs room).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 16


def _chain(tokens: Sequence[int], start_block: int, prev: int) -> list[int]:
    names = []
    for b in range(start_block, len(tokens) // BLOCK):
        prev = hash((prev, tuple(tokens[b * BLOCK:(b + 1) * BLOCK])))
        names.append(prev)
    return names


class PrefixIndex:
    def __init__(self, slots: int) -> None:
        self._tokens: list[list[int]] = [[] for _ in range(slots)]
        self._names: list[list[int]] = [[] for _ in range(slots)]
        self._holders: dict[int, set[int]] = {}

    def tokens(self, slot: int) -> list[int]:
        return self._tokens[slot]

    def assign(self, slot: int, tokens: Sequence[int]) -> None:
        """``slot`` now holds exactly ``tokens`` (keeps the blocks still shared)."""
        old = self._tokens[slot]
        same = 0
        limit = min(len(old), len(tokens))
        if limit:
            a = np.asarray(old[:limit])
            b = np.asarray(tokens[:limit])
            diff = np.flatnonzero(a != b)
            same = int(diff[0]) if diff.size else limit
        keep_blocks = same // BLOCK
        for name in self._names[slot][keep_blocks:]:
            holders = self._holders.get(name)
            if holders is not None:
                holders.discard(slot)
                if not holders:
                    del self._holders[name]
        names = self._names[slot][:keep_blocks]
        prev = names[-1] if names else 0
        names += _chain(tokens, keep_blocks, prev)
        for name in names[keep_blocks:]:
            self._holders.setdefault(name, set()).add(slot)
        self._names[slot] = names
        self._tokens[slot] = list(tokens)

    def extend(self, slot: int, tokens: Sequence[int]) -> None:
        """Tokens appended to what ``slot`` holds (a decode step, a prefill chunk)."""
        held = self._tokens[slot]
        held.extend(tokens)
        have = len(self._names[slot])
        if len(held) // BLOCK > have:
            prev = self._names[slot][-1] if have else 0
            new = _chain(held, have, prev)
            for name in new:
                self._holders.setdefault(name, set()).add(slot)
            self._names[slot] += new

    def clear(self, slot: int) -> None:
        self.assign(slot, [])

    def longest(self, tokens: Sequence[int], among: set[int] | None = None
                ) -> tuple[int | None, int]:
        """The slot holding the longest prefix of ``tokens`` (of ``among`` if given),
        and its length in tokens; (None, 0) when none shares a token."""
        prev = 0
        best: set[int] = set(among) if among is not None else set(range(len(self._tokens)))
        for b in range(len(tokens) // BLOCK):
            prev = hash((prev, tuple(tokens[b * BLOCK:(b + 1) * BLOCK])))
            holders = self._holders.get(prev)
            if not holders:
                break
            narrowed = best & holders
            if not narrowed:
                break
            best = narrowed
        winner, length = None, 0
        query = np.asarray(tokens, dtype=np.int64)
        for slot in best:  # the whole prefix compared, token by token, vectorised (the
            held = self._tokens[slot]  # block names only narrowed the candidates)
            if not held:
                continue
            n = min(len(held), query.size)
            diff = np.flatnonzero(np.asarray(held[:n], dtype=np.int64) != query[:n])
            same = int(diff[0]) if diff.size else n
            if same > length:
                winner, length = slot, same
        return winner, length

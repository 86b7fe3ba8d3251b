"""Route matching over the operations of every mounted protocol.

Paths compile with Starlette's ``compile_path`` (its parameter syntax and
convertors); matching adds what a low-latency server needs on top: static
paths are one dict lookup, and the few dynamic paths a client repeats (one
per collection and operation) are remembered instead of trying a dozen
patterns each time.
"""

from __future__ import annotations

import re

from starlette.routing import compile_path

from peregrine.edge.http.protocol import HttpError, Operation, Protocol


class Router:
    _MEMO_LIMIT = 4096

    def __init__(self, mounts: list[tuple[Protocol, list[Operation]]],
                 edge_operations: list[Operation]) -> None:
        """Each protocol with its operations; ``edge_operations`` are the edge's own
        routes (health, metrics), at the root."""
        protocols = [p for p, _ in mounts]
        self.static: dict[tuple[str, str], Operation] = {}
        self.dynamic: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
        self.patterns: list[re.Pattern[str]] = []
        self.prefixes = sorted({p.prefix for p in protocols}, key=len, reverse=True)
        self._protocols = {p.prefix: p for p in protocols}
        if len(self._protocols) != len(protocols):
            raise ValueError("two protocols are mounted at the same prefix")
        self._memo: dict[tuple[str, str], tuple[Operation, dict[str, str]]] = {}
        routes = [(p.prefix, op) for p, ops in mounts for op in ops]
        routes += [("", op) for op in edge_operations]
        seen: set[tuple[str, str]] = set()
        for prefix, op in routes:
            path = prefix + op.path
            if (op.method, path) in seen:
                raise ValueError(f"two operations answer {op.method} {path}")
            seen.add((op.method, path))
            if "{" not in path:
                self.static[(op.method, path)] = op
            pattern, _, _ = compile_path(path)
            self.dynamic.setdefault(op.method, []).append((pattern, op))
            self.patterns.append(pattern)

    def protocol_for(self, path: str) -> Protocol | None:
        """The protocol whose prefix is the longest one ``path`` starts with."""
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/") or not prefix:
                return self._protocols[prefix]
        return None

    def full_path(self, op: Operation) -> str:
        return (op.protocol.prefix if op.protocol else "") + op.path

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The operation and path parameters (the caller must not modify them)."""
        op = self.static.get((method, path))
        if op is not None:
            return op, {}
        key = (method, path)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        for pattern, op in self.dynamic.get(method, ()):
            m = pattern.match(path)
            if m:
                if len(self._memo) >= self._MEMO_LIMIT:
                    self._memo.clear()
                found = self._memo[key] = (op, m.groupdict())
                return found
        if any(p.match(path) for p in self.patterns):
            raise HttpError(405, f"Method {method} is not allowed on {path}")
        raise HttpError(404, f"Not found: no route for {method} {path}")

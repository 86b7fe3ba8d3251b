"""Paths into JSON payloads (``country.cities[].name``), as Qdrant reads them.

A path is a key followed by steps: ``.key``, ``[]`` (every element of an
array) or ``[N]`` (one element). Keys are letters, digits, ``_`` and ``-``,
or anything but ``"`` and ``\\`` inside double quotes (``a."b.c"``). The
semantics are Qdrant's, because clients rely on them:

* Filters (``values_at``): a key step only looks inside objects, so a path
  that meets an array without ``[]`` finds nothing; a value found at the end
  of the path that is an array matches when any element does.
* Payload selectors (``select``): ``include`` keeps every node whose path
  agrees with a pattern over their common length (so ancestors and the whole
  subtree below a match stay); ``exclude`` drops every node whose path starts
  with a pattern. Array elements are addressed as ``[]`` only, so ``[N]`` in a
  selector selects no element.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from peregrine.core.errors import InvalidInputError

# A step is a key (str), an element index (int) or every element (ALL).
ALL = None
Step = str | int | None
Path = tuple[Step, ...]

_TOKEN = re.compile(r'([\w-]+)|"([^"\\]*)"|\[(\d*)\]|(\.)')


@lru_cache(maxsize=4096)
def parse_path(text: str) -> Path:
    """``'a."b.c"[].d[0]'`` -> ``('a', 'b.c', ALL, 'd', 0)``; InvalidInputError if malformed."""
    if not isinstance(text, str) or not text:
        raise InvalidInputError("a payload path must be a non-empty string")
    steps: list[Step] = []
    pos = 0
    expect_key = True  # at the start and after a '.'
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        raw, quoted, index, dot = m.groups()
        if dot is not None:
            if expect_key:
                break
            expect_key = True
        elif raw is not None or quoted is not None:
            if not expect_key:
                break
            steps.append(raw if raw is not None else quoted)
            expect_key = False
        else:
            if expect_key:
                break
            steps.append(ALL if index == "" else int(index))
        pos = m.end()
    if pos != len(text) or expect_key or not steps:
        raise InvalidInputError(f"invalid payload path {text!r}: use keys joined by '.', "
                                "with [] or [N] after an array key")
    return tuple(steps)


def nodes_at(payload: Any, path: Path) -> list[Any]:
    """What sits at the end of ``path`` (arrays found there are not opened)."""
    nodes = [payload]
    for step in path:
        found: list[Any] = []
        for node in nodes:
            if isinstance(step, str):
                if isinstance(node, dict) and step in node:
                    found.append(node[step])
            elif isinstance(node, list):
                if step is ALL:
                    found.extend(node)
                elif step < len(node):
                    found.append(node[step])
        nodes = found
        if not nodes:
            break
    return nodes


def values_at(payload: Any, path: Path) -> list[Any]:
    """The values a filter condition tests: the nodes, arrays among them opened."""
    out: list[Any] = []
    for node in nodes_at(payload, path):
        if isinstance(node, list):
            out.extend(node)
        else:
            out.append(node)
    return out


def select(payload: dict[str, Any], include: Sequence[str] | None = None,
           exclude: Sequence[str] | None = None) -> dict[str, Any]:
    """The part of a payload a selector asks for (one of ``include``/``exclude``)."""
    patterns = [parse_path(p) for p in (include if include is not None else exclude or ())]
    if all(len(p) == 1 for p in patterns):  # top-level keys: no walk needed
        keys = {p[0] for p in patterns}
        if include is not None:
            return {k: v for k, v in payload.items() if k in keys}
        return {k: v for k, v in payload.items() if k not in keys}

    def keep(path: Path) -> bool:
        if include is not None:
            return any(p[0] == path[0] and all(a == b for a, b in zip(p, path, strict=False))
                       for p in patterns)
        return not any(path[: len(p)] == p for p in patterns)

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items() if keep((*path, k))}
        if isinstance(value, list):
            inner = (*path, ALL)
            return [walk(v, inner) for v in value] if keep(inner) else []
        return value

    return walk(payload, ())  # type: ignore[no-any-return]

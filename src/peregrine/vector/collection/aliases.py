"""Collection aliases: other names of collections, kept in ``aliases.json``.

Aliases exist so that readers can be moved from one collection to another in
one step (build ``docs_v2``, then point ``docs`` at it). So a change is a list
of actions applied in order to a copy of the table and only then made
durable (one atomic file write) and visible (one reference swap): a reader
resolves against the old table or the new one, never a half-applied list,
and a failing action leaves nothing changed.

The table knows nothing of locking: ``Database`` changes it under the mutex
that also orders collection creation and drops, because aliases and
collections share one namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from pathlib import Path

import orjson

from peregrine.core.errors import InvalidInputError, StorageError
from peregrine.core.fsio import write_atomic
from peregrine.vector.errors import AliasNotFoundError, CollectionNotFoundError
from peregrine.vector.types import (
    AliasAction,
    CreateAlias,
    DeleteAlias,
    RenameAlias,
    validate_collection_name,
)

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"


class AliasTable:
    """alias -> collection name, read without locks, replaced whole on each change."""

    def __init__(self, path: Path, mapping: dict[str, str]) -> None:
        self.path = path
        self._mapping = mapping
        # Counts published changes; bumped *after* the new table is visible, so a
        # reader that sees the same version before and after some work resolved
        # every name against one table (the result cache relies on it).
        self.version = 0

    @classmethod
    def load(cls, path: Path, collections: Container[str]) -> AliasTable:
        """The stored table, less aliases whose collection is gone (a crash between
        dropping a collection and rewriting the table) or that a collection shadows."""
        if not path.exists():
            return cls(path, {})
        try:
            data = orjson.loads(path.read_bytes())
            mapping = data["aliases"]
            if not isinstance(mapping, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
                raise ValueError("aliases must map names to collection names")
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"cannot read {path.name}: {exc}") from None
        kept = {a: c for a, c in mapping.items() if c in collections and a not in collections}
        for alias in sorted(set(mapping) - set(kept)):
            log.warning("alias %r dropped: collection %r does not exist or shadows it",
                        alias, mapping[alias])
        return cls(path, kept)

    def resolve(self, name: str) -> str:
        """The collection an alias names; any other name unchanged."""
        return self._mapping.get(name, name)

    def __contains__(self, name: object) -> bool:
        return name in self._mapping

    def items(self) -> list[tuple[str, str]]:
        """(alias, collection) pairs, by alias."""
        return sorted(self._mapping.items())

    def apply(self, actions: Sequence[AliasAction], collections: Container[str]) -> None:
        """Apply every action or none; the caller holds the catalogue's mutex."""
        mapping = dict(self._mapping)
        for action in actions:
            _apply(mapping, action, collections)
        self._publish(mapping)

    def drop_collection(self, name: str) -> None:
        """Remove the aliases of a collection that is being dropped (as Qdrant does)."""
        self._publish({a: c for a, c in self._mapping.items() if c != name})

    def _publish(self, mapping: dict[str, str]) -> None:
        if mapping == self._mapping:
            return
        write_atomic(self.path, orjson.dumps({"aliases": mapping}, option=orjson.OPT_SORT_KEYS))
        self._mapping = mapping
        self.version += 1


def _apply(mapping: dict[str, str], action: AliasAction, collections: Container[str]) -> None:
    if isinstance(action, CreateAlias):
        alias = _new_name(action.alias, collections)
        if not isinstance(action.collection, str) or action.collection not in collections:
            raise CollectionNotFoundError(f"collection {action.collection!r} does not exist")
        mapping[alias] = action.collection
    elif isinstance(action, DeleteAlias):
        if not isinstance(action.alias, str):
            raise InvalidInputError(f"an alias name is a string, not {action.alias!r}")
        mapping.pop(action.alias, None)
    elif isinstance(action, RenameAlias):
        if not isinstance(action.old, str) or action.old not in mapping:
            raise AliasNotFoundError(f"alias {action.old!r} does not exist")
        new = _new_name(action.new, collections)
        mapping[new] = mapping.pop(action.old)
    else:
        raise InvalidInputError(f"not an alias action: {action!r} (use CreateAlias, "
                                "DeleteAlias or RenameAlias)")


def _new_name(name: object, collections: Container[str]) -> str:
    """A name an alias may take: valid, and not a collection's (one namespace)."""
    alias = validate_collection_name(name, "alias")
    if alias in collections:
        raise InvalidInputError(f"alias name {alias!r} is taken by a collection of that name")
    return alias

"""The collection manifest: which sealed segments exist and what the WAL still owes.

``checkpoint`` is the last WAL sequence number whose effects are all inside
the listed segments (rows and tombstones); recovery replays the WAL after it.
The file is replaced atomically, so a crash leaves either the old or the new
manifest, never a mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from peregrine.core.errors import StorageError
from peregrine.core.fsio import write_atomic

MANIFEST = "manifest.json"
CONFIG_FILE = "config.json"


@dataclass
class Manifest:
    checkpoint: int = 0
    segments: list[int] = field(default_factory=list)
    next_segment_id: int = 1

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        if not path.exists():
            return cls()
        try:
            data = orjson.loads(path.read_bytes())
            manifest = cls(int(data["checkpoint"]), [int(s) for s in data["segments"]],
                           int(data["next_segment_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"corrupt manifest {path}: {exc}") from None
        ids = manifest.segments
        if manifest.checkpoint < 0 or len(set(ids)) != len(ids) or any(
                not 0 < i < manifest.next_segment_id for i in ids):
            raise StorageError(f"corrupt manifest {path}: checkpoint {manifest.checkpoint}, "
                               f"segments {ids[:8]}, next id {manifest.next_segment_id}")
        return manifest

    def save(self, directory: Path) -> None:
        write_atomic(directory / MANIFEST, orjson.dumps({
            "checkpoint": self.checkpoint,
            "segments": self.segments,
            "next_segment_id": self.next_segment_id,
        }))

"""Settings of host tuning: the ``[runtime]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field
from peregrine.runtime import idle_poll


@dataclass(frozen=True)
class RuntimeSettings(Section):
    idle_poll: bool = field(False, "keep idle CPUs polling instead of halting: lower wake-up "
                            "latency on a VM, at the cost of every idle CPU at 100%")
    huge_pages: bool = field(True, "back HNSW indexes with 2 MiB pages (Linux THP)")

    def validate(self) -> RuntimeSettings:
        if self.idle_poll and not idle_poll.available():
            raise InvalidInputError("runtime.idle_poll needs Linux (SCHED_IDLE and CPU affinity)")
        return self

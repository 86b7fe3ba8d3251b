"""The pipeline of test_crash.py, run by `peregrine worker crash_pipeline:pipeline`."""

from __future__ import annotations

import time
from typing import Any

from peregrine.stream.service import Pipeline


def slow(data: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.0005)  # long enough batches for a SIGKILL to land mid-batch
    return data


pipeline = (Pipeline("crash", source="in.crash", key="id", batch_size=64)
            .map(slow)
            .upsert("events", id="id", vector="vec", payload=["id", "n"]))

"""What every face's serialisers share: numpy values as plain ones."""

from __future__ import annotations

from typing import Any


def plain(value: Any) -> Any:
    """The ``default`` hook of msgpack and orjson for numpy arrays and scalars."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")

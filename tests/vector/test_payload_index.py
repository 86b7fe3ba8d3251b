"""FieldIndex storage: compact postings checked against a plain Python reading.

``Reference`` below evaluates each condition row by row from the payloads
(the semantics the filter tests pin down through whole collections); the
index must give the same masks however its rows arrived: in one catch_up, in
many small ones, or saved, loaded and then extended.
"""

from __future__ import annotations

import gc
import math
import random
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.vector.paths import nodes_at, parse_path
from peregrine.vector.segment import payload_index
from peregrine.vector.segment.payload_index import FORMAT_VERSION, FieldIndex, eq_key


class Reference:
    def __init__(self, path: str, payloads: list[dict[str, Any] | None]) -> None:
        steps = parse_path(path)
        self.nodes = [nodes_at(p, steps) if p else [] for p in payloads]

    def _values(self, nodes: list[Any]) -> list[Any]:
        return [v for node in nodes for v in (node if isinstance(node, list) else (node,))
                if v is not None]

    def mask(self, n: int, test: Any) -> np.ndarray[Any, Any]:
        return np.array([i < len(self.nodes) and test(self.nodes[i]) for i in range(n)],
                        dtype=np.bool_)

    def match_any(self, values: list[Any], n: int) -> np.ndarray[Any, Any]:
        keys = {eq_key(v) for v in values} - {None}
        return self.mask(n, lambda nodes: any(eq_key(v) in keys for v in self._values(nodes)))

    def match_except(self, values: list[Any], n: int) -> np.ndarray[Any, Any]:
        keys = {eq_key(v) for v in values} - {None}
        return self.mask(n, lambda nodes: any(
            eq_key(v) is None or eq_key(v) not in keys for v in self._values(nodes)))

    def match_text(self, text: str, n: int) -> np.ndarray[Any, Any]:
        return self.mask(n, lambda nodes: any(isinstance(v, str) and text in v
                                              for v in self._values(nodes)))

    def range(self, n: int, **bounds: float) -> np.ndarray[Any, Any]:
        def inside(v: Any) -> bool:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            f = float(v)
            return (("gt" not in bounds or f > bounds["gt"])
                    and ("gte" not in bounds or f >= bounds["gte"])
                    and ("lt" not in bounds or f < bounds["lt"])
                    and ("lte" not in bounds or f <= bounds["lte"]))
        return self.mask(n, lambda nodes: any(inside(v) for v in self._values(nodes)))

    def present(self, n: int) -> np.ndarray[Any, Any]:
        return self.mask(n, lambda nodes: any(x is not None and x != [] for x in nodes))

    def null(self, n: int) -> np.ndarray[Any, Any]:
        return self.mask(n, lambda nodes: any(x is None for x in nodes))

    def has_null(self, n: int) -> np.ndarray[Any, Any]:
        return self.mask(n, lambda nodes: any(
            x is None or (isinstance(x, list) and None in x) for x in nodes))


_HUGE = [2**53 + 1, 2**53, -(2**53) - 3, 2**62, 2**63 - 1, -(2**63), 2**63, 2**64 - 1]


def _scalar(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.35:
        return rng.randint(-5, 30)
    if kind < 0.45:
        return rng.choice(_HUGE)
    if kind < 0.6:
        return rng.choice(["red", "green", "blue", "dark red", "", "1"])
    if kind < 0.7:
        return rng.choice([True, False])
    if kind < 0.8:
        return rng.choice([0.5, 2.0, -1.25, 1e300, 7.0])
    if kind < 0.85:
        return None
    return {"nested": rng.randint(0, 3)}


def random_payloads(n: int, seed: int) -> list[dict[str, Any] | None]:
    rng = random.Random(seed)
    out: list[dict[str, Any] | None] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.08:
            out.append(None)
        elif roll < 0.15:
            out.append({"other": 1})
        elif roll < 0.6:
            out.append({"f": _scalar(rng)})
        else:
            out.append({"f": [_scalar(rng) for _ in range(rng.randint(0, 4))]})
    return out


QUERIES: list[tuple[str, Any]] = [
    ("match_any", [3]), ("match_any", [0, 1, 2]), ("match_any", [True]), ("match_any", [1]),
    ("match_any", ["red", "1"]), ("match_any", [2**63]), ("match_any", [2**63 - 1, -(2**63)]),
    ("match_any", [99]), ("match_any", []),
    ("match_except", [3]), ("match_except", ["red", 1, True]), ("match_except", []),
    ("match_except", [3, 3]), ("match_text", "red"), ("match_text", ""),
    ("match_text", "zzz"),
    ("range", {"gte": 0.0, "lt": 10.0}), ("range", {"gt": 2.0, "lte": 7.0}),
    ("range", {"gt": 2.5}), ("range", {"lt": -0.5}), ("range", {"gte": 2.0**53}),
    ("range", {"gt": 2.0**53}), ("range", {"lte": -(2.0**63)}), ("range", {"gte": 2.0**63}),
    ("range", {"gte": -math.inf, "lte": math.inf}), ("range", {"gt": math.inf}),
    ("range", {"lt": -math.inf}), ("range", {"gte": 1e300}), ("range", {"gt": 5.0, "lt": 3.0}),
    ("present", None), ("null", None), ("has_null", None),
]


def check_all(index: FieldIndex, ref: Reference, n: int) -> None:
    for name, arg in QUERIES:
        if name == "range":
            got, want = index.range(n, **arg), ref.range(n, **arg)
        elif arg is None:
            got, want = getattr(index, name)(n), getattr(ref, name)(n)
        else:
            got, want = getattr(index, name)(arg, n), getattr(ref, name)(arg, n)
        assert got.dtype == np.bool_ and got.shape == (n,), (name, arg)
        np.testing.assert_array_equal(got, want, err_msg=f"{name}({arg!r}) over {n} rows")


def payload_reader(payloads: list[dict[str, Any] | None]) -> Any:
    return lambda row: payloads[row]


@pytest.mark.parametrize("path", ["f", "f[]"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mixed_keys_match_the_reference_however_rows_arrive(path: str, seed: int) -> None:
    payloads = random_payloads(600, seed)
    ref = Reference(path, payloads)
    whole = FieldIndex(path)
    whole.catch_up(payload_reader(payloads), len(payloads))
    check_all(whole, ref, len(payloads))
    check_all(whole, ref, len(payloads) + 7)  # rows past the index are never matched

    rng = random.Random(seed)
    step = FieldIndex(path)
    n = 0
    while n < len(payloads):
        n = min(len(payloads), n + rng.choice([1, 2, 5, 40, 130]))
        step.catch_up(payload_reader(payloads), n)
        if rng.random() < 0.3:
            check_all(step, Reference(path, payloads[:n]), n)
    check_all(step, ref, len(payloads))
    step.catch_up(payload_reader(payloads), 10)  # never goes back
    assert step.rows_indexed == len(payloads)


def test_a_long_catch_up_merges_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payload_index, "_CHUNK_ROWS", 7)
    payloads = random_payloads(400, 6)
    index = FieldIndex("f[]")
    index.catch_up(payload_reader(payloads), 250)
    index.catch_up(payload_reader(payloads), 400)
    check_all(index, Reference("f[]", payloads), 400)


def test_a_mask_shorter_than_the_index_is_cut() -> None:
    payloads: list[dict[str, Any] | None] = [{"f": i % 3} for i in range(50)]
    index = FieldIndex("f")
    index.catch_up(payload_reader(payloads), 50)
    np.testing.assert_array_equal(index.match_any([1], 10), np.arange(10) % 3 == 1)
    np.testing.assert_array_equal(index.match_except([1], 10), np.arange(10) % 3 != 1)
    np.testing.assert_array_equal(index.range(10, gte=2), np.arange(10) % 3 == 2)
    assert index.present(10).all()


def _index(field: str, payloads: list[dict[str, Any] | None], n: int) -> FieldIndex:
    index = FieldIndex(field)
    index.catch_up(payload_reader(payloads), n)
    return index


def _built_and_held(build: Callable[[], FieldIndex]) -> tuple[FieldIndex, int]:
    """What ``build`` returns, and the bytes it still holds (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        built = build()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return built, held


def test_many_distinct_integers_cost_bytes_per_row() -> None:
    n = 50_000
    payloads: list[dict[str, Any] | None] = [{"ts": 1_000_000_007 * i} for i in range(n)]
    index, held = _built_and_held(lambda: _index("ts", payloads, n))
    # keys (8) + offsets (4) + rows (4) + flags (2 x 1): ~18 bytes a row; a
    # Python object per key would be ~100 more.
    assert held < 32 * n, f"{held / n:.1f} bytes per row"
    hits = index.match_any([1_000_000_007 * 123, 1_000_000_007 * 4567, 5], n)
    assert np.flatnonzero(hits).tolist() == [123, 4567]
    in_range = index.range(n, gte=1_000_000_007 * 10.0, lt=1_000_000_007 * 20.0)
    assert np.flatnonzero(in_range).tolist() == list(range(10, 20))
    except_one = index.match_except([0], n)
    assert not except_one[0] and except_one[1:].all()


def test_repeated_keys_share_their_key() -> None:
    n = 20_000
    payloads: list[dict[str, Any] | None] = [{"bucket": i % 100} for i in range(n)]
    index = FieldIndex("bucket")
    for stop in range(1_000, n + 1, 1_000):  # the mutable segment's way: in batches
        index.catch_up(payload_reader(payloads), stop)
    fresh, held = _built_and_held(lambda: _index("bucket", payloads, n))
    assert held < 12 * n, f"{held / n:.1f} bytes per row"
    for idx in (index, fresh):
        np.testing.assert_array_equal(idx.match_any([7, 42], n),
                                      np.isin(np.arange(n) % 100, [7, 42]))
        np.testing.assert_array_equal(idx.range(n, gt=90), np.arange(n) % 100 > 90)


@pytest.mark.parametrize("seed", [4, 5])
def test_save_and_load_round_trip_then_extend(tmp_path: Path, seed: int) -> None:
    payloads = random_payloads(500, seed)
    index = FieldIndex("f[]")
    index.catch_up(payload_reader(payloads), 300)
    index.save(tmp_path / "f.npz")
    loaded = FieldIndex.load(tmp_path / "f.npz")
    assert loaded is not None
    assert loaded.path == "f[]" and loaded.rows_indexed == 300
    check_all(loaded, Reference("f[]", payloads[:300]), 300)
    # A loaded index extends like any other (a sealed segment grown by new rows).
    loaded.catch_up(payload_reader(payloads), 500)
    check_all(loaded, Reference("f[]", payloads), 500)
    loaded.save(tmp_path / "g.npz")
    again = FieldIndex.load(tmp_path / "g.npz")
    assert again is not None
    check_all(again, Reference("f[]", payloads), 500)


def test_empty_index_round_trip(tmp_path: Path) -> None:
    index = FieldIndex("f")
    index.catch_up(payload_reader([None, {"g": 1}]), 2)
    index.save(tmp_path / "e.npz")
    loaded = FieldIndex.load(tmp_path / "e.npz")
    assert loaded is not None and loaded.rows_indexed == 2
    check_all(loaded, Reference("f", [None, {"g": 1}]), 2)


def test_an_index_saved_in_another_format_is_rebuilt(tmp_path: Path) -> None:
    with open(tmp_path / "v2.npz", "wb") as fh:  # what version 2 wrote, in short
        np.savez(fh, path=np.frombuffer(b"f", dtype=np.uint8),
                 keys=np.frombuffer(b"[1]", dtype=np.uint8), indptr=np.array([0, 1]),
                 eq_rows=np.array([0]), version=np.array([FORMAT_VERSION - 1]),
                 rows_indexed=np.array([1]))
    assert FieldIndex.load(tmp_path / "v2.npz") is None
    with open(tmp_path / "v0.npz", "wb") as fh:  # from before versions were recorded
        np.savez(fh, path=np.frombuffer(b"f", dtype=np.uint8))
    assert FieldIndex.load(tmp_path / "v0.npz") is None


def test_queries_during_catch_up_see_whole_batches() -> None:
    n = 6_000
    payloads: list[dict[str, Any] | None] = [{"k": i % 7} for i in range(n)]
    index = FieldIndex("k")
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            stop = 0
            while stop < n:
                stop = min(n, stop + 37)
                index.catch_up(payload_reader(payloads), stop)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            ref = np.arange(n) % 7
            while not done.is_set():
                # The index only grows: a mask read between two looks at how
                # many rows are indexed holds every row below the first and
                # none at or past the second.
                before = int(np.count_nonzero(index.present(n)))
                hits = index.match_any([3], n)
                in_range = index.range(n, gte=5)
                after = int(np.count_nonzero(index.present(n)))
                for mask, want in ((hits, ref == 3), (in_range, ref >= 5)):
                    assert (mask[:before] == want[:before]).all()
                    assert not (mask & ~want).any() and not mask[after:].any()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    np.testing.assert_array_equal(index.match_any([3], n), np.arange(n) % 7 == 3)


def test_a_failing_payload_read_publishes_nothing() -> None:
    payloads: list[dict[str, Any] | None] = [{"f": "x"}, {"f": "y"}, {"f": 3}]

    def flaky(row: int) -> dict[str, Any] | None:
        if row == 2:
            raise OSError("read failed")
        return payloads[row]

    index = FieldIndex("f")
    with pytest.raises(OSError):
        index.catch_up(flaky, 3)
    assert index.rows_indexed == 0
    assert not index.match_any(["x"], 3).any()
    index.catch_up(payload_reader(payloads), 3)
    check_all(index, Reference("f", payloads), 3)

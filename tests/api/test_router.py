"""The route table's matcher, including its memo of recently matched paths."""

from __future__ import annotations

import pytest

from peregrine.api.app import Router
from peregrine.api.errors import ApiError
from peregrine.api.routes import all_operations

SEARCH = "/collections/{collection_name}/points/search"


def test_dynamic_paths_match_their_own_parameters_every_time() -> None:
    router = Router(all_operations())
    for _ in range(3):  # first lookups fill the memo, later ones are served from it
        for name in ("a", "b", "docs-2"):
            op, params = router.match("POST", f"/collections/{name}/points/search")
            assert op.path == SEARCH
            assert params == {"collection_name": name}
    op, params = router.match("GET", "/collections/a/points/7")
    assert params == {"collection_name": "a", "id": "7"}
    assert router.match("GET", "/collections")[1] == {}


def test_memo_is_bounded_and_misses_still_fail() -> None:
    router = Router(all_operations())
    for i in range(Router._MEMO_LIMIT + 10):
        router.match("POST", f"/collections/c{i}/points/search")
    assert len(router._memo) <= Router._MEMO_LIMIT
    assert router.match("POST", "/collections/c1/points/search")[1] == {"collection_name": "c1"}
    with pytest.raises(ApiError) as wrong_method:
        router.match("DELETE", "/collections/a/points/search")
    assert wrong_method.value.status == 405
    with pytest.raises(ApiError) as unknown:
        router.match("POST", "/collections/a/nowhere/else")
    assert unknown.value.status == 404

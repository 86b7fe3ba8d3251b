"""The route table's matcher, including its memo of recently matched paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from peregrine.edge.http.health import health_operations
from peregrine.edge.http.protocol import HttpError
from peregrine.edge.http.routing import Router
from peregrine.edge.qdrant import QdrantProtocol
from peregrine.vector.service import VectorService

SEARCH = "/collections/{collection_name}/points/search"


@pytest.fixture
def router(tmp_path: Path) -> Router:
    vector = VectorService.open(tmp_path)
    protocol = QdrantProtocol(vector)
    try:
        return Router([(protocol, protocol.operations())], health_operations())
    finally:
        vector.close()


def test_dynamic_paths_match_their_own_parameters_every_time(router: Router) -> None:
    for _ in range(3):  # first lookups fill the memo, later ones are served from it
        for name in ("a", "b", "docs-2"):
            op, params = router.match("POST", f"/collections/{name}/points/search")
            assert op.path == SEARCH
            assert params == {"collection_name": name}
    op, params = router.match("GET", "/collections/a/points/7")
    assert params == {"collection_name": "a", "id": "7"}
    assert router.match("GET", "/collections")[1] == {}
    assert router.match("GET", "/healthz")[0].name == "healthz"  # the edge's own routes


def test_memo_is_bounded_and_misses_still_fail(router: Router) -> None:
    for i in range(Router._MEMO_LIMIT + 10):
        router.match("POST", f"/collections/c{i}/points/search")
    assert len(router._memo) <= Router._MEMO_LIMIT
    assert router.match("POST", "/collections/c1/points/search")[1] == {"collection_name": "c1"}
    with pytest.raises(HttpError) as wrong_method:
        router.match("DELETE", "/collections/a/points/search")
    assert wrong_method.value.status == 405
    with pytest.raises(HttpError) as unknown:
        router.match("POST", "/collections/a/nowhere/else")
    assert unknown.value.status == 404

"""Real-time recommendations from click events.

Each click ``{"event_id", "user_id", "product_id", "description", "ts"}``
published on ``clicks`` is validated, its product description embedded, the
product upserted into the clicking user's namespace of the ``products``
collection (one point per user and product: a repeated click updates it), and
the user's five products most similar to it, the clicked one excluded, are
published as ``{"event_id", "user_id", "product_ids"}`` on
``recommendations.<user_id>``.

Run it against a server (see README.md):

    peregrine serve --port 6333 --nats-port 4222 --data ./data
    peregrine worker examples.recommendations:pipeline \\
        --url http://127.0.0.1:6333 --nats nats://127.0.0.1:4222
    python -m examples.click_producer --nats nats://127.0.0.1:4222 --rate 200 --measure
"""

from __future__ import annotations

from typing import Any

from peregrine.stream.service import Pipeline

#: A user id becomes one subject token, so it is kept to letters, digits, _ and -.
CLICK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "user_id", "product_id", "description", "ts"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "user_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "product_id": {"type": ["string", "integer"], "minLength": 1, "maxLength": 128},
        "description": {"type": "string", "minLength": 1, "maxLength": 4000},
        "ts": {"type": ["number", "string"]},
    },
}


def to_recommendation(data: dict[str, Any]) -> dict[str, Any]:
    """The similar products' ids, best first."""
    data["product_ids"] = [hit["payload"]["product_id"] for hit in data["similar"]]
    return data


pipeline = (
    Pipeline("recommendations", source="clicks", key="user_id", event_id="event_id")
    .validate(CLICK_SCHEMA)
    .embed("description")
    .upsert("products", id="product_id", namespace="user_id", namespace_key="user_id",
            payload=["product_id", "description", "ts"])
    .query("products", k=5, namespace="user_id", namespace_key="user_id",
           exclude_id="product_id", into="similar")
    .map(to_recommendation)
    .emit("recommendations.{user_id}", fields=["event_id", "user_id", "product_ids"])
)

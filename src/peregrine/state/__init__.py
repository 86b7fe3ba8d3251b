"""The state face: session and cache state for LLM applications.

``peregrine.state`` is the Python API; it re-exports the front door
(``peregrine.state.service``).
"""

from peregrine.state.service import (
    SemanticCache,
    SemanticHit,
    SharedDoc,
    StateService,
    StateSettings,
    TieredCache,
    Turn,
    UpdateLog,
    embedding_key,
    estimate_tokens,
)

__all__ = [
    "SemanticCache",
    "SemanticHit",
    "SharedDoc",
    "StateService",
    "StateSettings",
    "TieredCache",
    "Turn",
    "UpdateLog",
    "embedding_key",
    "estimate_tokens",
]

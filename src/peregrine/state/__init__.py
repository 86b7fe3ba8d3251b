"""The state face: session and cache state for LLM applications (front door:
``peregrine.state.service``)."""

"""The OpenAI protocol (``/v1``) of the shared edge."""

"""The inference face: language models behind the OpenAI API, with continuous
batching, prefix caching and priority classes (front door: ``service``)."""

from peregrine.serve.service import (
    Chunk,
    InferenceService,
    LlmSettings,
    OverloadedError,
    RateLimited,
    SamplingParams,
)

__all__ = ["Chunk", "InferenceService", "LlmSettings", "OverloadedError", "RateLimited",
           "SamplingParams"]

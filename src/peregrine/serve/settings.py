"""Settings of the inference face: the ``[llm]`` section."""

from __future__ import annotations

import os
from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field

CLASSES = ("premium", "standard", "batch")


@dataclass(frozen=True)
class LlmSettings(Section):
    enabled: bool = field(True, "serve /v1 (the model loads on the first request unless "
                                "preload)")
    model: str = field("", "GGUF file to serve; empty: the built-in Gemma 3 270M Q4_K_M")
    model_name: str = field("", "the model's id in the API; empty: from the file name")
    preload: bool = field(False, "load the model at start-up rather than on first use")
    threads: int = field(0, "CPU threads of llama.cpp; 0: the machine's cores")
    slots: int = field(8, "sequences decoded together (KV sequence slots)")
    n_ctx: int = field(16384, "KV cells shared by all slots (tokens in flight plus cached "
                              "prefixes)")
    step_tokens: int = field(256, "tokens one step may decode across sequences (decode "
                                  "tokens plus prefill chunks)")
    prefill_chunk: int = field(128, "most prompt tokens of one sequence per step, so a "
                                    "long prompt cannot stall the others' decode (a "
                                    "class's share caps it further)")
    max_tokens: int = field(2048, "largest max_tokens a request may ask for")
    max_prompt_tokens: int = field(8192, "longest prompt, in tokens")
    queue: int = field(256, "requests waiting per priority class; beyond it: 429")
    windows: str = field("premium=8,standard=8,batch=4",
                         "most running sequences per class")
    shares: str = field("premium=1.0,standard=0.5,batch=0.25",
                        "largest share of a step's tokens per class")
    default_class: str = field("standard", "class of requests that name none")
    keys: str = field("", "API keys and their class and limits, comma separated: "
                          "key:class[:requests_per_min[:tokens_per_min]]")
    replicas: int = field(1, "engine processes behind the router (peregrine llm)")
    upstreams: str = field("", "OpenAI-compatible upstreams for the router, comma "
                               "separated: url[=weight][@version]")
    gpu_layers: int = field(0, "layers offloaded to a GPU (llama.cpp built with one)")
    batch_invariant: bool = field(False, "decode each sequence bit for bit as it would "
                                         "be alone, whatever else shares its steps: "
                                         "llama.cpp's batch-invariant build (setup "
                                         "makes it), a KV stream per slot; prefill "
                                         "about 2x slower")

    def validate(self) -> LlmSettings:
        for name in ("slots", "n_ctx", "step_tokens", "prefill_chunk", "max_tokens",
                     "max_prompt_tokens", "queue", "replicas"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"llm.{name} must be positive")
        if self.slots > 64:
            raise InvalidInputError("llm.slots is at most 64")
        if self.step_tokens < self.slots:
            raise InvalidInputError("llm.step_tokens must be at least llm.slots")
        if self.default_class not in CLASSES:
            raise InvalidInputError(f"llm.default_class must be one of {CLASSES}")
        self.class_windows()
        self.class_shares()
        self.key_table()
        return self

    @property
    def n_threads(self) -> int:
        return self.threads or max(1, os.cpu_count() or 1)

    def _pairs(self, text: str, what: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in CLASSES:
                raise InvalidInputError(f"llm.{what}: unknown class {name!r}")
            try:
                out[name] = float(value)
            except ValueError:
                raise InvalidInputError(f"llm.{what}: {part!r} is not class=number") from None
        return out

    def class_windows(self) -> dict[str, int]:
        given = self._pairs(self.windows, "windows")
        return {c: max(1, min(self.slots, int(given.get(c, self.slots)))) for c in CLASSES}

    def class_shares(self) -> dict[str, float]:
        given = self._pairs(self.shares, "shares")
        out = {c: given.get(c, 1.0) for c in CLASSES}
        if any(not 0 < v <= 1 for v in out.values()):
            raise InvalidInputError("llm.shares are in (0, 1]")
        return out

    def key_table(self) -> dict[str, tuple[str, float, float]]:
        """API key -> (class, requests per minute, tokens per minute); 0: no limit."""
        table: dict[str, tuple[str, float, float]] = {}
        for part in filter(None, (p.strip() for p in self.keys.split(","))):
            bits = part.split(":")
            if len(bits) < 2 or bits[1] not in CLASSES or len(bits) > 4:
                raise InvalidInputError(f"llm.keys: {part!r} is not "
                                        "key:class[:requests_per_min[:tokens_per_min]]")
            try:
                rpm = float(bits[2]) if len(bits) > 2 else 0.0
                tpm = float(bits[3]) if len(bits) > 3 else 0.0
            except ValueError:
                raise InvalidInputError(f"llm.keys: limits of {bits[0]!r} are numbers"
                                        ) from None
            table[bits[0]] = (bits[1], rpm, tpm)
        return table

"""Prometheus metrics of the inference face (one set per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_GAP = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


class LlmMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "priority"]
        self.ttft = Histogram("peregrine_llm_time_to_first_token_seconds",
                              "From arrival to the first generated token", labels,
                              buckets=_LATENCY, registry=registry)
        self.itl = Histogram("peregrine_llm_inter_token_seconds",
                             "Between consecutive tokens of one sequence", labels,
                             buckets=_TOKEN_GAP, registry=registry)
        self.e2e = Histogram("peregrine_llm_request_seconds",
                             "From arrival to the last token", labels, buckets=_LATENCY,
                             registry=registry)
        self.generated = Counter("peregrine_llm_generated_tokens",
                                 "Tokens generated (rate: tokens/s)", labels, registry=registry)
        self.prompt_tokens = Counter("peregrine_llm_prompt_tokens",
                                     "Prompt tokens, reused from the prefix cache or computed",
                                     ["model", "source"], registry=registry)
        self.finished = Counter("peregrine_llm_requests", "Requests ended, by reason",
                                ["model", "priority", "reason"], registry=registry)
        self.rejected = Counter("peregrine_llm_rejected", "Requests refused (429)",
                                ["model", "priority", "reason"], registry=registry)
        self.preempted = Counter("peregrine_llm_preempted",
                                 "Sequences sent back to their queue for a higher class",
                                 labels, registry=registry)
        self.queue_depth = Gauge("peregrine_llm_queue_depth", "Requests waiting, by class "
                                 "(with kv_utilisation: the autoscaling signal)", labels,
                                 registry=registry)
        self.running = Gauge("peregrine_llm_running_sequences", "Sequences in slots",
                             ["model"], registry=registry)
        self.kv_utilisation = Gauge("peregrine_llm_kv_utilisation",
                                    "Share of KV cells holding tokens (running or cached)",
                                    ["model"], registry=registry)
        self.step_seconds = Histogram("peregrine_llm_step_seconds",
                                      "One multi-sequence decode", ["model"],
                                      buckets=_TOKEN_GAP, registry=registry)
        self.step_tokens = Histogram("peregrine_llm_step_tokens", "Tokens in one decode",
                                     ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                                     registry=registry)

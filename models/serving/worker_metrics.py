"""Prometheus metrics of the model worker, in a registry of its own (one per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """Requests by outcome, batch sizes, queue depth and latency histograms; also a ``BatchObserver``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlm_requests", "Fill-mask requests by outcome (ok or the error code)", ["endpoint", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "mlm_request_seconds", "Time from request to answer", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "mlm_batch_size",
            "Inputs per model batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "mlm_batch_padded_tokens",
            "Padded tokens per model batch",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.batch_seconds = Histogram("mlm_batch_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.oom_splits = Counter("mlm_oom_splits", "Batches split after running out of device memory", registry=r)
        self.queue_depth = Gauge("mlm_queue_depth", "Inputs waiting for the model", registry=r)
        self.in_flight = Gauge("mlm_in_flight", "Requests admitted and not yet answered", registry=r)
        self.ready = Gauge("mlm_ready", "1 once the model is loaded and warmed up", registry=r)

    def batch_done(self, size: int, padded_tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)
        self.batch_seconds.observe(seconds)

    def oom_split(self, size: int) -> None:
        self.oom_splits.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

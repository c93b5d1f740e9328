"""Prometheus metrics of the bot, in a registry of its own (one per running bot, so tests can run several).

Scraped at ``/metrics`` on the bot's HTTP server (``METRICS_PORT`` in polling mode, the webhook server in
webhook mode). The series: updates by type, replies by kind and outcome, Telegram's error answers by method and
code (429 included), handler latency, the interaction writer's backlog and dead letters, model latency.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BotMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.updates = Counter("mlm_bot_updates", "Updates received, by type", ["type"], registry=r)
        self.replies = Counter(
            "mlm_bot_replies",
            "Interactions answered, by kind (guide, prediction, inline, comment ...) and outcome (ok or why not)",
            ["kind", "outcome"],
            registry=r,
        )
        self.telegram_errors = Counter(
            "mlm_bot_telegram_errors",
            "Bot API calls Telegram refused or that failed on the way, by method and HTTP code (network, timeout)",
            ["method", "code"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "mlm_bot_handler_seconds",
            "From an update's arrival at the handlers to the end of its handling, by update type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "mlm_bot_model_seconds", "Model calls, as the bot waits", ["call"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.writer_backlog = Gauge(
            "mlm_bot_writer_backlog", "Interaction-log writes waiting for the database", registry=r
        )
        self.dead_letters = Gauge(
            "mlm_bot_writer_dead_letters", "Writes the database refused (kept as dead letters), since start", registry=r
        )
        self.refused = Counter(
            "mlm_bot_refused_updates",
            "Updates refused before any handler: over the person's budget, or a button that does not belong there",
            ["reason"],
            registry=r,
        )
        self.up = Gauge("mlm_bot_up", "1 while the bot is handling updates", registry=r)

    def watch_writer(self, writer: Any) -> None:
        """Backlog and dead letters are read from the writer at scrape time."""
        self.writer_backlog.set_function(lambda: writer.pending)
        self.dead_letters.set_function(lambda: writer.dead_letters)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics, one registry per app (so that tests and embedded apps never share counters).

The listen path updates counters once per flushed batch (about a second of audio), not per frame.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        # No "_created" timestamp series: they double the output and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.listen_sessions_active = Gauge(
            "switchboard_listen_sessions_active", "Listen sessions running in this process", registry=r
        )
        self.listen_bytes = Counter("switchboard_listen_bytes", "PCM bytes received from listen sockets", registry=r)
        self.listen_frames = Counter(
            "switchboard_listen_frames", "Binary frames received from listen sockets", registry=r
        )
        self.listen_text_frames = Counter("switchboard_listen_text_frames", "Text frames received", registry=r)
        self.listen_reconnects = Counter("switchboard_listen_reconnects", "Listen socket reconnections", registry=r)
        self.listen_gaps = Counter("switchboard_listen_gaps", "Gaps recorded in recordings", registry=r)
        self.listen_failures = Counter(
            "switchboard_listen_session_failures", "Listen sessions that crashed or gave up", ["reason"], registry=r
        )
        self.storage_write_seconds = Histogram(
            "switchboard_storage_write_seconds",
            "Time to write one batch of audio to storage",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.storage_write_errors = Counter(
            "switchboard_storage_write_errors", "Failed writes of audio to storage", registry=r
        )
        self.fanout_listeners = Gauge("switchboard_fanout_listeners", "Live fan-out listeners connected", registry=r)
        self.fanout_dropped = Counter(
            "switchboard_fanout_listeners_dropped", "Fan-out listeners dropped for being too slow", registry=r
        )
        self.webhooks = Counter("switchboard_webhooks", "Vapi server messages received", ["type"], registry=r)
        # Outbound webhooks (service.deliveries).
        self.webhook_deliveries = Counter(
            "switchboard_webhook_deliveries", "Outbound webhook deliveries finished", ["outcome"], registry=r
        )
        self.webhook_attempts = Counter(
            "switchboard_webhook_delivery_attempts", "Outbound webhook HTTP attempts", ["result"], registry=r
        )
        self.webhook_attempt_seconds = Histogram(
            "switchboard_webhook_delivery_attempt_seconds",
            "Time of one outbound webhook attempt, from the URL check to the response",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )

        # The tap (contract section 9): relays of request messages, forwards to upstreams.
        self.upstream_relays = Counter(
            "switchboard_upstream_relays",
            "Request messages relayed to the call's upstream (answered, failed: error answer, no-upstream)",
            ["outcome"],
            registry=r,
        )
        self.upstream_relay_seconds = Histogram(
            "switchboard_upstream_relay_seconds",
            "Time the upstream took to answer a relayed request message",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5),
            registry=r,
        )
        self.upstream_forwards = Counter(
            "switchboard_upstream_forward_attempts",
            "Forward attempts to upstreams (delivered, retry, abandoned)",
            ["outcome"],
            registry=r,
        )
        # Conversation analytics (service.analytics).
        self.analytics_runs = Counter(
            "switchboard_analytics_runs",
            "Recordings analysed, by outcome: completed, retried, failed, not-stored",
            ["outcome"],
            registry=r,
        )
        self.analytics_seconds = Histogram(
            "switchboard_analytics_seconds",
            "Time to analyse one recording (read and voice activity detection)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.analytics_audio_seconds = Counter(
            "switchboard_analytics_audio_seconds", "Seconds of recorded audio analysed", registry=r
        )

        # Rules (service.rules).
        self.rule_firings = Counter(
            "switchboard_rule_firings",
            "Rule firings by outcome: scheduled, fired, failed, skipped, duplicate (stopped by the exactly-once key)",
            ["rule", "status"],
            registry=r,
        )
        self.rule_failures = Counter(
            "switchboard_rule_failures", "Rule firings whose control message failed", ["reason"], registry=r
        )
        self.rule_fire_seconds = Histogram(
            "switchboard_rule_fire_seconds",
            "From a milestone reaching the rule engine to its control POST answered (immediate rules)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.rule_lateness_seconds = Histogram(
            "switchboard_rule_lateness_seconds",
            "How late a timed firing (delay, call.elapsed, user.silent) was answered after its due time",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
            registry=r,
        )
        self.rule_condition_errors = Counter(
            "switchboard_rule_condition_errors",
            "Rule conditions that failed at run time (taken as false)",
            ["rule"],
            registry=r,
        )
        self.rule_events_dropped = Counter(
            "switchboard_rule_events_dropped", "Milestones dropped because the rule queue was full", registry=r
        )

        # Recordings lifecycle (service.lifecycle).
        self.recording_stored_bytes = Gauge(
            "switchboard_recording_stored_bytes",
            "Bytes of recordings at rest, by format (pcm: raw segments, flac: archives); refreshed by each sweep",
            ["format"],
            registry=r,
        )
        self.calls_erased = Counter("switchboard_calls_erased", "Calls erased, by reason", ["reason"], registry=r)
        self.recordings_archived = Counter(
            "switchboard_recordings_archived", "Recordings re-encoded as lossless archives", registry=r
        )

    def track_active_sessions(self, count: Callable[[], int]) -> None:
        self.listen_sessions_active.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Litestar appends "; charset=utf-8" to every text/* type itself: without it, prometheus' type once.
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.removesuffix("; charset=utf-8")


class MetricsController(Controller):
    tags = ["service"]

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics", media_type=METRICS_MEDIA_TYPE)
    async def metrics(self, metrics: NamedDependency[Metrics]) -> Response[bytes]:
        return Response(metrics.render(), media_type=METRICS_MEDIA_TYPE)

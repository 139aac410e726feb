"""The worker's metrics: what an operator graphs and alerts on, served at ``/metrics``.

Counters come from the core's own counters (the difference before and after each fed batch), so
the metrics and the replay summary can never disagree about what was consumed, rejected, late or
duplicated. ``/healthz`` answers 503 while writes to Kafka are failing.
"""

from __future__ import annotations

from .metrics import MetricsServer, Registry

PREFIX = "otp_detector_"


class WorkerMetrics:
    """The registry and the metric objects the worker updates."""

    def __init__(self) -> None:
        self.registry = registry = Registry()
        self.records = registry.counter(PREFIX + "records_consumed_total",
                                        "Records consumed, by topic.", ["topic"])
        self.rejected = registry.counter(PREFIX + "records_rejected_total",
                                         "Records rejected (dead-lettered), by reason.", ["reason"])
        self.duplicates = registry.counter(PREFIX + "duplicates_total",
                                           "Exact duplicate mail records dropped.")
        self.anomalies = registry.counter(PREFIX + "anomaly_events_total",
                                          "Anomaly events published, by state.", ["state"])
        self.otp_attempts = registry.counter(PREFIX + "otp_attempts_total",
                                             "OTP delivery attempts joined, by outcome.", ["outcome"])
        self.write_failures = registry.counter(PREFIX + "write_failures_total",
                                               "Records whose write to Kafka failed (retried).")
        self.checkpoints = registry.counter(PREFIX + "checkpoints_total",
                                            "State checkpoints written and offsets committed.")
        self.evictions = registry.gauge(PREFIX + "evictions",
                                        "Entries evicted from bounded state by a size cap, by store.",
                                        ["store"])
        self.open_anomalies = registry.gauge(PREFIX + "open_anomalies", "Anomalies open now.")
        self.ambiguous_joins = registry.gauge(
            PREFIX + "ambiguous_joins",
            "Joins (since the state began) where the delivery's own status chose an answer "
            "other than the nearest one in its window.")
        self.slices = registry.gauge(PREFIX + "watched_slices",
                                     "Slices (sender domains, resolvers) with a model now.",
                                     ["dimension"])
        self.watermark = registry.gauge(PREFIX + "watermark_seconds",
                                        "Event-time watermark (Unix seconds).")
        self.lag = registry.gauge(PREFIX + "consumer_lag_records",
                                  "Records between the partition's end and the worker's position.",
                                  ["topic", "partition"])
        self.checkpoint_bytes = registry.gauge(PREFIX + "checkpoint_bytes",
                                               "Compressed size of the last checkpoint.")
        # A time, not an age: Prometheus computes the age (time() - it), and a worker that
        # stopped checkpointing still reports the time of its last one.
        self.last_checkpoint = registry.gauge(PREFIX + "last_checkpoint_timestamp_seconds",
                                              "When the last checkpoint was written and its "
                                              "offsets committed (Unix seconds; 0: none yet).")
        self.batch_seconds = registry.histogram(PREFIX + "batch_processing_seconds",
                                                "Time to process one polled batch.")

    def observe_feed(self, topic: str, records: int, before: dict, after: dict) -> None:
        """Account one fed batch from the core's counters before and after it."""
        self.records.labels(topic=topic).inc(records)
        for key, value in after.items():
            delta = value - before.get(key, 0)
            if delta <= 0:
                continue
            kind, _, label = key.partition(":")
            if kind == "rejected":
                self.rejected.labels(reason=label).inc(delta)
            elif kind == "anomalies":
                self.anomalies.labels(state=label).inc(delta)
            elif kind == "otp_outcome":
                self.otp_attempts.labels(outcome=label).inc(delta)
            elif key == "duplicates":
                self.duplicates.inc(delta)
        self.evictions.labels(store="dns_join").set(after.get("dns_evicted", 0))
        self.evictions.labels(store="dedup").set(after.get("dedup_evicted", 0))
        self.ambiguous_joins.set(after.get("ambiguous_joins", 0))
        for dimension in ("sender_domain", "resolver"):
            self.slices.labels(dimension=dimension).set(after.get(f"slices_{dimension}", 0))
            self.evictions.labels(store=f"{dimension}_slices").set(
                after.get(f"slices_{dimension}_evicted", 0))


def serve_worker_metrics(worker, host: str, port: int) -> MetricsServer | None:
    """Attach metrics to ``worker`` and serve them when ``port`` is set (0: no endpoint)."""
    worker.metrics = WorkerMetrics()
    if not port:
        return None
    return MetricsServer(worker.metrics.registry, host=host, port=port, health=worker.health).start()

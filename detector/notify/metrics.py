"""The notifier's metrics (prometheus_client), served at ``/metrics`` when a port is set.

``receiver`` is the receiver's name in the start-up log (``alertmanager``, ``webhook``, numbered
when there are several of a kind). Alert on ``otp_notifier_receiver_up == 0`` (deliveries to it
are failing and being retried) and on ``increase(otp_notifier_failed_total[...])`` (events a
receiver refused: they are in the dead-letter topic).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

PREFIX = "otp_notifier_"


class NotifierMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.consumed = Counter(PREFIX + "events_consumed", "Events read from the anomalies topic "
                                "(history read back at start included).", registry=registry)
        self.invalid = Counter(PREFIX + "events_invalid", "Messages on the anomalies topic that "
                               "are not anomaly events (dead-lettered), by reason.", ["reason"],
                               registry=registry)
        self.sent = Counter(PREFIX + "sent", "Events a receiver accepted.", ["receiver"],
                            registry=registry)
        self.resent = Counter(PREFIX + "resent", "Alerts of open anomalies re-sent to "
                              "Alertmanager so it does not forget them.", ["receiver"],
                              registry=registry)
        self.failed = Counter(PREFIX + "failed", "Events a receiver refused (dead-lettered), "
                              "by receiver and HTTP status.", ["receiver", "status"],
                              registry=registry)
        self.retries = Counter(PREFIX + "retries", "Requests retried after no answer, a "
                               "timeout, 408, 429 or 5xx.", ["receiver"], registry=registry)
        self.receiver_up = Gauge(PREFIX + "receiver_up", "1 unless the latest request to the "
                                 "receiver went unanswered or failed on its side.", ["receiver"],
                                 registry=registry)
        self.pending = Gauge(PREFIX + "pending_events", "Events read and not yet accepted or "
                             "refused by the receiver (Alertmanager: alerts, the newest state "
                             "of each).", ["receiver"], registry=registry)
        self.open_anomalies = Gauge(PREFIX + "open_anomalies", "Anomalies open now (as the "
                                    "topic says).", registry=registry)
        self.last_commit = Gauge(PREFIX + "last_commit_timestamp_seconds", "When offsets were "
                                 "last committed (Unix seconds).", registry=registry)

    def add_receiver(self, name: str) -> None:
        """Expose every series of a receiver from the start (0, and up until proven down)."""
        self.sent.labels(receiver=name)
        self.resent.labels(receiver=name)
        self.retries.labels(receiver=name)
        self.receiver_up.labels(receiver=name).set(1)
        self.pending.labels(receiver=name).set(0)

    def serve(self, host: str, port: int):
        """Start the endpoint (a daemon thread); returns the server, to ``shutdown()``."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

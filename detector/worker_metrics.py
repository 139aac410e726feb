"""The worker's metrics (prometheus_client) and the port that serves them: ``/metrics``, ``/healthz``.

Each worker has its own ``CollectorRegistry``, not the library's global one, so several workers
(or tests) in one process never share a series. Counters come from the core's own counters: once
per step the worker calls ``observe_core``, which adds the difference since its last reading of
the same core, so the metrics and a replay's summary count the same things, including what a
partition going idle or the end of a batch run joins and judges between two fed batches. A
restored core's counters (they come with its checkpoint) were counted by whichever member ran it
before: ``follow`` takes them as the starting point. Per fed batch only the records consumed are
added; nothing here runs per record (``benchmarks/metrics_overhead.py`` measures what it costs).

A partition revoked from this member stops reporting (``revoked``): its lag series is removed,
not frozen at its last value; and a member left without partitions (``standby``) reports no open
anomalies, watermark, slices or evictions of a core it no longer runs, so ``max()`` over the
members in the dashboard and the alerts reads the active member's.

The port serves prometheus_client's WSGI application at ``/metrics`` (text format 0.0.4, or
OpenMetrics when the scraper asks for it; gzip when accepted), ``/healthz`` (200 while the worker
is healthy, 503 while writes to Kafka are failing) and an index at ``/``.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger(__name__)

PREFIX = "otp_detector_"

#: Upper bounds in seconds for processing one poll's batches: 5 ms to 10 s (Prometheus' classic
#: defaults without 75 ms, 750 ms and 7.5 s; the dashboard's p50/p99 need no finer steps).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)

#: The core's gauges of bounded state, reported by ``store``: (store, key in ``Detector.stats()``).
EVICTIONS = (("dns_join", "dns_evicted"), ("dedup", "dedup_evicted"),
             ("sender_domain_slices", "slices_sender_domain_evicted"),
             ("resolver_slices", "slices_resolver_evicted"))
SLICE_DIMENSIONS = ("sender_domain", "resolver")


class WorkerMetrics:
    """The registry and the metric objects the worker updates (see the module docstring).

    >>> from prometheus_client import generate_latest
    >>> metrics = WorkerMetrics()
    >>> metrics.consumed("mail-flow", 500)
    >>> metrics.lag.labels(topic="mail-flow", partition="0").set(42)
    >>> metrics.revoked([("mail-flow", 0)])
    >>> text = generate_latest(metrics.registry).decode()
    >>> 'otp_detector_records_consumed_total{topic="mail-flow"} 500.0' in text
    True
    >>> "otp_detector_consumer_lag_records{" in text
    False
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.records = Counter(PREFIX + "records_consumed_total", "Records consumed, by topic.",
                               ["topic"], registry=registry)
        self.rejected = Counter(PREFIX + "records_rejected_total",
                                "Records rejected (dead-lettered), by reason.", ["reason"],
                                registry=registry)
        self.duplicates = Counter(PREFIX + "duplicates_total",
                                  "Exact duplicate mail records dropped.", registry=registry)
        self.anomalies = Counter(PREFIX + "anomaly_events_total",
                                 "Anomaly events published, by state.", ["state"],
                                 registry=registry)
        self.client_mismatched = Counter(
            PREFIX + "client_mismatched_lookups_total",
            "Lookups of OTP deliveries counted UNMATCHED only because every answer in their "
            "window came from another client than the delivery's server (join.match_client).",
            registry=registry)
        self.otp_attempts = Counter(PREFIX + "otp_attempts_total",
                                    "OTP delivery attempts joined, by outcome.", ["outcome"],
                                    registry=registry)
        self.write_failures = Counter(PREFIX + "write_failures_total",
                                      "Records whose write to Kafka failed (retried).",
                                      registry=registry)
        self.checkpoints = Counter(PREFIX + "checkpoints_total",
                                   "State checkpoints written and offsets committed.",
                                   registry=registry)
        self.evictions = Gauge(PREFIX + "evictions",
                               "Entries evicted from bounded state by a size cap, by store.",
                               ["store"], registry=registry)
        self.open_anomalies = Gauge(PREFIX + "open_anomalies", "Anomalies open now.",
                                    registry=registry)
        self.ambiguous_joins = Gauge(
            PREFIX + "ambiguous_joins",
            "Joins (since the state began) where the delivery's own status chose an answer "
            "other than the nearest one in its window.", registry=registry)
        self.slices = Gauge(PREFIX + "watched_slices",
                            "Slices (sender domains, resolvers) with a model now.", ["dimension"],
                            registry=registry)
        self.watermark = Gauge(PREFIX + "watermark_seconds",
                               "Event-time watermark (Unix seconds; 0: none).", registry=registry)
        self.lag = Gauge(PREFIX + "consumer_lag_records",
                         "Records between the partition's end and the worker's position.",
                         ["topic", "partition"], registry=registry)
        self.checkpoint_bytes = Gauge(PREFIX + "checkpoint_bytes",
                                      "Compressed size of the last checkpoint.", registry=registry)
        # A time, not an age: Prometheus computes the age (time() - it), and a worker that
        # stopped checkpointing still reports the time of its last one.
        self.last_checkpoint = Gauge(PREFIX + "last_checkpoint_timestamp_seconds",
                                     "When the last checkpoint was written and its offsets "
                                     "committed (Unix seconds; 0: none yet).", registry=registry)
        self.batch_seconds = Histogram(PREFIX + "batch_processing_seconds",
                                       "Time to process one poll's batches.",
                                       buckets=DURATION_BUCKETS, registry=registry)
        self._core = None                  # the Detector whose counters are being followed
        self._seen: dict = {}              # its stats() at the last reading
        # Per key of Detector.stats(): the counter series it adds to (None: not a counter), and
        # the gauge series set from it; looked up once, not at every step.
        self._counter_of: dict[str, Counter | None] = {}
        self._gauges: list[tuple[Gauge, str]] = []
        self._consumed_of: dict[str, Counter] = {}

    def consumed(self, topic: str, records: int) -> None:
        """One fed batch of ``topic``: the only update per batch."""
        try:
            series = self._consumed_of[topic]
        except KeyError:
            series = self._consumed_of[topic] = self.records.labels(topic=topic)
        series.inc(records)

    def follow(self, detector) -> None:
        """From now on, count what ``detector`` (a fresh or restored core) adds to its counters."""
        self._core, self._seen = detector, detector.stats()
        self._gauges = [(self.open_anomalies, "open_anomalies"),
                        (self.ambiguous_joins, "ambiguous_joins"),
                        *((self.evictions.labels(store=store), key) for store, key in EVICTIONS),
                        *((self.slices.labels(dimension=dimension), f"slices_{dimension}")
                          for dimension in SLICE_DIMENSIONS)]

    def observe_core(self) -> None:
        """Add what the followed core counted since the last reading; set the core's gauges."""
        core = self._core
        if core is None:
            return
        now = core.stats()
        seen, counter_of = self._seen, self._counter_of
        for key, value in now.items():
            delta = value - seen.get(key, 0)
            if delta > 0:
                try:
                    counter = counter_of[key]
                except KeyError:
                    counter = counter_of[key] = self._counter_for(key)
                if counter is not None:
                    counter.inc(delta)
        self._seen = now
        watermark = core.watermark
        self.watermark.set(watermark if watermark > -math.inf else 0)
        for gauge, key in self._gauges:
            gauge.set(now.get(key, 0))

    def _counter_for(self, key: str) -> Counter | None:
        """The counter series a key of ``Detector.stats()`` adds to, if it is one we export."""
        kind, _, label = key.partition(":")
        if kind == "rejected":
            return self.rejected.labels(reason=label)
        if kind == "anomalies":
            return self.anomalies.labels(state=label)
        if kind == "otp_outcome":
            return self.otp_attempts.labels(outcome=label)
        if key == "duplicates":
            return self.duplicates
        if key == "client_mismatched_lookups":
            return self.client_mismatched
        return None

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """``partitions`` (topic, partition) were revoked and the core is dropped: count what it
        did since the last reading, and stop reporting the lag of those partitions."""
        self.observe_core()
        self._core, self._seen = None, {}
        for topic, partition in partitions:
            self.lag.remove(topic, str(partition))

    def standby(self) -> None:
        """No partitions assigned: no gauges of a core this member no longer runs.

        Not at the revoke: a rebalance usually gives the partitions straight back, and open
        anomalies dropping to 0 meanwhile would restart the ``for`` of an alert on them."""
        self._gauges = []
        self.watermark.set(0)
        self.open_anomalies.set(0)
        self.ambiguous_joins.set(0)
        self.evictions.clear()
        self.slices.clear()


class MetricsServer:
    """``GET /metrics``, ``GET /healthz`` and ``GET /`` on a daemon thread.

    ``health()`` returns ``(ok, detail)``: ``/healthz`` answers 200 with ``{"ok": true, "detail":
    detail}`` when ok, 503 otherwise (also when ``health`` raises, with the error in the detail).
    Without ``health`` the worker counts as healthy while it serves. ``port=0`` binds a free port;
    ``.port`` is the one bound after ``start()``.

    >>> with MetricsServer(CollectorRegistry()) as server:
    ...     server.port > 0
    True
    """

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], tuple[bool, dict]] | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.health = health or (lambda: (True, {}))
        self._metrics_app = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return self._server.server_address[1]

    def start(self) -> "MetricsServer":
        """Bind and serve; an address that cannot be bound raises ``OSError``."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        family, *_, address = socket.getaddrinfo(self.host, self.requested_port,
                                                 type=socket.SOCK_STREAM,
                                                 flags=socket.AI_PASSIVE)[0]
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        self._server = make_server(str(address[0]), self.requested_port, self._app,
                                   server_class=server_class, handler_class=_QuietHandler)
        # A short poll so stop() returns within 0.1 s instead of the default 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="metrics-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; stopping a stopped server does nothing."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _app(self, environ: dict, start_response) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/metrics":
                return self._metrics_app(environ, start_response)
            if environ["REQUEST_METHOD"] != "GET":
                return _reply(start_response, "405 Method Not Allowed", "text/plain; charset=utf-8",
                              b"GET only\n", (("Allow", "GET"),))
            if path == "/healthz":
                ok, detail = self._health()
                body = orjson.dumps({"ok": ok, "detail": detail}, default=str)
                return _reply(start_response, "200 OK" if ok else "503 Service Unavailable",
                              "application/json", body)
            if path == "/":
                return _reply(start_response, "200 OK", "text/plain; charset=utf-8", INDEX)
            return _reply(start_response, "404 Not Found", "text/plain; charset=utf-8",
                          b"not found; see /\n")
        except Exception:
            # In the worker's structured log, not as wsgiref's traceback on stderr.
            log.warning("metrics request for %s failed", path, exc_info=True)
            return _reply(start_response, "500 Internal Server Error",
                          "text/plain; charset=utf-8", b"internal error; see the worker's log\n")

    def _health(self) -> tuple[bool, dict]:
        try:
            ok, detail = self.health()
            return bool(ok), detail
        except Exception as err:
            log.warning("health check failed", exc_info=True)
            return False, {"error": f"{type(err).__name__}: {err}"}


INDEX = b"otp-dns-detector\n/metrics  Prometheus metrics\n/healthz  health (200 ok, 503 not)\n"


def _reply(start_response, status: str, content_type: str, body: bytes,
           headers: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            *headers])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per request, as prometheus_client's own ``start_http_server``."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # The default prints a traceback to stderr; a scraper hanging up mid-answer belongs in the
        # worker's structured log, not in its stderr.
        log.warning("metrics request from %s failed", client_address[0], exc_info=True)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        """Silent: a scrape every few seconds would drown the worker's own log lines."""


def serve_worker_metrics(worker, host: str, port: int) -> MetricsServer | None:
    """Attach metrics to ``worker`` and serve them when ``port`` is set (0: no endpoint)."""
    worker.metrics = WorkerMetrics()
    if not port:
        return None
    return MetricsServer(worker.metrics.registry, host=host, port=port, health=worker.health).start()

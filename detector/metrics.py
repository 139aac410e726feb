"""Prometheus metrics for the worker: a registry, the text exposition format and a /metrics endpoint.

The worker thread updates counters, gauges and histograms while an HTTP thread renders them for a
scrape, so every update and every render holds the registry's one lock and a scrape sees one
consistent moment. The text format is version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/), a few lines of text, so nothing here
needs prometheus_client. Names follow https://prometheus.io/docs/practices/naming/: the project
prefix ``otp_detector_``, counters end in ``_total``, durations are in ``_seconds``.

>>> registry = Registry()
>>> consumed = registry.counter("otp_detector_records_total", "Records consumed.", ["topic"])
>>> consumed.labels(topic="mail").inc(500)
>>> print(registry.render().decode(), end="")
# HELP otp_detector_records_total Records consumed.
# TYPE otp_detector_records_total counter
otp_detector_records_total{topic="mail"} 500
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import json
import logging
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds in seconds for durations such as processing one consumed batch (Prometheus' own
#: defaults): 5 ms to 10 s; anything slower lands in ``+Inf``.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# A sample before formatting: its name, its (label, value) pairs, and a number, or for a gauge
# function the callable that gives the number at scrape time.
Sample = tuple[str, tuple[tuple[str, str], ...], "float | Callable[[], float]"]
S = TypeVar("S", "CounterSeries", "GaugeSeries", "HistogramSeries")


class MetricError(ValueError):
    """A metric name, label set or update that Prometheus would reject or that makes no sense."""


def format_value(value: float) -> str:
    """A sample value or ``le`` bound as Prometheus writes it.

    >>> [format_value(v) for v in (3, 0.25, 2.0, float("inf"), float("-inf"), float("nan"))]
    ['3', '0.25', '2', '+Inf', '-Inf', 'NaN']
    """
    number = float(value)      # numpy scalars too: repr(np.float64(0.5)) is not a number
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def escape_label_value(value: str) -> str:
    r"""A label value for inside double quotes: backslash, double quote and newline escaped.

    >>> print(escape_label_value('C:\\dns "a"\nb'))
    C:\\dns \"a\"\nb
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text: backslash and newline escaped (a double quote is legal there)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class CounterSeries:
    """One counter series. It only goes up; a restart resets it to 0, which ``rate()`` expects."""

    __slots__ = ("_name", "_lock", "value")

    def __init__(self, name: str, lock: threading.Lock) -> None:
        self._name = name
        self._lock = lock
        self.value: float = 0

    def inc(self, n: float = 1) -> None:
        if n < 0:
            raise MetricError(f"{self._name}: a counter only goes up, got inc({n})")
        with self._lock:
            self.value += n

    def samples(self, name: str, labels: tuple) -> list[Sample]:
        return [(name, labels, self.value)]


class GaugeSeries:
    """One gauge series: a value that is set, moved, or read from a function at scrape time."""

    __slots__ = ("_name", "_lock", "value", "function")

    def __init__(self, name: str, lock: threading.Lock) -> None:
        self._name = name
        self._lock = lock
        self.value: float = 0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        """Set the value; a function set earlier is dropped."""
        with self._lock:
            self.value = value
            self.function = None

    def inc(self, n: float = 1) -> None:
        with self._lock:
            if self.function is not None:
                # Moving a value that is never reported would hide a bug in the caller.
                raise MetricError(f"{self._name}: the gauge reports a function; set() it first")
            self.value += n

    def dec(self, n: float = 1) -> None:
        self.inc(-n)

    def set_function(self, function: Callable[[], float]) -> None:
        """Report ``function()`` at every scrape, for values the worker owns elsewhere (lag)."""
        with self._lock:
            self.function = function

    def samples(self, name: str, labels: tuple) -> list[Sample]:
        return [(name, labels, self.function or self.value)]


class HistogramSeries:
    """One histogram series: a count per bucket, the sum and the count of observations."""

    __slots__ = ("_lock", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...], lock: threading.Lock) -> None:
        self._lock = lock
        self.bounds = bounds                   # sorted upper bounds, the last is +Inf
        self.counts = [0] * len(bounds)        # per bucket, not cumulative: observe touches one
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value, as ``le`` is inclusive; NaN compares false with every bound
        # and goes to +Inf, as in the Go client.
        index = len(self.bounds) - 1 if value != value else bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.sum += value

    def samples(self, name: str, labels: tuple) -> list[Sample]:
        rows: list[Sample] = []
        total = 0
        for bound, count in zip(self.bounds, self.counts):
            total += count
            rows.append((f"{name}_bucket", labels + (("le", format_value(bound)),), total))
        rows.append((f"{name}_sum", labels, self.sum))
        rows.append((f"{name}_count", labels, total))
        return rows


class Metric(ABC, Generic[S]):
    """A named metric and its series, one per combination of label values.

    An unlabelled metric has exactly one series and takes its updates directly
    (``counter.inc()``); a labelled one hands out series with ``labels(...)``, by position or by
    name, and can drop them again with ``remove(...)`` or ``clear()`` (a partition revoked from
    this worker should stop reporting lag, not freeze at its last value).
    """

    kind = ""

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...],
                 lock: threading.Lock) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._lock = lock
        self._series: dict[tuple[str, ...], S] = {}
        if not labelnames:
            self._series[()] = self._new_series()

    @property
    def exposed_names(self) -> tuple[str, ...]:
        """The names this metric writes, to catch two metrics writing the same one."""
        return (self.name,)

    def labels(self, *values: object, **labels: object) -> S:
        key = self._key(values, labels)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
        return series

    def remove(self, *values: object, **labels: object) -> None:
        """Stop reporting one series; removing a series never created is not an error."""
        key = self._key(values, labels)
        with self._lock:
            self._series.pop(key, None)

    def clear(self) -> None:
        """Stop reporting every series of a labelled metric."""
        if not self.labelnames:
            raise MetricError(f"{self.name} has no labels: its one series cannot be cleared")
        with self._lock:
            self._series.clear()

    def samples(self) -> list[Sample]:
        """Every series' samples, ordered by label values so successive scrapes line up."""
        rows: list[Sample] = []
        for key in sorted(self._series):
            rows.extend(self._series[key].samples(self.name, tuple(zip(self.labelnames, key))))
        return rows

    @abstractmethod
    def _new_series(self) -> S:
        """A fresh series of this metric's kind."""

    def _only(self) -> S:
        if self.labelnames:
            raise MetricError(f"{self.name} has labels ({', '.join(self.labelnames)}): "
                              f"call .labels(...) first")
        return self._series[()]

    def _key(self, values: tuple, labels: dict) -> tuple[str, ...]:
        if not self.labelnames:
            raise MetricError(f"{self.name} has no labels")
        if values and labels:
            raise MetricError(f"{self.name}: give label values by position or by name, not both")
        if labels:
            if set(labels) != set(self.labelnames):
                raise MetricError(f"{self.name} takes labels ({', '.join(self.labelnames)}), "
                                  f"got ({', '.join(sorted(labels))})")
            values = tuple(labels[name] for name in self.labelnames)
        elif len(values) != len(self.labelnames):
            raise MetricError(f"{self.name} takes {len(self.labelnames)} label values "
                              f"({', '.join(self.labelnames)}), got {len(values)}")
        return tuple(str(value) for value in values)


class Counter(Metric[CounterSeries]):
    kind = "counter"

    def _new_series(self) -> CounterSeries:
        return CounterSeries(self.name, self._lock)

    def inc(self, n: float = 1) -> None:
        self._only().inc(n)


class Gauge(Metric[GaugeSeries]):
    kind = "gauge"

    def _new_series(self) -> GaugeSeries:
        return GaugeSeries(self.name, self._lock)

    def set(self, value: float) -> None:
        self._only().set(value)

    def inc(self, n: float = 1) -> None:
        self._only().inc(n)

    def dec(self, n: float = 1) -> None:
        self._only().dec(n)

    def set_function(self, function: Callable[[], float]) -> None:
        self._only().set_function(function)


class Histogram(Metric[HistogramSeries]):
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...],
                 lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        super().__init__(name, help, labelnames, lock)

    @property
    def exposed_names(self) -> tuple[str, ...]:
        return (self.name, f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self.bounds, self._lock)

    def observe(self, value: float) -> None:
        self._only().observe(value)


class Registry:
    """The worker's metrics, rendered in registration order in the text format 0.0.4.

    >>> registry = Registry()
    >>> registry.gauge("otp_detector_watermark_lag_seconds", "Wall clock minus watermark.").set(2.5)
    >>> registry.render().decode().splitlines()[-1]
    'otp_detector_watermark_lag_seconds 2.5'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}
        self._exposed: dict[str, str] = {}    # every written name -> the metric that writes it

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        _check_metric_name(name)
        if not name.endswith("_total"):
            raise MetricError(f"counter name {name!r} must end in _total "
                              f"(https://prometheus.io/docs/practices/naming/)")
        return self._register(Counter(name, help, _check_labelnames(name, labelnames), self._lock))

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Gauge:
        _check_metric_name(name)
        return self._register(Gauge(name, help, _check_labelnames(name, labelnames), self._lock))

    def histogram(self, name: str, help: str, buckets: Iterable[float] = DURATION_BUCKETS,
                  labelnames: Iterable[str] = ()) -> Histogram:
        _check_metric_name(name)
        labels = _check_labelnames(name, labelnames)
        if "le" in labels:
            raise MetricError(f"{name}: label name 'le' is reserved for histogram buckets")
        return self._register(Histogram(name, help, labels, self._lock, _check_buckets(name, buckets)))

    def render(self) -> bytes:
        """Every metric as text: HELP and TYPE lines, then one line per sample."""
        with self._lock:
            snapshot = [(metric, metric.samples()) for metric in self._metrics.values()]
        lines = []
        for metric, samples in snapshot:
            lines.append(f"# HELP {metric.name} {escape_help(metric.help)}\n")
            lines.append(f"# TYPE {metric.name} {metric.kind}\n")
            for name, labels, value in samples:
                if callable(value):
                    # Called outside the lock: a function may take the worker's own locks, and a
                    # slow one must not hold up the worker's updates.
                    value = _call_gauge_function(name, value)
                if labels:
                    pairs = ",".join(f'{label}="{escape_label_value(text)}"' for label, text in labels)
                    lines.append(f"{name}{{{pairs}}} {format_value(value)}\n")
                else:
                    lines.append(f"{name} {format_value(value)}\n")
        return "".join(lines).encode("utf-8")

    def _register(self, metric: Metric):
        with self._lock:
            for name in metric.exposed_names:
                if name in self._exposed:
                    raise MetricError(f"{metric.name}: the name {name!r} is already written by "
                                      f"metric {self._exposed[name]!r}")
            for name in metric.exposed_names:
                self._exposed[name] = metric.name
            self._metrics[metric.name] = metric
        return metric


def _call_gauge_function(name: str, function: Callable[[], float]) -> float:
    try:
        return float(function())
    except Exception:
        # One broken function must not cost the scrape of every other metric; NaN shows the gap.
        log.warning("gauge function for %s failed", name, exc_info=True)
        return math.nan


def _check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise MetricError(f"invalid metric name {name!r}: must match {METRIC_NAME.pattern}")


def _check_labelnames(metric: str, labelnames: Iterable[str]) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        # tuple("topic") would silently become five one-letter labels.
        raise MetricError(f"{metric}: labelnames must be a list of names, not the string {labelnames!r}")
    names = tuple(labelnames)
    for label in names:
        if not isinstance(label, str) or not LABEL_NAME.fullmatch(label):
            raise MetricError(f"{metric}: invalid label name {label!r}: must match {LABEL_NAME.pattern}")
        if label.startswith("__"):
            raise MetricError(f"{metric}: label name {label!r} is reserved (starts with __)")
    if len(set(names)) != len(names):
        raise MetricError(f"{metric}: duplicate label names in {names}")
    return names


def _check_buckets(metric: str, buckets: Iterable[float]) -> tuple[float, ...]:
    bounds = [float(bound) for bound in buckets]
    if any(math.isnan(bound) for bound in bounds):
        raise MetricError(f"{metric}: a bucket bound is NaN")
    if any(low >= high for low, high in zip(bounds, bounds[1:])):
        raise MetricError(f"{metric}: bucket bounds must increase strictly, got {bounds}")
    if not bounds or bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


class MetricsServer:
    """``GET /metrics``, ``GET /healthz`` and ``GET /`` on a daemon thread.

    ``health()`` returns ``(ok, detail)``: ``/healthz`` answers 200 with ``{"ok": true, "detail":
    detail}`` when ok, 503 otherwise (also when ``health`` raises, with the error in the detail).
    Without ``health`` the worker counts as healthy while it serves. ``port=0`` binds a free port;
    ``.port`` is the one bound after ``start()``.

    >>> with MetricsServer(Registry()) as server:
    ...     server.port > 0
    True
    """

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], tuple[bool, dict]] | None = None) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self.health = health or (lambda: (True, {}))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return self._server.server_address[1]

    def start(self) -> "MetricsServer":
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        server = _Server((self.host, self.requested_port), _Handler)
        server.registry = self.registry
        server.health = self.health
        # A short poll so stop() returns within 0.1 s instead of the default 0.5 s.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                                        name="metrics-http", daemon=True)
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; stopping a stopped server does nothing."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "MetricsServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


INDEX = b"otp-dns-detector\n/metrics  Prometheus metrics\n/healthz  health (200 ok, 503 not)\n"


class _Server(ThreadingHTTPServer):
    registry: Registry
    health: Callable[[], tuple[bool, dict]]

    def handle_error(self, request, client_address) -> None:
        # The default prints a traceback to stderr; a scraper hanging up mid-answer belongs in the
        # worker's structured log, not in its stderr.
        log.warning("metrics request from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE, self.server.registry.render())
        elif path == "/healthz":
            ok, detail = self._health()
            body = json.dumps({"ok": ok, "detail": detail}, default=str).encode("utf-8")
            self._reply(200 if ok else 503, "application/json", body)
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8", INDEX)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found; see /\n")

    def _health(self) -> tuple[bool, dict]:
        try:
            ok, detail = self.server.health()
            return bool(ok), detail
        except Exception as err:
            log.warning("health check failed", exc_info=True)
            return False, {"error": f"{type(err).__name__}: {err}"}

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        """Silent: a scrape every few seconds would drown the worker's own log lines."""

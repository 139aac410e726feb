"""The metrics registry and endpoint: given these updates, this exposition text and these answers."""

import json
import math
import threading
import urllib.error
import urllib.request

import pytest

from detector.metrics import CONTENT_TYPE, MetricError, MetricsServer, Registry


def worker_after_one_batch() -> Registry:
    """A worker's registry after a batch: records per topic, one anomaly, a watermark, the lag of
    one partition read at scrape time, and four batch durations (one on a bucket bound)."""
    registry = Registry()
    consumed = registry.counter("otp_detector_records_total", "Records consumed, by topic.", ["topic"])
    consumed.labels(topic="mail").inc(120)
    consumed.labels("dns").inc(80)
    registry.counter("otp_detector_anomalies_total", "Anomaly events produced.").inc()
    registry.gauge("otp_detector_watermark_seconds", "Event-time watermark, Unix seconds.").set(1714564800.25)
    lag = registry.gauge("otp_detector_consumer_lag_records", "Records behind the partition end.",
                         ["topic", "partition"])
    lag.labels(topic="mail", partition=0).set_function(lambda: 42)
    durations = registry.histogram("otp_detector_batch_duration_seconds",
                                   "Time to process one consumed batch.", buckets=[0.25, 0.5, 1])
    for seconds in (0.125, 0.25, 0.5, 3):
        durations.observe(seconds)
    return registry


GOLDEN = """\
# HELP otp_detector_records_total Records consumed, by topic.
# TYPE otp_detector_records_total counter
otp_detector_records_total{topic="dns"} 80
otp_detector_records_total{topic="mail"} 120
# HELP otp_detector_anomalies_total Anomaly events produced.
# TYPE otp_detector_anomalies_total counter
otp_detector_anomalies_total 1
# HELP otp_detector_watermark_seconds Event-time watermark, Unix seconds.
# TYPE otp_detector_watermark_seconds gauge
otp_detector_watermark_seconds 1714564800.25
# HELP otp_detector_consumer_lag_records Records behind the partition end.
# TYPE otp_detector_consumer_lag_records gauge
otp_detector_consumer_lag_records{topic="mail",partition="0"} 42
# HELP otp_detector_batch_duration_seconds Time to process one consumed batch.
# TYPE otp_detector_batch_duration_seconds histogram
otp_detector_batch_duration_seconds_bucket{le="0.25"} 2
otp_detector_batch_duration_seconds_bucket{le="0.5"} 3
otp_detector_batch_duration_seconds_bucket{le="1"} 3
otp_detector_batch_duration_seconds_bucket{le="+Inf"} 4
otp_detector_batch_duration_seconds_sum 3.875
otp_detector_batch_duration_seconds_count 4
"""


def test_a_worker_registry_renders_as_exposition_text():
    assert worker_after_one_batch().render().decode() == GOLDEN


def test_an_empty_registry_renders_nothing_and_an_unused_labelled_metric_only_its_header():
    registry = Registry()
    assert registry.render() == b""
    registry.counter("otp_detector_rejected_total", "Rejected lines.", ["reason"])
    assert registry.render() == (b"# HELP otp_detector_rejected_total Rejected lines.\n"
                                 b"# TYPE otp_detector_rejected_total counter\n")


def test_labelled_histograms_keep_their_labels_before_le():
    registry = Registry()
    durations = registry.histogram("otp_detector_commit_duration_seconds", "Offset commits.",
                                   buckets=[0.1], labelnames=["topic"])
    durations.labels("mail").observe(0.05)
    assert registry.render().decode().splitlines()[2:] == [
        'otp_detector_commit_duration_seconds_bucket{topic="mail",le="0.1"} 1',
        'otp_detector_commit_duration_seconds_bucket{topic="mail",le="+Inf"} 1',
        'otp_detector_commit_duration_seconds_sum{topic="mail"} 0.05',
        'otp_detector_commit_duration_seconds_count{topic="mail"} 1',
    ]


def test_special_values_are_written_as_prometheus_spells_them():
    registry = Registry()
    skew = registry.gauge("otp_detector_clock_skew_seconds", "Skew per source.", ["source"])
    skew.labels("up").set(math.inf)
    skew.labels("down").set(-math.inf)
    skew.labels("unknown").set(math.nan)
    assert registry.render().decode().splitlines()[2:] == [
        'otp_detector_clock_skew_seconds{source="down"} -Inf',
        'otp_detector_clock_skew_seconds{source="unknown"} NaN',
        'otp_detector_clock_skew_seconds{source="up"} +Inf',
    ]


def test_label_values_and_help_are_escaped():
    registry = Registry()
    rejected = registry.counter("otp_detector_rejected_total",
                                'Lines rejected "as is", per \\ reason\nsee docs.', ["reason"])
    rejected.labels(reason='bad "ts" in C:\\logs\nline 2').inc()
    assert registry.render().decode() == (
        '# HELP otp_detector_rejected_total Lines rejected "as is", per \\\\ reason\\nsee docs.\n'
        "# TYPE otp_detector_rejected_total counter\n"
        'otp_detector_rejected_total{reason="bad \\"ts\\" in C:\\\\logs\\nline 2"} 1\n')


@pytest.mark.parametrize("register, reason", [
    (lambda r: r.gauge("otp-detector-lag", "h"), "invalid metric name"),
    (lambda r: r.gauge("2xx_deliveries", "h"), "invalid metric name"),
    (lambda r: r.counter("otp_detector_records", "h"), "must end in _total"),
    (lambda r: r.gauge("otp_detector_lag", "h", ["topic-name"]), "invalid label name"),
    (lambda r: r.gauge("otp_detector_lag", "h", ["__topic"]), "reserved"),
    (lambda r: r.gauge("otp_detector_lag", "h", ["topic", "topic"]), "duplicate label names"),
    (lambda r: r.gauge("otp_detector_lag", "h", "topic"), "not the string"),
    (lambda r: r.histogram("otp_detector_delay_seconds", "h", labelnames=["le"]), "reserved"),
    (lambda r: r.histogram("otp_detector_delay_seconds", "h", buckets=[1, 0.5]), "increase strictly"),
    (lambda r: r.histogram("otp_detector_delay_seconds", "h", buckets=[math.nan]), "NaN"),
])
def test_names_prometheus_would_reject_are_refused_with_the_reason(register, reason):
    with pytest.raises(MetricError, match=reason):
        register(Registry())


def test_two_metrics_may_not_write_the_same_name():
    registry = Registry()
    registry.histogram("otp_detector_delay_seconds", "Delivery delay.")
    with pytest.raises(MetricError, match="already written by metric 'otp_detector_delay_seconds'"):
        registry.gauge("otp_detector_delay_seconds_count", "Clashes with the histogram's count.")
    with pytest.raises(MetricError, match="already written"):
        registry.gauge("otp_detector_delay_seconds", "Registered twice.")


def test_label_misuse_is_refused_with_the_expected_labels():
    registry = Registry()
    lag = registry.gauge("otp_detector_consumer_lag_records", "Lag.", ["topic", "partition"])
    with pytest.raises(MetricError, match=r"takes labels \(topic, partition\), got \(partition, topc\)"):
        lag.labels(topc="mail", partition=0)
    with pytest.raises(MetricError, match="takes 2 label values"):
        lag.labels("mail")
    with pytest.raises(MetricError, match="not both"):
        lag.labels("mail", partition=0)
    with pytest.raises(MetricError, match=r"call \.labels\(\.\.\.\) first"):
        lag.set(3)
    anomalies = registry.counter("otp_detector_anomalies_total", "Anomalies.")
    with pytest.raises(MetricError, match="has no labels"):
        anomalies.labels("x")
    with pytest.raises(MetricError, match="only goes up"):
        anomalies.inc(-1)


def test_revoked_partitions_stop_reporting_lag():
    registry = Registry()
    lag = registry.gauge("otp_detector_consumer_lag_records", "Lag.", ["partition"])
    for partition in range(3):
        lag.labels(partition).set(10 * partition)
    lag.remove(partition=1)
    lag.remove(7)                                   # never assigned: nothing to do
    assert registry.render().decode().splitlines()[2:] == [
        'otp_detector_consumer_lag_records{partition="0"} 0',
        'otp_detector_consumer_lag_records{partition="2"} 20',
    ]
    lag.clear()
    assert len(registry.render().decode().splitlines()) == 2


def test_a_gauge_function_is_read_at_each_scrape_and_a_broken_one_shows_nan(caplog):
    registry = Registry()
    behind = [5]
    registry.gauge("otp_detector_lag_records", "Lag.").set_function(lambda: behind[0])
    broken = registry.gauge("otp_detector_broken", "Raises.")
    broken.set_function(lambda: 1 / 0)
    assert b"otp_detector_lag_records 5\n" in registry.render()
    behind[0] = 9
    rendered = registry.render()
    assert b"otp_detector_lag_records 9\n" in rendered
    assert b"otp_detector_broken NaN\n" in rendered
    assert "gauge function for otp_detector_broken failed" in caplog.text
    with pytest.raises(MetricError, match="reports a function"):
        broken.inc()
    broken.set(1)                                   # set() replaces the function
    assert b"otp_detector_broken 1\n" in registry.render()


def test_concurrent_updates_are_all_counted_while_scrapes_run():
    registry = Registry()
    consumed = registry.counter("otp_detector_records_total", "Records.", ["topic"])
    durations = registry.histogram("otp_detector_batch_duration_seconds", "Batches.", buckets=[0.5])
    threads, increments = 8, 5000
    done = threading.Event()

    def consume(topic):
        for _ in range(increments):
            consumed.labels(topic=topic).inc()
            durations.observe(0.25)

    def scrape():
        while not done.is_set():
            registry.render()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=consume, args=(("mail", "dns")[i % 2],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    scraper.join()
    text = registry.render().decode()
    half = threads // 2 * increments
    assert f'otp_detector_records_total{{topic="dns"}} {half}\n' in text
    assert f'otp_detector_records_total{{topic="mail"}} {half}\n' in text
    assert f"otp_detector_batch_duration_seconds_count {threads * increments}\n" in text
    assert f"otp_detector_batch_duration_seconds_sum {threads * increments * 0.25:g}\n" in text


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def healthy():
    """A health check the test can flip: (ok, detail) as the worker would report it."""
    return {"ok": True, "detail": {"assigned_partitions": 3}}


@pytest.fixture
def server(healthy):
    with MetricsServer(worker_after_one_batch(), port=0,
                       health=lambda: (healthy["ok"], healthy["detail"])) as running:
        yield running


def test_metrics_are_served_as_text_version_0_0_4(server):
    status, headers, body = fetch(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    assert body.decode() == GOLDEN


def test_healthz_answers_200_while_healthy_and_503_when_not(server, healthy):
    status, headers, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body) == {"ok": True, "detail": {"assigned_partitions": 3}}
    healthy.update(ok=False, detail={"reason": "no poll for 60 s"})
    status, _, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 503
    assert json.loads(body) == {"ok": False, "detail": {"reason": "no poll for 60 s"}}


def test_a_health_check_that_raises_is_unhealthy():
    def broken():
        raise RuntimeError("consumer closed")

    with MetricsServer(Registry(), health=broken) as server:
        status, _, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 503
    assert json.loads(body) == {"ok": False, "detail": {"error": "RuntimeError: consumer closed"}}


def test_the_index_lists_the_endpoints_and_other_paths_are_404(server, capfd):
    status, _, body = fetch(f"http://127.0.0.1:{server.port}/")
    assert status == 200 and b"/metrics" in body and b"/healthz" in body
    status, _, _ = fetch(f"http://127.0.0.1:{server.port}/metrics/extra")
    assert status == 404
    assert capfd.readouterr().err == ""             # no request log lines on stderr


def test_the_server_releases_its_port_and_stops_once():
    server = MetricsServer(Registry()).start()
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError, match="not started"):
        server.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_revoked_partition_leaves_no_stale_lag_series():
    """After a rebalance the lag gauge reports only partitions this member still owns."""
    from detector.io.transport import TP
    from detector.settings import load_settings
    from detector.worker import Worker
    from detector.worker_metrics import WorkerMetrics

    worker = Worker(load_settings(environ={}), metrics=WorkerMetrics())
    worker.metrics.lag.labels(topic="mail-flow", partition="0").set(5)
    worker.metrics.lag.labels(topic="mail-flow", partition="1").set(7)
    worker._on_revoked({TP("mail-flow", 0)})
    text = worker.metrics.registry.render().decode()
    assert 'otp_detector_consumer_lag_records{topic="mail-flow",partition="1"} 7' in text
    assert 'partition="0"' not in text

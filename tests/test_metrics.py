"""The worker's metrics and their endpoint: given this input to the core, these samples; given
this health, this answer; given a member that loses its partitions, no series of them left."""

import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detector.core.pipeline import Detector
from detector.io.transport import TP
from detector.worker_metrics import MetricsServer, WorkerMetrics
from traffic import Traffic

README = Path(__file__).resolve().parent.parent / "README.md"


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition: (name, sorted label pairs) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(metrics: WorkerMetrics) -> dict[tuple, float]:
    return samples(generate_latest(metrics.registry).decode())


def by_label(scraped: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (sample, labels), value in scraped.items()
            if sample == name}


def servfail_spike() -> Traffic:
    """90 quiet minutes of OTP mail, 10 in which a quarter of the lookups SERVFAIL, 40 quiet."""
    return (Traffic().minutes(0, 90, 60, fail_every=150)
            .minutes(90, 10, 60, bad_every=4, rcode="SERVFAIL")
            .minutes(100, 40, 60, fail_every=150).sorted())


def feed_in_steps(detector: Detector, metrics: WorkerMetrics, mail: list, dns: list,
                  batch: int = 500) -> None:
    """Feed both streams as a worker's steps do, a reading of the core after each step."""
    for at in range(0, max(len(mail), len(dns)), batch):
        detector.feed("dns", dns[at:at + batch], source="dns")
        detector.feed("mail", mail[at:at + batch], source="mail")
        metrics.observe_core()


def core_counts(detector: Detector, kind: str) -> dict[str, int]:
    return {key.partition(":")[2]: value for key, value in detector.stats().items()
            if key.startswith(kind + ":") and value}


def test_the_counters_are_the_cores_counts_including_what_an_idle_input_joins():
    traffic = servfail_spike()
    mail = [*traffic.mail[:3000], b"{oops", traffic.mail[3000], *traffic.mail[3000:]]
    detector, metrics = Detector(), WorkerMetrics()
    detector.add_source("mail")
    detector.add_source("dns")
    metrics.follow(detector)
    feed_in_steps(detector, metrics, mail, traffic.dns)
    joined_while_fed = detector.stats()["otp_attempts"]
    # Both inputs go idle: the watermark moves on and the core joins what was waiting, between
    # two fed batches; the worker's next step counts it.
    detector.finish_source("mail")
    detector.finish_source("dns")
    assert detector.stats()["otp_attempts"] > joined_while_fed
    metrics.observe_core()

    scraped = scrape(metrics)
    assert by_label(scraped, "otp_detector_otp_attempts_total", "outcome") == \
        core_counts(detector, "otp_outcome")
    assert by_label(scraped, "otp_detector_records_rejected_total", "reason") == \
        core_counts(detector, "rejected") == {"not_json": 1}
    assert by_label(scraped, "otp_detector_anomaly_events_total", "state") == \
        core_counts(detector, "anomalies")
    assert core_counts(detector, "anomalies")["open"] >= 1
    assert scraped[("otp_detector_duplicates_total", ())] == 1
    assert scraped[("otp_detector_watermark_seconds", ())] == detector.watermark
    assert by_label(scraped, "otp_detector_watched_slices", "dimension") == {
        "sender_domain": 1, "resolver": 1}


def test_a_restored_core_is_counted_from_its_checkpoint_not_from_zero():
    """A member restores the checkpoint it wrote before a rebalance: its counters go on, they
    neither count the checkpoint's history again nor go back."""
    traffic = servfail_spike()
    first, metrics = Detector(), WorkerMetrics()
    for source in ("mail", "dns"):
        first.add_source(source)
    metrics.follow(first)
    feed_in_steps(first, metrics, traffic.mail[:4000], traffic.dns[:4000])
    before = scrape(metrics)
    restored = Detector(state=orjson.loads(orjson.dumps(first.snapshot())))
    metrics.revoked([])
    metrics.follow(restored)
    metrics.observe_core()
    attempts = by_label(before, "otp_detector_otp_attempts_total", "outcome")
    assert by_label(scrape(metrics), "otp_detector_otp_attempts_total", "outcome") == attempts
    feed_in_steps(restored, metrics, traffic.mail[4000:], traffic.dns[4000:])
    after = by_label(scrape(metrics), "otp_detector_otp_attempts_total", "outcome")
    assert sum(after.values()) == restored.stats()["otp_attempts"] > sum(attempts.values())


def test_a_revoke_drops_the_partitions_lag_and_a_standby_the_gauges_of_the_core():
    traffic = servfail_spike()
    detector, metrics = Detector(), WorkerMetrics()
    for source in ("mail", "dns"):
        detector.add_source(source)
    metrics.follow(detector)
    metrics.consumed("mail-flow", 6000)
    feed_in_steps(detector, metrics, traffic.mail[:6000], traffic.dns[:6000])
    for partition in range(3):
        metrics.lag.labels(topic="mail-flow", partition=str(partition)).set(10 * partition)

    metrics.revoked({TP("mail-flow", 0), TP("mail-flow", 2)})
    scraped = scrape(metrics)
    assert by_label(scraped, "otp_detector_consumer_lag_records", "partition") == {"1": 10}
    # A rebalance usually gives the partitions back: until it says otherwise, the core's gauges
    # keep their values (no drop to 0 and back between two scrapes).
    assert scraped[("otp_detector_watermark_seconds", ())] == detector.watermark > 0
    assert by_label(scraped, "otp_detector_watched_slices", "dimension") == {
        "sender_domain": 1, "resolver": 1}

    metrics.standby()
    scraped = scrape(metrics)
    assert scraped[("otp_detector_watermark_seconds", ())] == 0
    assert scraped[("otp_detector_open_anomalies", ())] == 0
    assert by_label(scraped, "otp_detector_watched_slices", "dimension") == {}
    assert by_label(scraped, "otp_detector_evictions", "store") == {}
    # Counters count what this process did: they stay.
    assert scraped[("otp_detector_records_consumed_total", (("topic", "mail-flow"),))] == 6000
    assert sum(by_label(scraped, "otp_detector_otp_attempts_total", "outcome").values()) == \
        detector.stats()["otp_attempts"]


def readme_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The README's table of the worker's metrics: name -> (type, label names)."""
    text = README.read_text()
    section = text[text.index("### Metrics and health"):]
    section = section[:section.index("\n#")]
    rows = re.findall(r"^\| `(otp_detector_\w+)(?:\{([\w,]*)\})?` \| (\w+) \|", section, re.M)
    assert rows
    return {name: (kind, tuple(labels.split(",")) if labels else ()) for name, labels, kind in rows}


def exported_metrics(metrics: WorkerMetrics) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, label names) of the registry's metrics, counters by their ``_total`` name.
    Read in OpenMetrics, where a ``_created`` sample belongs to its counter's family."""
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse

    exported = {}
    for family in parse(openmetrics(metrics.registry).decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {label for s in family.samples for label in s.labels if label != "le"}
        exported[name] = (family.type, tuple(sorted(labels)))
    return exported


def test_the_worker_exports_the_names_types_and_labels_the_readme_lists():
    metrics = WorkerMetrics()
    metrics.follow(Detector())
    metrics.observe_core()
    metrics.consumed("mail-flow", 1)
    metrics.rejected.labels(reason="late").inc()
    metrics.anomalies.labels(state="open").inc()
    metrics.otp_attempts.labels(outcome="SERVFAIL").inc()
    metrics.lag.labels(topic="mail-flow", partition="0").set(3)
    listed = {name: (kind, tuple(sorted(labels))) for name, (kind, labels) in readme_metrics().items()}
    assert exported_metrics(metrics) == listed


def test_detector_run_serves_metrics_and_health_while_it_waits_for_the_broker(tmp_path):
    """The command as deployed: the port answers before Kafka does, with every metric the
    README lists and no ``_created`` series beside the counters."""
    import subprocess

    from conftest import DETECTOR, STARTED
    from detector.io.broker import free_port
    from integrations import wait_for

    port = free_port()
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([*DETECTOR, "run", "--bootstrap-servers", "127.0.0.1:9",
                               "--metrics-port", str(port)], stdout=log, stderr=log)
    STARTED.append(worker)
    status, _, body = wait_for("the metrics port", lambda: fetch(
        f"http://127.0.0.1:{port}/healthz"), timeout=30,
        log=lambda: (tmp_path / "worker.log").read_text())
    assert status == 200 and orjson.loads(body)["detail"]["active"] is False
    text = fetch(f"http://127.0.0.1:{port}/metrics")[2].decode()
    families = {family.name + "_total" if family.type == "counter" else family.name: family.type
                for family in text_string_to_metric_families(text)}
    assert families == {name: kind for name, (kind, _) in readme_metrics().items()}
    assert "_created" not in text
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


# ------------------------------------------------------------------------------ the endpoint

def fetch(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def healthy():
    """A health check the test can flip: (ok, detail) as the worker would report it."""
    return {"ok": True, "detail": {"active": True, "unacknowledged_writes": 0}}


@pytest.fixture
def server(healthy):
    metrics = WorkerMetrics()
    metrics.records.labels(topic="mail-flow").inc(120)
    metrics.lag.labels(topic="mail-flow", partition="0").set(42)
    with MetricsServer(metrics.registry, port=0,
                       health=lambda: (healthy["ok"], healthy["detail"])) as running:
        yield running


def test_metrics_are_text_0_0_4_by_default_and_openmetrics_when_the_scraper_asks(server):
    status, headers, body = fetch(f"http://127.0.0.1:{server.port}/metrics")
    assert (status, headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert samples(body.decode())[("otp_detector_consumer_lag_records",
                                   (("partition", "0"), ("topic", "mail-flow")))] == 42
    # What Prometheus sends first: OpenMetrics, whose text ends in "# EOF".
    status, headers, body = fetch(f"http://127.0.0.1:{server.port}/metrics",
                                  accept="application/openmetrics-text;version=1.0.0,"
                                         "text/plain;version=0.0.4;q=0.5")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'otp_detector_records_consumed_total{topic="mail-flow"} 120.0' in body


def test_healthz_answers_200_while_healthy_and_503_when_not(server, healthy):
    status, headers, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert orjson.loads(body) == {"ok": True, "detail": {"active": True,
                                                         "unacknowledged_writes": 0}}
    healthy.update(ok=False, detail={"healthy": False, "unacknowledged_writes": 12})
    status, _, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 503
    assert orjson.loads(body) == {"ok": False, "detail": {"healthy": False,
                                                          "unacknowledged_writes": 12}}


def test_a_health_check_that_raises_is_unhealthy(caplog):
    def broken():
        raise RuntimeError("consumer closed")

    with MetricsServer(WorkerMetrics().registry, health=broken) as server:
        status, _, body = fetch(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 503
    assert orjson.loads(body) == {"ok": False, "detail": {"error": "RuntimeError: consumer closed"}}
    assert "health check failed" in caplog.text


def test_the_index_lists_the_endpoints_other_paths_are_404_and_nothing_is_logged(server, capfd):
    status, _, body = fetch(f"http://127.0.0.1:{server.port}/")
    assert status == 200 and b"/metrics" in body and b"/healthz" in body
    assert fetch(f"http://127.0.0.1:{server.port}/metrics/extra")[0] == 404
    assert fetch(f"http://127.0.0.1:{server.port}/healthz", method="POST")[0] == 405
    assert fetch(f"http://127.0.0.1:{server.port}/metrics", method="POST")[0] == 405
    assert capfd.readouterr().err == ""             # no request log lines on stderr


def test_the_server_releases_its_port_and_stops_once():
    server = MetricsServer(WorkerMetrics().registry).start()
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError, match="not started"):
        server.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_two_workers_in_one_process_keep_their_own_series():
    first, second = WorkerMetrics(), WorkerMetrics()
    first.records.labels(topic="mail-flow").inc(5)
    assert ("otp_detector_records_consumed_total", (("topic", "mail-flow"),)) not in scrape(second)


# -------------------------------------------------------------------- through a real broker

def lag_series(port: int) -> set[tuple[str, str]]:
    """The (topic, partition) pairs a worker reports lag for."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(dict(labels)["topic"], dict(labels)["partition"])
            for (name, labels) in samples(text) if name == "otp_detector_consumer_lag_records"}


@pytest.mark.kafka
def test_a_member_that_loses_its_partitions_stops_reporting_them(broker, tmp_path):
    """The active member stalls past its session (a long pause, a frozen VM): the standby takes
    the partitions over, and when the stalled member comes back the group settles on one
    active member. Whichever lost the partitions while running reports none of them any more:
    no lag series frozen at its last value, no watermark or open anomalies of a core it no
    longer runs."""
    from conftest import Deployment, write_logs
    from detector.io.broker import free_port
    from integrations import wait_for

    deployment = Deployment(broker, tmp_path, partitions=2)
    traffic = (Traffic().minutes(0, 20, 30, fail_every=20, sender_domain="a.example")
               .minutes(0, 20, 30, fail_every=20, sender_domain="b.example")
               .minutes(0, 20, 30, fail_every=20, sender_domain="c.example").sorted())
    mail, dns = write_logs(traffic, tmp_path)
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    ports = {"first": free_port(), "second": free_port()}
    members = {name: deployment.start_worker("--metrics-port", str(port), log_name=f"{name}.log")
               for name, port in ports.items() if name == "first"}

    def log(name: str):
        return lambda: deployment.log(f"{name}.log")

    wait_for("the first member reports the lag of its partitions",
                     lambda: lag_series(ports["first"]), timeout=60, log=log("first"))
    members["second"] = deployment.start_worker("--metrics-port", str(ports["second"]),
                                                log_name="second.log")
    deployment.wait_for_log("standby", "second.log")
    assert lag_series(ports["second"]) == set()
    # The second member's joining revoked and gave back every partition (eager rebalance).
    wait_for("the first member active again", lambda: lag_series(ports["first"]), timeout=30,
             log=log("first"))

    members["first"].send_signal(signal.SIGSTOP)
    try:
        wait_for("the second member took the partitions over",
                 lambda: lag_series(ports["second"]), timeout=60, log=log("second"))
    finally:
        members["first"].send_signal(signal.SIGCONT)

    def standby():
        """The member that ended up without partitions, once the group has settled."""
        if deployment.log("first.log").count("standby") and lag_series(ports["second"]):
            return "first"
        if deployment.log("second.log").count("standby") > 1 and lag_series(ports["first"]):
            return "second"
        return None

    loser = wait_for("one member active, the other a standby again", standby, timeout=60,
                     log=lambda: deployment.log("first.log")[-1500:] + deployment.log("second.log")[-1500:])
    text = urllib.request.urlopen(f"http://127.0.0.1:{ports[loser]}/metrics", timeout=5).read().decode()
    scraped = samples(text)
    assert lag_series(ports[loser]) == set()
    assert scraped[("otp_detector_watermark_seconds", ())] == 0
    assert scraped[("otp_detector_open_anomalies", ())] == 0
    assert by_label(scraped, "otp_detector_watched_slices", "dimension") == {}

"""Faults production brings, each against a real broker process: crashes at random points, a
member joining and leaving, a member frozen past its session, the broker going away, the output
topic refusing writes. In every
case the anomalies that reach the output topic are exactly those of an uninterrupted replay (ids
included; an event may be re-sent, never invented or lost).

The broker sits behind a fault-injecting proxy (``faultproxy``): it keeps its data while the
worker sees it vanish, so each test is about the worker, not the broker's storage.
"""

import logging
import random
import signal
import time
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Deployment, read_topic, replay_events, write_logs
from detector.io.broker import LocalBroker, free_port
from faultproxy import FaultProxy
from integrations import wait_for
from traffic import T0, hourly_servfail_spikes

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

#: Faster failure detection than production: this broker holds a JoinGroup for half the session
#: timeout, and a killed member is only noticed after it.
FAST_GROUP = "session_timeout_ms = 2000\nheartbeat_interval_ms = 500\n"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    proxy_port = free_port()
    log = tmp_path_factory.mktemp("proxied") / "tansu.log"
    with LocalBroker(log_path=log, advertised_port=proxy_port) as broker:
        proxy = FaultProxy(proxy_port, broker.port).start()
        yield broker, proxy
        proxy.stop()


@pytest.fixture(params=["confluent", "kafka-python"])
def transport(request):
    """Each fault is survived with each transport: confluent (the default) and kafka-python."""
    return request.param


@pytest.fixture
def setup(proxied, tmp_path):
    broker, proxy = proxied
    proxy.set_mode("pass")
    yield broker, proxy, tmp_path
    proxy.set_mode("pass")


def reference(traffic, tmp_path):
    mail, dns = write_logs(traffic, tmp_path)
    expected = replay_events(mail, dns, tmp_path)
    return mail, dns, {e["id"] for e in expected}


def assert_same_anomalies(events, expected_ids):
    assert {e["id"] for e in events} == expected_ids
    since = {}
    for event in events:   # a re-sent open carries the same onset, never another id
        assert since.setdefault(event["id"], event["since"]) == event["since"]


def stop_once_every_anomaly_is_out(deployment, worker, expected_ids):
    """Wait (up to 2 minutes) for the expected anomalies, stop the worker (SIGTERM: exit 0),
    then compare."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and {e["id"] for e in deployment.anomalies()} != expected_ids:
        time.sleep(1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert_same_anomalies(deployment.anomalies(), expected_ids)


def test_ten_kill_9s_at_random_points_lose_and_invent_nothing(setup, transport):
    broker, _, tmp_path = setup
    mail, dns, expected_ids = reference(hourly_servfail_spikes(12), tmp_path)
    deployment = Deployment(broker, tmp_path, kafka=FAST_GROUP, transport=transport,
                            worker={"checkpoint_interval_s": 0.3})
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    chance = random.Random(20261128)
    for attempt in range(10):
        name = f"killed-{attempt}.log"
        worker = deployment.start_worker(log_name=name)
        deployment.wait_for_log("partitions assigned", name)
        time.sleep(chance.uniform(0.05, 1.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert deployment.run_worker_until_idle() == 0
    assert_same_anomalies(deployment.anomalies(), expected_ids)


def test_a_member_joins_mid_stream_and_leaves_and_state_follows_the_partitions(setup, transport):
    broker, _, tmp_path = setup
    mail, dns, expected_ids = reference(hourly_servfail_spikes(12), tmp_path)
    deployment = Deployment(broker, tmp_path, kafka=FAST_GROUP, transport=transport)
    first = deployment.start_worker(log_name="first.log")
    deployment.wait_for_log("partitions assigned", "first.log")
    # Twelve hours of logs over about twenty seconds: the stream goes on through the moves.
    producers = [deployment.produce_paced(stream, path, speed=2400)
                 for stream, path in (("dns", dns), ("mail", mail))]
    deployment.wait_for_log('"state":"open"', "first.log")
    second = deployment.start_worker("--exit-when-idle", "4", log_name="second.log")
    deployment.wait_for_log("standby", "second.log")          # sticky: the active member keeps them
    first.send_signal(signal.SIGTERM)                           # leaves: partitions move, state follows
    assert first.wait(timeout=30) == 0
    deployment.wait_for_log('"restored":true', "second.log")
    third = deployment.start_worker("--exit-when-idle", "4", log_name="third.log")
    deployment.wait_for_log("standby", "third.log")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    deployment.wait_for_log('"restored":true', "third.log")
    assert [p.wait(timeout=120) for p in producers] == [0, 0]
    assert third.wait(timeout=120) == 0
    assert_same_anomalies(deployment.anomalies(), expected_ids)


def test_the_broker_goes_away_for_10_s_and_the_worker_waits_reconnects_and_loses_nothing(
        setup, transport):
    broker, proxy, tmp_path = setup
    mail, dns, expected_ids = reference(hourly_servfail_spikes(24), tmp_path)
    deployment = Deployment(broker, tmp_path, kafka=FAST_GROUP, transport=transport)
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    worker = deployment.start_worker()
    deployment.wait_for_log('"state":"open"')                 # mid-stream
    proxy.set_mode("down")
    time.sleep(10)
    assert worker.poll() is None, "the worker died while the broker was away"
    proxy.set_mode("pass")
    stop_once_every_anomaly_is_out(deployment, worker, expected_ids)


def test_while_the_output_refuses_writes_nothing_is_committed_then_the_worker_catches_up(
        setup, transport):
    from confluent_kafka import Consumer, TopicPartition

    broker, proxy, tmp_path = setup
    traffic = hourly_servfail_spikes(6)
    mail, dns, expected_ids = reference(traffic, tmp_path)
    deployment = Deployment(broker, tmp_path, kafka=FAST_GROUP, transport=transport)
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    proxy.set_mode("reject_produce")
    worker = deployment.start_worker("--exit-when-idle", "5")
    deployment.wait_for_log("writes failing", timeout=90)

    def committed() -> int:
        consumer = Consumer({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": broker.bootstrap, "group.id": deployment.group,
                             "enable.auto.commit": False})
        try:
            found = consumer.committed([TopicPartition(deployment.topics["mail"], 0)], timeout=10)
        finally:
            consumer.close()
        return max(found[0].offset, 0)

    time.sleep(5)
    assert committed() == 0                                    # nothing committed past a failed write
    assert read_topic(broker.bootstrap, deployment.topics["anomalies"], idle_s=1) == []
    proxy.set_mode("pass")
    assert worker.wait(timeout=180) == 0
    assert committed() == len(traffic.mail)
    assert_same_anomalies(deployment.anomalies(), expected_ids)


def scrape(port: int) -> dict[tuple, float]:
    """A worker's metrics: (name, sorted label pairs) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_member_frozen_past_its_session_rejoins_and_overwrites_no_newer_checkpoint(
        setup, transport, tmp_path):
    """The active member freezes (SIGSTOP: a long pause, a frozen VM) past its session timeout;
    the standby takes the partitions over from its last checkpoint and checkpoints on. When the
    frozen member runs again, its own checkpoint is due at once; but the group has moved on, so
    it writes no state and commits nothing, drops its state and rejoins as a standby, while the
    new owner reads the rest of the stream. The state topic's checkpoints never go back to an
    older group generation, and the anomalies are a replay's."""
    broker, _, _ = setup
    traffic = hourly_servfail_spikes(12)
    mail, dns, expected_ids = reference(traffic, tmp_path)
    # The first six hours and twenty minutes (quiet then), read by the member that freezes; the
    # rest after it has rejoined, read by the one that took over.
    cut = T0 + (6 * 60 + 20) * 60
    parts = {}
    for stream, lines in (("mail", traffic.mail), ("dns", traffic.dns)):
        for n, part in enumerate(([x for x in lines if orjson.loads(x)["ts"] < cut],
                                  [x for x in lines if orjson.loads(x)["ts"] >= cut])):
            path = tmp_path / f"{stream}-{n}.jsonl"
            path.write_bytes(b"\n".join(part) + b"\n")
            parts[stream, n] = path
    deployment = Deployment(broker, tmp_path, kafka=FAST_GROUP, transport=transport,
                            worker={"checkpoint_interval_s": 3})
    for stream in ("dns", "mail"):
        deployment.produce_files(stream, parts[stream, 0])
    port = free_port()
    first = deployment.start_worker("--metrics-port", str(port), log_name="first.log")
    deployment.wait_for_log("partitions assigned", "first.log")
    second = deployment.start_worker(log_name="second.log")
    deployment.wait_for_log("standby", "second.log")

    def first_log() -> str:
        return deployment.log("first.log")

    def caught_up() -> bool:
        lag = [v for (name, _), v in scrape(port).items()
               if name == "otp_detector_consumer_lag_records"]
        return len(lag) == 2 and not any(lag)

    def checkpoints() -> float:
        return scrape(port)[("otp_detector_checkpoints_total", ())]

    wait_for("the first member read the first part", caught_up, timeout=60, log=first_log)
    # Frozen right after a checkpoint of its own, so that none of its writes is in flight (the
    # next is 3 s away): what it does when it runs again is what this test is about.
    before = checkpoints()
    wait_for("the first member's next checkpoint", lambda: checkpoints() > before, timeout=30,
             interval=0.02, log=first_log)
    first.send_signal(signal.SIGSTOP)
    try:
        deployment.wait_for_log('"restored":true', "second.log")
        time.sleep(4)       # the owner checkpoints; the frozen member's checkpoint falls due
    finally:
        first.send_signal(signal.SIGCONT)
    deployment.wait_for_log("standby", "first.log", timeout=30)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    for stream in ("dns", "mail"):
        deployment.produce_files(stream, parts[stream, 1])
    stop_once_every_anomaly_is_out(deployment, second, expected_ids)
    manifests = [orjson.loads(m.value()) for m in deployment.read("state")
                 if m.key() == deployment.group.encode()]
    generations = [m.get("generation") for m in manifests]
    assert None not in generations and len(set(generations)) >= 2     # the takeover is in them
    assert generations == sorted(generations), generations

"""Faults production brings, each against a real broker process: crashes at random points, a
member joining and leaving, the broker going away, the output topic refusing writes. In every
case the anomalies that reach the output topic are exactly those of an uninterrupted replay (ids
included; an event may be re-sent, never invented or lost).

The broker sits behind a fault-injecting proxy (``faultproxy``): it keeps its data while the
worker sees it vanish, so each test is about the worker, not the broker's storage.
"""

import logging
import random
import signal
import time

import pytest

from conftest import Deployment, read_topic, replay_events, write_logs
from detector.io.broker import LocalBroker, free_port
from faultproxy import FaultProxy
from traffic import hourly_servfail_spikes

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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and {e["id"] for e in deployment.anomalies()} != expected_ids:
        time.sleep(1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert_same_anomalies(deployment.anomalies(), expected_ids)


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

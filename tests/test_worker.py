"""The stream worker against a real broker process: same events as a replay, dead letters,
crash recovery, graceful shutdown. Input is produced and output read with confluent-kafka or the
``detector`` command, as users do."""

import logging
import re
import signal
import time
import urllib.request

import orjson
import pytest

from conftest import replay_events, write_logs
from traffic import Traffic, hourly_servfail_spikes

pytestmark = pytest.mark.kafka


@pytest.fixture(params=["confluent", "kafka-python"])
def transport(request):
    """The tests here run with each transport: confluent (the default) and kafka-python."""
    return request.param


@pytest.fixture
def deployment(broker, tmp_path, transport):
    from conftest import Deployment

    return Deployment(broker, tmp_path, transport=transport)


def servfail_spike() -> Traffic:
    return (Traffic().minutes(0, 90, 60, fail_every=150)
            .minutes(90, 10, 60, bad_every=4, rcode="SERVFAIL")
            .minutes(100, 40, 60, fail_every=150).sorted())


def test_a_scenario_through_kafka_gives_the_same_events_as_a_replay(deployment, tmp_path):
    mail, dns = write_logs(servfail_spike(), tmp_path)
    expected = replay_events(mail, dns, tmp_path)
    assert [e["state"] for e in expected] == ["open", "update", "update", "resolved"]
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    assert deployment.run_worker_until_idle() == 0
    messages = deployment.read("anomalies")
    assert [orjson.loads(m.value()) for m in messages] == expected
    assert all(m.key().decode() == orjson.loads(m.value())["id"] for m in messages)


def test_input_produced_by_another_client_and_bad_messages_go_to_the_dead_letter_topic(
        deployment, tmp_path):
    from confluent_kafka import Producer

    traffic = servfail_spike()
    producer = Producer({"bootstrap.servers": deployment.broker.bootstrap, "linger.ms": 20})
    bad = [b"{oops", b"[1, 2]", b'{"ts": "yesterday", "message_id": "x", "status": "failed"}']
    for line in traffic.dns:
        producer.produce(deployment.topics["dns"], line)
    for i, line in enumerate(traffic.mail):
        producer.produce(deployment.topics["mail"], line)
        if i == 1000:
            for junk in bad:
                producer.produce(deployment.topics["mail"], junk)
    producer.flush(30)
    assert deployment.run_worker_until_idle() == 0
    dead = deployment.read("dead_letter")
    assert sorted(m.value() for m in dead) == sorted(bad)
    for message in dead:
        headers = dict(message.headers())
        assert headers["source_topic"].decode() == deployment.topics["mail"]
        assert int(headers["source_offset"]) in (1001, 1002, 1003)
        assert headers["reason"] in (b"not_json", b"not_object", b"bad_ts")
    states = [e["state"] for e in deployment.anomalies()]
    assert states[0] == "open" and states[-1] == "resolved"      # the worker went on


def test_kill_9_mid_stream_then_restart_loses_no_anomaly_and_changes_no_id(deployment, tmp_path):
    mail, dns = write_logs(hourly_servfail_spikes(6), tmp_path)
    expected_ids = {e["id"] for e in replay_events(mail, dns, tmp_path)}
    assert len({i for i in expected_ids if i.startswith("servfail")}) == 5
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    worker = deployment.start_worker(log_name="first.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(deployment.anomalies()) < 2:
        time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    seen_before = deployment.anomalies()
    assert seen_before, "the worker produced nothing before it was killed"
    assert deployment.run_worker_until_idle() == 0
    events = deployment.anomalies()
    assert {e["id"] for e in events} == expected_ids
    opens = {}
    for event in events:                    # an open may be re-sent, but never with another id
        if event["state"] == "open":
            assert opens.setdefault(event["id"], event["since"]) == event["since"]


def test_a_topic_of_postfix_lines_and_one_of_zeek_dns_lines_give_the_expected_anomaly(
        broker, tmp_path):
    transport = "confluent"                # adapters sit above the transport: the default is enough
    from conftest import Deployment
    from test_formats_e2e import spf_lookups_servfail_for_ten_minutes

    maillog, dnslog = spf_lookups_servfail_for_ten_minutes(tmp_path)
    deployment = Deployment(broker, tmp_path, formats={"mail_format": "postfix",
                                                       "dns_format": "zeek-dns"},
                            transport=transport)
    deployment.produce_files("dns", dnslog)
    deployment.produce_files("mail", maillog)
    assert deployment.run_worker_until_idle() == 0
    events = deployment.anomalies()
    assert [(e["state"], e["key"]["outcome"]) for e in events][0] == ("open", "SERVFAIL")
    assert events[-1]["state"] == "resolved"


def test_sigterm_finishes_the_batch_commits_and_exits_0(deployment, tmp_path):
    mail, dns = write_logs(servfail_spike(), tmp_path)
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    from detector.io.broker import free_port

    port = free_port()
    worker = deployment.start_worker("--metrics-port", str(port))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not deployment.anomalies():
        time.sleep(0.5)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert health.status == 200
    consumed = re.search(rf'otp_detector_records_consumed_total{{topic="{deployment.topics["mail"]}"}} (\d+)',
                         metrics)
    assert consumed and int(consumed.group(1)) > 0
    assert 'otp_detector_anomaly_events_total{state="open"}' in metrics
    assert "otp_detector_watermark_seconds" in metrics
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    log = [orjson.loads(line) for line in deployment.log().splitlines() if line.startswith("{")]
    stopped = [line for line in log if line["msg"] == "stopped"]
    assert stopped and stopped[0]["checkpoints"] >= 1
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": deployment.broker.bootstrap,
                         "group.id": deployment.group, "enable.auto.commit": False})
    committed = consumer.committed([TopicPartition(deployment.topics["mail"], 0)], timeout=10)
    consumer.close()
    assert committed[0].offset > 0


def test_a_backlog_is_committed_as_soon_as_it_is_read_not_at_the_next_interval(
        broker, tmp_path, transport):
    """A backfill's offsets reach the group once the worker has read it all, long before the
    next periodic checkpoint (two minutes here)."""
    from confluent_kafka import Consumer, TopicPartition

    from conftest import Deployment

    deployment = Deployment(broker, tmp_path, transport=transport,
                            worker={"checkpoint_interval_s": 120})
    traffic = servfail_spike()                     # 8,400 mail lines: more than one poll takes
    mail, dns = write_logs(traffic, tmp_path)
    deployment.produce_files("dns", dns)
    deployment.produce_files("mail", mail)
    ends = {deployment.topics[stream]: max(m.offset() for m in deployment.read(stream)) + 1
            for stream in ("mail", "dns")}
    worker = deployment.start_worker()
    consumer = Consumer({"logger": logging.getLogger("rdkafka"),
                         "bootstrap.servers": deployment.broker.bootstrap,
                         "group.id": deployment.group, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + 60
        committed = {}
        while committed != ends and time.monotonic() < deadline:
            time.sleep(0.5)
            found = consumer.committed([TopicPartition(topic, 0) for topic in ends], timeout=10)
            committed = {tp.topic: tp.offset for tp in found}
        assert committed == ends
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_the_worker_rejects_what_a_replay_of_the_same_files_rejects(broker, tmp_path):
    """Files produced in order: the dead-letter topic holds, reason for reason and offset for
    line, what ``detector replay --dead-letter`` writes (README, "Replay and worker")."""
    from conftest import DETECTOR, Deployment

    import subprocess
    import sys

    deployment = Deployment(broker, tmp_path)
    traffic = servfail_spike()
    old = orjson.loads(traffic.mail[100])
    ahead = {**orjson.loads(traffic.mail[2000]), "message_id": "ahead", "ts": time.time() + 7200}
    mail = list(traffic.mail)
    for at, line in sorted([
            (1000, b"{oops"), (1001, b"[1, 2]"),
            (1002, b'{"ts": "yesterday", "message_id": "x", "status": "failed"}'),
            (1003, b'{"ts": 1795740000, "status": "failed"}'),
            (1004, b'{"ts": 1795740000, "message_id": 7, "status": "failed"}'),
            (1005, mail[1005]),                                        # a duplicate
            (6000, orjson.dumps({**old, "message_id": "old"})),        # 98 minutes behind: late
            (6001, orjson.dumps(ahead)),                               # two hours ahead of now
    ], reverse=True):
        mail.insert(at, line)
    dns = [*traffic.dns[:500], b"not json", *traffic.dns[500:]]
    mail_path, dns_path = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail_path.write_bytes(b"\n".join(mail) + b"\n")
    dns_path.write_bytes(b"\n".join(dns) + b"\n")
    dead_path = tmp_path / "dead.jsonl"
    subprocess.run([*DETECTOR, "replay", "--mail", str(mail_path), "--dns", str(dns_path),
                    "--out", str(tmp_path / "out.jsonl"), "--dead-letter", str(dead_path)],
                   check=True, capture_output=True, timeout=120)
    replayed = sorted((d["stream"], d["line"] - 1, d["reason"])
                      for d in map(orjson.loads, dead_path.read_bytes().splitlines()))
    assert {reason for _, _, reason in replayed} >= {
        "not_json", "not_object", "bad_ts", "missing_field:message_id",
        "wrong_type:message_id", "late", "future_ts"}
    deployment.produce_files("dns", dns_path)
    deployment.produce_files("mail", mail_path)
    assert deployment.run_worker_until_idle() == 0
    stream_of = {deployment.topics["mail"]: "mail", deployment.topics["dns"]: "dns"}
    worked = sorted((stream_of[h["source_topic"].decode()], int(h["source_offset"]),
                     h["reason"].decode())
                    for h in (dict(m.headers()) for m in deployment.read("dead_letter")))
    assert worked == replayed


def test_a_log_of_bursts_apart_is_read_whole_by_a_replay_and_the_worker(broker, tmp_path):
    """A resolver that answers in bursts of 30, 400 s apart (longer than max_future_skew_s):
    a batch that ends a few lines into a burst (every replay chunk of 4,096 lines here; the
    worker's polls wherever they end) is carried to the next one instead of being rejected as a
    clock far ahead. One host's answer a day ahead, the last line of the replay's first chunk,
    is rejected by both, at the same line and offset; nothing else is."""
    import subprocess

    from conftest import DETECTOR, Deployment

    t0 = 1795737600
    dns = [orjson.dumps({"ts": t0 + burst * 400 + i, "qname": "auth.bank.example",
                         "qtype": "TXT", "rcode": "NOERROR", "client": "mx1"})
           for burst in range(200) for i in range(30)]
    dns += [orjson.dumps({"ts": t0 + 200 * 400 + i / 10, "qname": "auth.bank.example",
                          "qtype": "TXT", "rcode": "NOERROR", "client": "mx1"})
            for i in range(100)]            # the last burst: more than 1 % of any poll
    dns.insert(4095, orjson.dumps({"ts": t0 + 86400 * 2, "qname": "auth.bank.example",
                                   "rcode": "NOERROR", "client": "mx9"}))
    mail = [orjson.dumps({"ts": t0 + 20 * i + 5, "message_id": f"<{i}@mx1>",
                          "status": "delivered", "sender": "verify@auth.bank.example",
                          "category": "otp", "server": "mx1"}) for i in range(4000)]
    mail_path, dns_path = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail_path.write_bytes(b"\n".join(mail) + b"\n")
    dns_path.write_bytes(b"\n".join(dns) + b"\n")
    dead_path = tmp_path / "dead.jsonl"
    subprocess.run([*DETECTOR, "replay", "--mail", str(mail_path), "--dns", str(dns_path),
                    "--out", str(tmp_path / "out.jsonl"), "--dead-letter", str(dead_path)],
                   check=True, capture_output=True, timeout=120)
    replayed = [(d["stream"], d["line"] - 1, d["reason"])
                for d in map(orjson.loads, dead_path.read_bytes().splitlines())]
    assert replayed == [("dns", 4095, "future_ts")]
    deployment = Deployment(broker, tmp_path)
    deployment.produce_files("dns", dns_path)
    deployment.produce_files("mail", mail_path)
    assert deployment.run_worker_until_idle() == 0
    stream_of = {deployment.topics["mail"]: "mail", deployment.topics["dns"]: "dns"}
    worked = [(stream_of[h["source_topic"].decode()], int(h["source_offset"]),
               h["reason"].decode())
              for h in (dict(m.headers()) for m in deployment.read("dead_letter"))]
    assert worked == replayed

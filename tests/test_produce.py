"""``detector produce`` against a real broker: lines arrive untouched, keyed by the join key (the
registrable domain of the sender's domain or of the question name), in the partition kafka-python's
partitioner would pick for that key, in file order per partition, so a delivery and its sender's
lookups share a partition number of the two topics; ``--speed`` spreads them over event time; a
broker that goes away ends the run with exit status 3 and the count Kafka acknowledged. Messages
are read back with confluent-kafka."""

import gzip
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka.partitioner.default import murmur2

from conftest import DETECTOR, STARTED, read_topic
from detector.core.partitioning import registrable_domain
from detector.core.records import domain_of, normalize_name

pytestmark = pytest.mark.kafka

#: One line of each kind produce meets: DNS answers (names in any case, with the root's dot), OTP
#: mail, mail with the null sender or no sender, and lines that are no record at all.
LINES = [
    b'{"ts": "2026-11-27T10:00:00Z", "qname": "Auth.Bank1.Example.", "rcode": "NOERROR"}',
    b'{"ts": "2026-11-27T10:00:01Z", "message_id": "<a@x>", "status": "delivered", '
    b'"sender": "codes@auth.bank1.example"}',
    b'{"ts": "2026-11-27T10:00:02Z", "qname": "mx.shop.example", "rcode": "SERVFAIL"}',
    b'{"ts": "2026-11-27T10:00:03Z", "message_id": "<b@x>", "status": "failed", "sender": ""}',
    b'{"ts": "2026-11-27T10:00:04Z", "message_id": "<c@x>", "status": "failed"}',
    b"{oops",
    b"[1, 2, 3]",
    b'{"ts": "2026-11-27T10:00:05Z", "message_id": "<d@x>", "status": "deferred", '
    b'"sender": "Verify@ID.Shop.Example", "dns_lookups": [{"qname": "elsewhere.example"}]}',
    b'  {"ts": "2026-11-27T10:00:06Z" ,  "qname": "auth.bank1.example", "rcode": "TIMEOUT"}  ',
    b'{"ts": "2026-11-27T10:00:07Z", "qname": "sel1._domainkey.Bank1.example", "rcode": "NOERROR"}',
    b'{"ts": "2026-11-27T10:00:08Z", "message_id": "<e@x>", "status": "failed", "sender": "<>", '
    b'"dns_lookups": [{"qname": "_dmarc.mail.shop.co.uk.", "qtype": "TXT"}]}',
    b'{"ts": "2026-11-27T10:00:09Z", "qname": "4.3.2.10.In-Addr.Arpa.", "qtype": "PTR", '
    b'"rcode": "NXDOMAIN"}',
    b'{"ts": "2026-11-27T10:00:10Z", "message_id": "<f@x>", "status": "failed", "sender": "<>", '
    b'"dns_lookups": [{"qname": "4.3.2.10.in-addr.arpa", "qtype": "PTR"}]}',
]
#: The registrable domain (eTLD+1) of the question name, or of the sender's domain (of the first
#: named lookup for the null sender); no key for mail with neither, nor for what is no record; a
#: reverse name is its own key, for its answers and for the mail keyed by it alike.
KEYS = [b"bank1.example", b"bank1.example", b"shop.example", None, None, None,
        None, b"shop.example", b"bank1.example", b"bank1.example", b"shop.co.uk",
        b"4.3.2.10.in-addr.arpa", b"4.3.2.10.in-addr.arpa"]


def create_topic(bootstrap: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"produce-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=10)
    return topic


def produce(bootstrap: str, topic: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*DETECTOR, "produce", "--bootstrap-servers", bootstrap, "--topic",
                           topic, *map(str, args)], capture_output=True, timeout=120)


def kafka_python_partition(key: bytes, partitions: int) -> int:
    """What kafka-python's DefaultPartitioner picks for a key (its murmur2, as Java's)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_lines_arrive_untouched_keyed_by_the_join_key_in_kafka_pythons_partition(broker,
                                                                                   tmp_path):
    partitions = 4
    topic = create_topic(broker.bootstrap, partitions)
    # Many names, so every partition gets some, and each name many times, so order shows.
    lines = LINES + [orjson.dumps({"ts": 1795773600 + i, "qname": f"n{i % 50}.example",
                                   "rcode": "NOERROR", "n": i}) for i in range(2000)]
    keys = KEYS + [f"n{i % 50}.example".encode() for i in range(2000)]
    path = tmp_path / "dns.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n\n"))     # a blank line is skipped
    done = produce(broker.bootstrap, topic, path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().strip() == f"produced {len(lines)} records to {topic}"
    messages = read_topic(broker.bootstrap, topic, idle_s=1.5)
    assert sorted(m.value() for m in messages) == sorted(lines)
    by_value = {line: key for line, key in zip(lines, keys)}
    assert {m.partition() for m in messages} == set(range(partitions))
    for message in messages:
        assert message.key() == by_value[message.value()]
        if message.key() is not None:
            assert message.partition() == kafka_python_partition(message.key(), partitions)
    for partition in range(partitions):          # file order within each partition
        got = [m.value() for m in messages if m.partition() == partition]
        assert got == [line for line in lines if line in set(got)]


def create_topics(bootstrap: str, partitions: int) -> tuple[str, str]:
    """A mail and a DNS topic with ``partitions`` each, as the worker's configuration names them."""
    return create_topic(bootstrap, partitions), create_topic(bootstrap, partitions)


def lookups_of(mail: dict) -> list[str]:
    """The names a delivery's checks looked up, as the contract says: its ``dns_lookups``, or
    else its sender's domain."""
    if mail.get("dns_lookups") is not None:
        return [normalize_name(lookup["qname"]) for lookup in mail["dns_lookups"]]
    domain = domain_of(mail.get("sender"))
    return [domain] if domain else []


def test_a_deliverys_spf_dkim_and_dmarc_lookups_land_in_its_partition_number(broker, tmp_path):
    partitions = 6
    mail_topic, dns_topic = create_topics(broker.bootstrap, partitions)
    data = tmp_path / "data"
    done = subprocess.run([*DETECTOR, "generate", "seed-incident", str(data), "--seed", "3",
                           "--hours", "1"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Written out as a user's own logs would have them: a DKIM key of a subdomain sender, its
    # DMARC policy at the organisational domain, a name under a two-label public suffix.
    own = tmp_path / "own"
    own.mkdir()
    (own / "mail.jsonl").write_bytes(
        b'{"ts": 1795773600, "message_id": "<k1@x>", "status": "deferred", '
        b'"sender": "codes@auth.bank.example", "dns_lookups": [{"qname": "auth.bank.example"}, '
        b'{"qname": "sel._domainkey.auth.bank.example"}, {"qname": "_dmarc.bank.example"}]}\n'
        b'{"ts": 1795773601, "message_id": "<k2@x>", "status": "delivered", '
        b'"sender": "otp@login.bank.co.uk"}\n')
    (own / "dns.jsonl").write_bytes(
        b'{"ts": 1795773590, "qname": "auth.bank.example.", "rcode": "NOERROR"}\n'
        b'{"ts": 1795773590, "qname": "Sel._DomainKey.auth.bank.example", "rcode": "SERVFAIL"}\n'
        b'{"ts": 1795773590, "qname": "_dmarc.bank.example", "rcode": "NOERROR"}\n'
        b'{"ts": 1795773591, "qname": "login.bank.co.uk", "rcode": "NOERROR"}\n')
    config = tmp_path / "topics.toml"       # the pair the worker joins: produce checks it
    config.write_text(f'[topics]\nmail = "{mail_topic}"\ndns = "{dns_topic}"\n')
    for topic, name in ((mail_topic, "mail.jsonl"), (dns_topic, "dns.jsonl")):
        done = produce(broker.bootstrap, topic, "--config", config, data / f"{name}.gz",
                       own / name)
        assert done.returncode == 0, done.stderr
    mail = read_topic(broker.bootstrap, mail_topic, idle_s=2)
    dns = read_topic(broker.bootstrap, dns_topic, idle_s=2)
    lines = {topic: gzip.decompress((data / f"{name}.jsonl.gz").read_bytes()).splitlines()
             + (own / f"{name}.jsonl").read_bytes().splitlines()
             for topic, name in ((mail_topic, "mail"), (dns_topic, "dns"))}
    assert len(mail) == len(lines[mail_topic]) and len(dns) == len(lines[dns_topic])

    for messages in (mail, dns):                 # every key where kafka-python would put it
        assert {m.partition() for m in messages} == set(range(partitions))
        for message in messages:
            if message.key() is not None:
                assert message.partition() == kafka_python_partition(message.key(), partitions)
    answered_in: dict[str, set[int]] = {}        # a looked-up name -> partitions of its answers
    for message in dns:
        qname = orjson.loads(message.value()).get("qname")
        if isinstance(qname, str):
            answered_in.setdefault(normalize_name(qname), set()).add(message.partition())
    joined, looked_up = 0, set()
    for message in mail:
        record = orjson.loads(message.value())
        if not isinstance(record, dict):
            continue
        for name in lookups_of(record):
            if name in answered_in:
                assert answered_in[name] == {message.partition()}, (record, name)
                assert message.key() == registrable_domain(name).encode()
                joined += 1
                looked_up.add(name)
    # SPF at the sender's own (sub)domain, DMARC and DKIM under it, all with their mail.
    assert {"auth.bank.example", "sel._domainkey.auth.bank.example", "_dmarc.bank.example",
            "login.bank.co.uk"} <= looked_up
    assert any(name.startswith("_dmarc.") for name in looked_up - {"_dmarc.bank.example"})
    assert joined > len(mail) / 3
    for topic, messages in ((mail_topic, mail), (dns_topic, dns)):    # file order per partition
        for partition in range(partitions):
            got = [m.value() for m in messages if m.partition() == partition]
            sent_there = set(got)
            assert got == [line for line in lines[topic] if line in sent_there]


def test_records_an_adapter_converts_are_keyed_alike(broker, tmp_path):
    formats = Path(__file__).parent / "fixtures" / "formats"
    partitions = 6
    mail_topic, dns_topic = create_topics(broker.bootstrap, partitions)
    for topic, name, file in ((mail_topic, "zeek-smtp", "zeek_smtp.json"),
                              (dns_topic, "unbound", "unbound.log")):
        done = produce(broker.bootstrap, topic, "--format", name, formats / file)
        assert done.returncode == 0, done.stderr
    partition_of: dict[bytes, set[int]] = {}
    for topic in (mail_topic, dns_topic):
        messages = read_topic(broker.bootstrap, topic, idle_s=1.5)
        assert messages
        for message in messages:
            record = orjson.loads(message.value())
            name = record.get("qname") or domain_of(record["sender"])
            assert message.key() == registrable_domain(name).encode()
            partition_of.setdefault(message.key(), set()).add(message.partition())
    # otp@bank.example's mail with bank.example's SPF, A, DKIM (sel1._domainkey) answers.
    assert len(partition_of[b"bank.example"]) == 1


def test_no_key_sends_every_line_without_one(broker, tmp_path):
    topic = create_topic(broker.bootstrap, 2)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    done = produce(broker.bootstrap, topic, "--no-key", path)
    assert done.returncode == 0, done.stderr
    messages = read_topic(broker.bootstrap, topic, idle_s=1.5)
    assert sorted(m.value() for m in messages) == sorted(LINES)
    assert {m.key() for m in messages} == {None}


def test_speed_sends_each_record_at_its_event_time_over_the_speed(broker, tmp_path):
    topic = create_topic(broker.bootstrap, 1)
    # 30 s of event time at 10x real time: 3 s, a record every 0.1 s.
    lines = [orjson.dumps({"ts": 1795773600 + i, "qname": "auth.bank1.example",
                           "rcode": "NOERROR"}) for i in range(31)]
    path = tmp_path / "dns.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    started = time.monotonic()
    done = produce(broker.bootstrap, topic, "--speed", 10, path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 3.0
    messages = read_topic(broker.bootstrap, topic, idle_s=1.5)
    assert [m.value() for m in messages] == lines
    stamps = [m.timestamp()[1] / 1000 for m in messages]       # CreateTime: when it was sent
    assert stamps[-1] - stamps[0] >= 2.9
    assert stamps[15] - stamps[0] >= 1.4


@pytest.mark.slow
def test_a_broker_that_goes_away_ends_the_run_with_status_3_and_the_count_acknowledged(tmp_path):
    from detector.io.broker import LocalBroker

    path = tmp_path / "dns.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"ts": 1795773600 + i / 10, "qname": "a.example",
                                              "rcode": "NOERROR"}) for i in range(100_000)) + b"\n")
    with LocalBroker(log_path=tmp_path / "broker.log") as gone:
        topic = create_topic(gone.bootstrap, 1)
        process = subprocess.Popen([*DETECTOR, "produce", "--bootstrap-servers", gone.bootstrap,
                                    "--topic", topic, "--speed", "20", str(path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        STARTED.append(process)
        deadline = time.monotonic() + 30
        while len(read_topic(gone.bootstrap, topic, idle_s=0.5, timeout=5)) < 50:
            assert time.monotonic() < deadline and process.poll() is None
        acknowledged = len(read_topic(gone.bootstrap, topic, idle_s=0.5, timeout=5))
    _, err = process.communicate(timeout=90)          # the broker and its data are gone
    assert process.returncode == 3, err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines                 # one line, none of librdkafka's own
    line = lines[0]
    assert line.startswith("detector: error: Kafka failed: Local: Message timed out "
                           f"(last broker error: {gone.bootstrap}")
    assert "Connection refused" in line
    assert line.endswith(f"records were sent to {topic} before that (a re-run sends them again)")
    sent = int(line.rsplit("; ", 1)[1].split(" records")[0].replace(",", ""))
    assert acknowledged <= sent < 100_000

"""The co-partitioning check against a real broker: input topics with different partition counts
give one line naming both counts and the fix, equal counts none; ``detector produce`` refuses to
load keyed records into such a pair (exit 2, nothing sent) and creates a missing input topic with
its partner's count."""

import logging
import subprocess
import uuid

import pytest

from conftest import DETECTOR, read_topic
from detector.io.copartition import copartition_problem, partition_counts
from detector.settings import KafkaSettings

pytestmark = pytest.mark.kafka

DNS_LINE = b'{"ts": 1795773600, "qname": "_dmarc.bank.example", "rcode": "SERVFAIL"}\n'


def create_topics(bootstrap: str, **partitions: int) -> dict[str, str]:
    """Fresh topics, ``mail=6`` -> ``{"mail": "mail-1a2b3c4d"}`` with 6 partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    names = {role: f"{role}-{uuid.uuid4().hex[:8]}" for role in partitions}
    admin = AdminClient({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(names[role], count, 1)
                                   for role, count in partitions.items()])
    for future in futures.values():
        future.result(timeout=10)
    return names


def produce(bootstrap: str, tmp_path, mail: str, dns: str, topic: str, *args: str):
    """``detector produce`` of one DNS line into ``topic``, the configuration naming the pair."""
    config = tmp_path / "topics.toml"
    config.write_text(f'[topics]\nmail = "{mail}"\ndns = "{dns}"\n')
    lines = tmp_path / "dns.jsonl"
    lines.write_bytes(DNS_LINE)
    return subprocess.run([*DETECTOR, "produce", "--bootstrap-servers", bootstrap, "--config",
                           str(config), "--topic", topic, *args, str(lines)],
                          capture_output=True, timeout=120)


def test_input_topics_with_different_partition_counts_are_one_line_naming_both(broker):
    topics = create_topics(broker.bootstrap, mail=6, dns=4)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    problem = copartition_problem(kafka, topics["mail"], topics["dns"])
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"input topics {topics['mail']} (6 partitions) and {topics['dns']} "
                              "(4 partitions) are not co-partitioned")
    assert f"kafka-topics --alter --topic {topics['dns']} --partitions 6" in problem
    # The other way round: the mail topic is the one to grow.
    topics = create_topics(broker.bootstrap, mail=2, dns=3)
    problem = copartition_problem(kafka, topics["mail"], topics["dns"])
    assert problem is not None
    assert f"--alter --topic {topics['mail']} --partitions 3" in problem


def test_input_topics_with_equal_counts_or_one_missing_are_no_problem(broker):
    topics = create_topics(broker.bootstrap, mail=6, dns=6)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    assert copartition_problem(kafka, topics["mail"], topics["dns"]) is None
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    assert copartition_problem(kafka, topics["mail"], missing) is None
    # Checking did not create it (a broker that creates topics on first use would have).
    assert partition_counts(kafka, [missing, topics["dns"]]) == {missing: None, topics["dns"]: 6}


def test_produce_refuses_keyed_records_into_topics_of_different_counts(broker, tmp_path):
    topics = create_topics(broker.bootstrap, mail=6, dns=4)
    done = produce(broker.bootstrap, tmp_path, topics["mail"], topics["dns"], topics["dns"])
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"detector: error: input topics {topics['mail']} (6 partitions) "
                               f"and {topics['dns']} (4 partitions) are not co-partitioned")
    assert lines[0].endswith("; nothing was sent")
    assert read_topic(broker.bootstrap, topics["dns"], idle_s=1.0, timeout=5) == []
    # Unkeyed records are not placed by key, so there is nothing to keep together.
    done = produce(broker.bootstrap, tmp_path, topics["mail"], topics["dns"], topics["dns"],
                   "--no-key")
    assert done.returncode == 0, done.stderr


def test_produce_into_a_missing_input_topic_creates_it_with_its_partners_count(broker, tmp_path):
    topics = create_topics(broker.bootstrap, mail=6)
    dns = f"dns-{uuid.uuid4().hex[:8]}"
    done = produce(broker.bootstrap, tmp_path, topics["mail"], dns, dns)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"created {dns} with 6 partitions, as many as {topics['mail']}",
        f"produced 1 records to {dns}"]
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
    assert partition_counts(kafka, [dns]) == {dns: 6}
    assert [m.value() for m in read_topic(broker.bootstrap, dns, idle_s=1.0)] == [DNS_LINE.strip()]
    # Into a pair of equal counts: loaded, nothing said but the count.
    done = produce(broker.bootstrap, tmp_path, topics["mail"], dns, dns)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [f"produced 1 records to {dns}"]

"""The transport interface against the real broker, the same assertions for both transports:
what the worker relies on (every record once and in order per partition across pauses, seeks
and resumes; ends, positions, commits; writes acknowledged or reported failed)."""

import logging
import time
import uuid

import pytest

from conftest import read_topic
from detector.io.assignor import SingleActiveAssignor
from detector.io.transport import TP, TransportError, make_transport
from detector.settings import KafkaSettings

pytestmark = pytest.mark.kafka

RECORDS = 3000


@pytest.fixture(params=["confluent", "kafka-python"])
def transport_name(request):
    return request.param


@pytest.fixture
def topics(broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    names = [f"ta-{tag}", f"tb-{tag}", f"out-{tag}"]
    admin = AdminClient({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(timeout=10)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for name in names[:2]:
        for i in range(RECORDS):
            producer.produce(name, f"{name}:{i}".encode())
    assert producer.flush(30) == 0
    return [TP(n, 0) for n in names[:2]], names[2]


def joined(broker, name: str, tps: list[TP], max_poll_records: int = 400,
           group: str | None = None):
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, session_timeout_ms=6000,
                          heartbeat_interval_ms=1000, max_poll_records=max_poll_records,
                          transport=name)
    transport = make_transport(kafka, group or f"group-{uuid.uuid4().hex[:8]}",
                               SingleActiveAssignor())
    assigned: set[TP] = set()

    def on_assigned(tps_in):
        transport.pause(tps_in)             # as the worker does: nothing read before the seek
        assigned.update(tps_in)

    transport.join([tp.topic for tp in tps], on_assigned, lambda _revoked: None)
    deadline = time.monotonic() + 60
    while assigned != set(tps):
        assert time.monotonic() < deadline, "never assigned"
        assert transport.poll(0.2) == []    # paused: no records yet
    return transport


def read(transport, seen: dict, until, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, {tp: len(v) for tp, v in seen.items()}
        for batch in transport.poll(0.2):
            assert len(batch.values) == len(batch.offsets)
            seen.setdefault(batch.tp, []).extend(zip(batch.offsets, batch.values))


def test_every_record_once_and_in_order_across_pauses_seeks_and_resumes(broker, topics,
                                                                        transport_name):
    tps, _ = topics
    a, b = tps
    transport = joined(broker, transport_name, tps)
    try:
        assert transport.assignment() == set(tps)
        transport.seek(a, 0)
        transport.seek_to(b, "earliest")
        transport.resume(tps)
        seen: dict[TP, list] = {}
        read(transport, seen, lambda: len(seen.get(b, [])) >= 1)
        transport.pause([b])
        assert transport.paused() == {b}
        got_b = len(seen[b])
        read(transport, seen, lambda: len(seen.get(a, [])) >= RECORDS)
        for _ in range(10):                  # paused: nothing more of b, however long we poll
            for batch in transport.poll(0.1):
                assert batch.tp != b
        assert len(seen[b]) == got_b
        transport.resume([b])
        read(transport, seen, lambda: len(seen[b]) >= RECORDS)
        for tp in tps:
            assert [o for o, _ in seen[tp]] == list(range(RECORDS))
            assert [v for _, v in seen[tp]] == [f"{tp.topic}:{i}".encode() for i in range(RECORDS)]
            # The test broker answers ListOffsets with the last batch's base offset + 1
            # (BROKER.md), so only a range can be asserted here; fetches carry the true end.
            assert 0 < transport.end_offset(tp) <= RECORDS
            assert transport.highwater(tp) == RECORDS
        # A seek back re-reads from there, and only from there.
        transport.seek(a, RECORDS - 5)
        again: dict[TP, list] = {}
        read(transport, again, lambda: len(again.get(a, [])) >= 5)
        assert [o for o, _ in again[a]] == list(range(RECORDS - 5, RECORDS))
        transport.commit({a: RECORDS, b: RECORDS - 1})
    finally:
        transport.close()


def test_a_resumed_partition_comes_back_a_poll_at_a_time(broker, topics, transport_name):
    # What a paused partition's fetches brought meanwhile is kept in hand; on resume it comes
    # back at most max_poll_records at a time, in order, so the worker sees that partition's
    # event time move as it reads and can pause it again before it runs far ahead.
    tps, _ = topics
    a, b = tps
    transport = joined(broker, transport_name, tps, max_poll_records=400)
    try:
        for tp in tps:
            transport.seek_to(tp, "earliest")
        transport.resume(tps)
        seen: dict[TP, list] = {}
        read(transport, seen, lambda: len(seen.get(b, [])) >= 1)
        transport.pause([b])
        read(transport, seen, lambda: len(seen.get(a, [])) >= RECORDS)
        got_b = len(seen[b])
        transport.resume([b])
        sizes = []
        deadline = time.monotonic() + 60
        while len(seen[b]) < RECORDS:
            assert time.monotonic() < deadline, len(seen[b])
            for batch in transport.poll(0.2):
                if batch.tp == b:
                    sizes.append(len(batch.values))
                seen.setdefault(batch.tp, []).extend(zip(batch.offsets, batch.values))
        assert got_b < RECORDS and max(sizes) <= 400
        assert [o for o, _ in seen[b]] == list(range(RECORDS))
    finally:
        transport.close()


def test_a_partition_paused_before_its_first_record_starts_where_it_was_told(broker, topics,
                                                                              transport_name):
    tps, _ = topics
    a, b = tps
    transport = joined(broker, transport_name, tps)
    try:
        transport.seek(a, 100)
        transport.seek_to(b, "earliest")
        assert transport.position(a) == 100
        assert transport.position(b) == 0
        transport.resume(tps)
        seen: dict[TP, list] = {}
        read(transport, seen, lambda: len(seen.get(a, [])) >= RECORDS - 100
             and len(seen.get(b, [])) >= RECORDS)
        assert [o for o, _ in seen[a]] == list(range(100, RECORDS))
        assert [o for o, _ in seen[b]] == list(range(RECORDS))
        assert transport.position(a) == transport.position(b) == RECORDS
        # ("latest" is not asserted: this broker reports ends short of the true end.)
        # --from TIME: records are stamped when produced, so the first at or after a time long
        # past is the first record. (A time after the last record would give None on Kafka;
        # this broker answers 0, so it is not asserted.)
        assert transport.offset_for_time(a, 946_684_800_000) == 0
    finally:
        transport.close()


def test_a_member_told_committed_or_not_told_starts_at_the_groups_committed_offsets(broker, topics,
                                                                         transport_name):
    tps, _ = topics
    a, b = tps
    group = f"group-{uuid.uuid4().hex[:8]}"
    first = joined(broker, transport_name, tps, group=group)
    try:
        first.commit({a: 1234, b: 2000})
    finally:
        first.close()
    second = joined(broker, transport_name, tps, group=group)
    try:
        second.seek_to(a, "committed")        # told so, and b without a seek: the same
        second.resume(tps)
        assert second.position(a) == 1234 and second.position(b) == 2000
        seen: dict[TP, list] = {}
        read(second, seen, lambda: len(seen.get(a, [])) >= RECORDS - 1234
             and len(seen.get(b, [])) >= RECORDS - 2000)
        assert seen[a][0][0] == 1234 and seen[b][0][0] == 2000
        assert second.position(a) == RECORDS
    finally:
        second.close()


def test_writes_are_acknowledged_and_readable(broker, topics, transport_name):
    tps, out = topics
    transport = joined(broker, transport_name, tps)
    try:
        handles = [transport.send(out, f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")])
                   for i in range(50)]
        transport.flush(10)
        assert [transport.delivery_error(h) for h in handles] == [None] * 50
    finally:
        transport.close()
    messages = read_topic(broker.bootstrap, out, idle_s=1.0)
    assert [m.value() for m in messages] == [f"v{i}".encode() for i in range(50)]
    assert messages[0].key() == b"k0" and dict(messages[0].headers()) == {"h": b"x"}


def test_a_write_while_the_broker_is_gone_is_reported_failed_not_lost(tmp_path, transport_name):
    from detector.io.broker import LocalBroker

    with LocalBroker(log_path=tmp_path / "broker.log") as gone:
        tps = [TP(f"t-{uuid.uuid4().hex[:8]}", 0)]
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": gone.bootstrap})
        for future in admin.create_topics([NewTopic(tps[0].topic, 1, 1)]).values():
            future.result(timeout=10)
        transport = joined(gone, transport_name, tps)
    try:                                      # the broker has stopped
        handle = transport.send(tps[0].topic, None, b"v", [])
        transport.flush(2)
        assert transport.delivery_error(handle) is not None
    except TransportError:
        pass                                  # refused at send: reported all the same
    finally:
        transport.close(timeout_s=1)

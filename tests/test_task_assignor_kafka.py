"""TaskAssignor through the real broker: kafka-python consumers in one group, each polling in
its own thread, their rebalance listeners recording what they were given and what they revoked.

Two topics of six partitions (six tasks). Three members settle on two whole tasks each; a fourth
joins and two tasks move, revoked by their old owners only; a member closes and its tasks go to
the others, who revoke nothing."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from detector.io.task_assignor import TaskAssignor

pytestmark = pytest.mark.kafka

PARTITIONS = 6
#: Long enough for tansu's JoinGroup (held for half the session timeout) and two rounds on a
#: shared machine; a settled group is usually seen within ~10 s.
SETTLE_S = 90


class Recorder(ConsumerRebalanceListener):
    """What kafka-python told the member, in order: ``(event, partitions)``; and, for each
    revocation, which of the revoked partitions the consumer still had assigned in the call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []
        self.still_assigned: list[frozenset[TopicPartition]] = []
        self.threads: set[int] = set()
        self.consumer: KafkaConsumer | None = None

    def _record(self, event: str, partitions) -> None:
        with self.lock:
            self.events.append((event, frozenset(partitions)))
            self.threads.add(threading.get_ident())

    def on_partitions_revoked(self, revoked):
        assert self.consumer is not None
        with self.lock:
            self.still_assigned.append(frozenset(revoked) & self.consumer.assignment())
        self._record("revoked", revoked)

    def on_partitions_assigned(self, assigned):
        self._record("assigned", assigned)

    def on_partitions_lost(self, lost):
        self._record("lost", lost)

    def since(self, mark: int) -> list[tuple[str, frozenset[TopicPartition]]]:
        with self.lock:
            return self.events[mark:]


class Member(threading.Thread):
    """A consumer polling in its own thread; ``holds`` is its assignment after the last poll."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.listener = Recorder()
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, client_id=name,
            # The settings that work against tansu (BROKER.md): it holds a JoinGroup for half
            # the session timeout.
            session_timeout_ms=6000, heartbeat_interval_ms=1000, request_timeout_ms=30_000,
            enable_auto_commit=False, auto_offset_reset="earliest",
            partition_assignment_strategy=[TaskAssignor()])
        self.listener.consumer = self.consumer
        self.consumer.subscribe(topics, listener=self.listener)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.holds: frozenset[TopicPartition] = frozenset()
        self.records = 0
        self.poll_thread = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        self.poll_thread = threading.get_ident()
        try:
            while not self.stopping.is_set():
                fetched = self.consumer.poll(timeout_ms=200)
                with self.lock:
                    self.records += sum(len(r) for r in fetched.values())
                    self.holds = frozenset(self.consumer.assignment())
        except BaseException as err:          # reported by the test, not lost in the thread
            self.error = err
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert not self.is_alive(), f"{self.name} did not close"

    def tasks(self) -> frozenset[int]:
        with self.lock:
            return frozenset(tp.partition for tp in self.holds)


def whole(member: Member, topics: list[str]) -> bool:
    with member.lock:
        holds = member.holds
    return holds == {TopicPartition(t, p) for t in topics for p in member.tasks()}


def settled(members: list[Member], topics: list[str]) -> bool:
    """Every partition held by exactly one member, in whole tasks, balanced."""
    shares = [m.tasks() for m in members]
    placed = [t for share in shares for t in share]
    sizes = [len(s) for s in shares]
    return (sorted(placed) == list(range(PARTITIONS)) and max(sizes) - min(sizes) <= 1
            and all(whole(m, topics) for m in members))


def wait_settled(members: list[Member], topics: list[str]) -> dict[str, frozenset[int]]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        for member in members:
            assert member.error is None, f"{member.name}: {member.error!r}"
        if settled(members, topics):
            # Held for two seconds: not a moment between two rounds.
            time.sleep(2)
            if settled(members, topics):
                return {m.name: m.tasks() for m in members}
        assert time.monotonic() < deadline, {m.name: sorted(m.tasks()) for m in members}
        time.sleep(0.2)


def partitions_of(tasks, topics) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(t, p) for t in topics for p in tasks)


@pytest.fixture
def topics(broker):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    names = [f"mail-{tag}", f"dns-{tag}"]
    admin = AdminClient({"logger": logging.getLogger("rdkafka"),
                         "bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
        future.result(timeout=10)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for name in names:
        for p in range(PARTITIONS):
            for i in range(50):
                producer.produce(name, f"{name}:{p}:{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    return names


def test_members_hold_whole_balanced_tasks_and_keep_them_when_others_join_or_leave(broker,
                                                                                   topics):
    group = f"tasks-{uuid.uuid4().hex[:8]}"
    members = [Member(broker.bootstrap, group, topics, f"member-{i}") for i in range(3)]
    try:
        for member in members:
            member.start()

        # (a) Three members: two whole tasks each.
        first = wait_settled(members, topics)
        assert sorted(len(s) for s in first.values()) == [2, 2, 2]
        for member in members:
            events = member.listener.since(0)
            given = frozenset().union(*(p for e, p in events if e == "assigned"))
            revoked = frozenset().union(*(p for e, p in events if e != "assigned"))
            # Given through on_partitions_assigned; revoked (while the group formed) only what
            # it no longer holds.
            assert given - revoked == partitions_of(first[member.name], topics)
            assert not revoked & partitions_of(first[member.name], topics)
        # Records arrive from the member's own partitions: the group consumes.
        deadline = time.monotonic() + 30
        while not all(m.records for m in members):
            assert time.monotonic() < deadline, [m.records for m in members]
            time.sleep(0.2)

        # (b) A fourth member joins: two tasks move, 2/2/1/1, and only the moved ones are
        # revoked, by their old owners.
        marks = {m.name: len(m.listener.since(0)) for m in members}
        newcomer = Member(broker.bootstrap, group, topics, "member-3")
        newcomer.start()
        members.append(newcomer)
        second = wait_settled(members, topics)
        assert sorted(len(s) for s in second.values()) == [1, 1, 2, 2]
        assert len(second["member-3"]) == 1         # one task moves: from a member holding 2
        for member in members[:3]:
            events = member.listener.since(marks[member.name])
            kept, moved = first[member.name] & second[member.name], first[member.name] - second[
                member.name]
            assert second[member.name] <= first[member.name]       # nobody old gains
            assert [e for e, _ in events if e == "revoked"] == (["revoked"] if moved else [])
            revoked = frozenset().union(*(p for e, p in events if e == "revoked"))
            assert revoked == partitions_of(moved, topics)
            assert not revoked & partitions_of(kept, topics)
            assert not any(e in ("assigned", "lost") for e, _ in events), events
        # kafka-python revokes after it has replaced the assignment: in the callback, the
        # revoked partitions are no longer the consumer's (no position(), no records).
        assert all(not still for m in members for still in m.listener.still_assigned)
        assert newcomer.listener.since(0) == [
            ("assigned", partitions_of(second["member-3"], topics))]

        # (c) A member closes: its tasks go to the others, whose kept tasks stay.
        leaving = next(m for m in members if len(second[m.name]) == 2)
        marks = {m.name: len(m.listener.since(0)) for m in members}
        leaving.stop()
        members.remove(leaving)
        assert leaving.listener.since(marks[leaving.name]) == [
            ("revoked", partitions_of(second[leaving.name], topics))]
        # On close, unlike in a rebalance, they are still assigned during the callback.
        assert leaving.listener.still_assigned[-1] == partitions_of(second[leaving.name], topics)
        third = wait_settled(members, topics)
        assert sorted(len(s) for s in third.values()) == [2, 2, 2]
        for member in members:
            events = member.listener.since(marks[member.name])
            assert second[member.name] <= third[member.name]
            assert not any(e in ("revoked", "lost") for e, _ in events), events
            added = third[member.name] - second[member.name]
            assert added <= second[leaving.name]
            assert events == ([("assigned", partitions_of(added, topics))] if added else [])

        # The listeners ran on kafka-python's IO thread, not on the thread calling poll().
        for member in members:
            assert member.poll_thread not in member.listener.threads
    finally:
        for member in members:
            member.stopping.set()
        for member in members:
            member.join(timeout=30)

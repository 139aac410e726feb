"""Group membership through kafka-python, for both transports: join, assignment, commits.

librdkafka's Python binding cannot take a client-side assignor, and the detector needs one
(``io.assignor``), so with either transport this process is a member of the worker's consumer
group through a kafka-python ``KafkaConsumer`` (``GroupMember``): it joins with the assignor,
hears assignments and revocations, commits offsets and reads committed ones. With the
kafka-python transport the same consumer also fetches the records; with the confluent transport
it fetches nothing (every partition it is given is paused) and only keeps the membership.

Rebalance callbacks run on kafka-python's IO thread, while the main thread is inside ``poll()``.

**A member the group has moved on from.** A member that stalls past its session timeout (a long
pause, a frozen VM) is evicted and its partitions given to another member, but learns it only
from its next exchange with the coordinator. Until then it must not act for the group:
``membership()`` says whether it may (its client joined, the group stable, a heartbeat answered
within the session timeout, as the broker counts it); a commit the group refuses for a moved-on
generation raises ``MembershipLost`` (kafka-python reports it as ``CommitFailedError``, or
``RebalanceInProgressError`` when it knows it is rejoining); and partitions taken away once
membership was lost go to ``on_lost``, not ``on_revoked`` (kafka-python's
``on_partitions_lost``), so nothing is saved for them. librdkafka's equivalents
(``_UNKNOWN_MEMBER_ID``, ``_ILLEGAL_GENERATION``, ``REBALANCE_IN_PROGRESS``,
``assignment_lost()``) never arise here: the librdkafka consumer of the confluent transport never
joins the group and never commits.

Risky here: commits and the rebalance callbacks, the code that decides whether this process may
still act for the group. ``membership()`` reads two kafka-python internals (the coordinator's
``generation_if_stable()`` and its heartbeat's ``session_timeout_expired()``), held to their
shape by ``tests/test_kafka_python_internals.py``.
"""

from __future__ import annotations

import logging
from typing import Iterable

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (CommitFailedError, FencedInstanceIdError, IllegalGenerationError,
                          KafkaError, RebalanceInProgressError, UnknownMemberIdError)
from kafka.structs import OffsetAndMetadata

from .base import TP, Callback, Membership, MembershipLost, TransportError

log = logging.getLogger(__name__)

#: What kafka-python raises for a commit the group refuses because it has moved on: the broker's
#: UNKNOWN_MEMBER_ID and ILLEGAL_GENERATION (and REBALANCE_IN_PROGRESS during a rebalance) come
#: as ``CommitFailedError``, as does a commit made while the client knows it is out of the
#: group; ``RebalanceInProgressError`` while it knows it is rejoining. The others are listed in
#: case a release raises them as they are.
REFUSED = (CommitFailedError, RebalanceInProgressError, UnknownMemberIdError,
           IllegalGenerationError, FencedInstanceIdError)


def topic_partitions(tps: Iterable[TP]) -> list[TopicPartition]:
    """kafka-python's partitions for ours."""
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assigned: Callback, on_revoked: Callback, on_lost: Callback) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.on_lost = on_lost

    def on_partitions_revoked(self, revoked):
        self.on_revoked({TP(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_lost(self, lost):
        self.on_lost({TP(tp.topic, tp.partition) for tp in lost})

    def on_partitions_assigned(self, assigned):
        self.on_assigned({TP(tp.topic, tp.partition) for tp in assigned})


class GroupMember:
    """This process's membership of the consumer group, through ``consumer`` (see the module
    docstring). Errors a retry can cure are raised as ``TransportError``."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    def join(self, topics: list[str], on_assigned: Callback, on_revoked: Callback,
             on_lost: Callback | None = None) -> None:
        listener = _Listener(on_assigned, on_revoked, on_lost or on_revoked)
        self.consumer.subscribe(topics, listener=listener)

    def membership(self) -> Membership | None:
        """The generation and member id while this member may act for the group (see the
        module docstring), else ``None``."""
        coordinator = self.consumer._coordinator
        generation = coordinator.generation_if_stable()
        if generation is None or coordinator.heartbeat.session_timeout_expired():
            return None
        return Membership(generation.generation_id, generation.member_id)

    def assignment(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def poll(self, timeout_s: float) -> None:
        """Drive the group protocol (join, heartbeats' outcomes, the callbacks) when the
        consumer fetches nothing: every partition it holds is paused, so it returns no records."""
        try:
            self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as err:
            raise TransportError(f"group poll failed: {err!r}") from err

    def pause(self, tps: Iterable[TP]) -> None:
        partitions = topic_partitions(tps)
        if partitions:
            self.consumer.pause(*partitions)

    def commit(self, offsets: dict[TP, int], asynchronous: bool = False) -> None:
        commit = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
                  for tp, offset in offsets.items()}
        try:
            if asynchronous:
                self.consumer.commit_async(commit)
            else:
                self.consumer.commit(commit)
        except REFUSED as err:
            raise MembershipLost(f"commit refused: {err!r}") from err
        except KafkaError as err:
            raise TransportError(f"commit failed: {err!r}") from err

    def committed(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp``, or ``None`` when it has none."""
        try:
            offset = self.consumer.committed(TopicPartition(tp.topic, tp.partition))
        except KafkaError as err:
            raise TransportError(f"committed failed: {err!r}") from err
        return offset if offset is not None and offset >= 0 else None

    def close(self) -> None:
        """Leave the group (revoking what it holds, through the callbacks)."""
        try:
            self.consumer.close(autocommit=False)
        except Exception:                  # noqa: BLE001
            log.exception("consumer close failed")


class GroupDelegate:
    """The ``Transport`` methods that are the group member's, for a transport that holds one
    in ``group``: both transports are members of the group through kafka-python alike."""

    group: GroupMember

    def membership(self) -> Membership | None:
        return self.group.membership()

    def assignment(self) -> set[TP]:
        return self.group.assignment()

    def commit(self, offsets: dict[TP, int], asynchronous: bool = False) -> None:
        self.group.commit(offsets, asynchronous)

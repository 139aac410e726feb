"""Group membership through kafka-python, for both transports: join, assignment, commits.

librdkafka's Python binding cannot take a client-side assignor, and the detector needs one
(``io.assignor``), so with either transport this process is a member of the worker's consumer
group through a kafka-python ``KafkaConsumer`` (``GroupMember``): it joins with the assignor,
hears assignments and revocations, commits offsets and reads committed ones. With the
kafka-python transport the same consumer also fetches the records; with the confluent transport
it fetches nothing (every partition it is given is paused) and only keeps the membership.

Rebalance callbacks run on kafka-python's IO thread, while the main thread is inside ``poll()``.

Risky here: commits and the rebalance callbacks, the code that decides whether this process may
still act for the group.
"""

from __future__ import annotations

import logging
from typing import Iterable

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from .base import TP, Callback, TransportError

log = logging.getLogger(__name__)


def topic_partitions(tps: Iterable[TP]) -> list[TopicPartition]:
    """kafka-python's partitions for ours."""
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assigned: Callback, on_revoked: Callback) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked

    def on_partitions_revoked(self, revoked):
        self.on_revoked({TP(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned):
        self.on_assigned({TP(tp.topic, tp.partition) for tp in assigned})


class GroupMember:
    """This process's membership of the consumer group, through ``consumer`` (see the module
    docstring). Errors a retry can cure are raised as ``TransportError``."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    def join(self, topics: list[str], on_assigned: Callback, on_revoked: Callback) -> None:
        self.consumer.subscribe(topics, listener=_Listener(on_assigned, on_revoked))

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

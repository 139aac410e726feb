"""The kafka-python transport (the pure-Python fallback, where librdkafka cannot be installed).

One ``KafkaConsumer`` is both the group member and the fetcher; one ``KafkaProducer`` writes.
Decoding a fetched record costs ~10 us of Python, about what the core spends on it, so the worker
is markedly slower with it (see the README's benchmark table). Group membership and commits are
``group.GroupMember``'s, over the same consumer.

Risky here: two workarounds reach into kafka-python 3.0's internals (pyproject pins the 3.0
releases; ``tests/test_kafka_python_internals.py`` holds their shape): ``release_parked_fetches``
(a paused and resumed partition is otherwise never fetched again) and ``_close_producer`` (a
close that times out otherwise leaves the sender thread retrying forever).
"""

from __future__ import annotations

import logging

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ...settings import KafkaSettings
from ..clients import make_consumer, make_producer
from .base import TP, Batch, Transport, TransportError
from .group import GroupDelegate, GroupMember, topic_partitions

log = logging.getLogger(__name__)


def release_parked_fetches(consumer: KafkaConsumer) -> None:
    """Work around a kafka-python 3.0 fetcher bug before each ``poll()``.

    Records fetched for a partition that is then paused are parked, and given back on resume
    only when the fetcher's in-line slot is ``None``; but a drained slot keeps its empty
    ``PartitionRecords`` object, so a resumed partition stays parked and is never fetched again
    (the worker stalls while reading history with paused partitions). Emptying a drained slot is
    what the fetcher does itself when it parks, so this changes nothing else. A no-op on client
    versions without these attributes.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current and getattr(fetcher, "_paused_partition_records", None):
        setattr(fetcher, "_next_partition_records", None)



class KafkaPythonTransport(GroupDelegate, Transport):
    """Everything through kafka-python (the pure-Python fallback)."""

    name = "kafka-python"

    def __init__(self, kafka: KafkaSettings, group_id: str, assignor) -> None:
        self.kafka = kafka
        try:
            self.producer = make_producer(kafka)
            self.consumer = make_consumer(kafka, group_id, assignor)
        except KafkaError as err:
            raise TransportError(f"cannot reach Kafka: {err!r}") from err
        self.group = GroupMember(self.consumer)      # the same consumer: member and fetcher

    # ---------------------------------------------------------------- group
    # (membership, assignment and commit: GroupDelegate's)

    def join(self, topics, on_assigned, on_revoked, on_lost=None) -> None:
        self.group.join(topics, on_assigned, on_revoked, on_lost)

    # -------------------------------------------------------------- reading

    def poll(self, timeout_s):
        release_parked_fetches(self.consumer)
        try:
            fetched = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as err:
            raise TransportError(f"poll failed: {err!r}") from err
        return [Batch(TP(tp.topic, tp.partition),
                      [r.value if r.value is not None else b"" for r in records],
                      [r.offset for r in records])
                for tp, records in fetched.items() if records]

    def pause(self, tps) -> None:
        self.group.pause(tps)

    def resume(self, tps) -> None:
        partitions = topic_partitions(tps)
        if partitions:
            self.consumer.resume(*partitions)

    def paused(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self.consumer.paused()}

    def seek(self, tp, offset) -> None:
        self.consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

    def seek_to(self, tp, where) -> None:
        kp = TopicPartition(tp.topic, tp.partition)
        if where == "committed":
            offset = self.group.committed(tp)
            if offset is not None:
                self.consumer.seek(kp, offset)
                return
            where = "earliest"
        if where == "earliest":
            self.consumer.seek_to_beginning(kp)
        else:
            self.consumer.seek_to_end(kp)

    def offset_for_time(self, tp, millis) -> int | None:
        kp = TopicPartition(tp.topic, tp.partition)
        try:
            found = self.consumer.offsets_for_times({kp: millis}).get(kp)
        except KafkaError as err:
            raise TransportError(f"offsets_for_times failed: {err!r}") from err
        return None if found is None else found.offset

    def highwater(self, tp) -> int | None:
        try:
            return self.consumer.highwater(TopicPartition(tp.topic, tp.partition))
        except (KafkaError, AssertionError):        # not assigned any more
            return None

    def end_offset(self, tp) -> int | None:
        kp = TopicPartition(tp.topic, tp.partition)
        try:
            return self.consumer.end_offsets([kp]).get(kp)
        except KafkaError as err:
            raise TransportError(f"end_offsets failed: {err!r}") from err

    def position(self, tp) -> int | None:
        try:
            return self.consumer.position(TopicPartition(tp.topic, tp.partition))
        except KafkaError as err:
            raise TransportError(f"position failed: {err!r}") from err

    # -------------------------------------------------------------- writing

    def send(self, topic, key, value, headers):
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as err:          # buffer full, metadata unavailable, closed
            raise TransportError(f"send failed: {err!r}") from err

    def flush(self, timeout_s) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as err:
            raise TransportError(f"flush failed: {err!r}") from err

    def delivery_error(self, handle) -> Exception | None:
        try:
            handle.get(timeout=0)
        except Exception as err:           # noqa: BLE001 - whatever it was, it is not acked
            return err
        return None

    def rebuild_producer(self) -> None:
        try:
            producer = make_producer(self.kafka)
        except KafkaError as err:
            raise TransportError(f"producer rebuild failed: {err!r}") from err
        self._close_producer(timeout_s=5)
        self.producer = producer

    def _close_producer(self, timeout_s: float) -> None:
        """kafka-python 3.0's ``close(timeout)`` flushes first and raises when records are still
        unacknowledged at the timeout (the broker is away), without stopping its sender thread,
        which then retries forever and raises again from ``__del__``. So on that timeout the
        sender is force-closed (it fails what is left; the worker writes those again) and the
        close repeated."""
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError:
            sender = getattr(self.producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout_s)
            try:
                self.producer.close(timeout=1)
            except Exception:              # noqa: BLE001 - closing is best effort
                log.exception("producer close failed")
        except Exception:                  # noqa: BLE001
            log.exception("producer close failed")

    def close(self, timeout_s: float = 10.0) -> None:
        self.group.close()
        self._close_producer(timeout_s)

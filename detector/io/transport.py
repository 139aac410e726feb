"""Transports: how the worker reads and writes Kafka records, behind one small interface.

The worker needs little of a Kafka client: join the group with the single-active assignor, poll
batches of raw values per partition, pause/resume/seek partitions, ask where a partition ends,
commit offsets, and produce records with a way to learn, after a flush, which were acknowledged.
``Transport`` is that interface; two implementations share it (``kafka.transport`` selects one):

``confluent`` (the default)
    Records are fetched and produced by librdkafka (confluent-kafka), which decodes them in C.
    Group membership and offset commits stay with a kafka-python consumer: librdkafka's Python
    binding cannot take a custom assignor, and the detector needs single-active assignment (one
    member judges all OTP mail, the others are standbys; see ``io.kafka.SingleActiveAssignor``).
    That member keeps every partition it is given paused, so it never fetches; the librdkafka
    consumer never joins the group (it only ``assign()``s what the group gave this member, at
    the offsets the worker seeks to). Checkpoints are read back through kafka-python in both.

``kafka-python`` (the pure-Python fallback, where librdkafka cannot be installed)
    One ``KafkaConsumer`` is both the group member and the fetcher; one ``KafkaProducer`` writes.
    Decoding a fetched record costs ~10 us of Python, about what the core spends on it, so the
    worker is markedly slower with it (see the README's benchmark table).

Rebalance callbacks run on kafka-python's IO thread. The kafka-python transport hands them to
the worker as they come; the confluent transport also records the revoked partitions and stops
fetching them at the next ``poll()`` on the main thread, where every librdkafka consumer call is
made.

Errors a retry can cure (broker unreachable, buffer full, timeouts) are raised as
``TransportError``, whichever client raised them.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ..settings import KafkaSettings
from . import kafka as kio

log = logging.getLogger(__name__)

CONFLUENT_MISSING = ("kafka.transport = 'confluent' (the default) needs the confluent-kafka "
                     "package, a dependency of this project: pip install confluent-kafka, or "
                     "set kafka.transport = 'kafka-python' (pure Python, slower)")


class TransportError(Exception):
    """A Kafka operation failed in a way a retry may cure."""


class TP(NamedTuple):
    """A topic partition. Equal to (and hashes like) kafka-python's ``TopicPartition``."""

    topic: str
    partition: int


@dataclass(slots=True)
class Batch:
    """The records one poll returned for one partition, in offset order."""

    tp: TP
    values: list[bytes]
    offsets: list[int]


Callback = Callable[[set[TP]], None]


class Transport(ABC):
    """The interface the worker uses (see the module docstring). Offsets are "next to read"."""

    name = ""

    @abstractmethod
    def join(self, topics: list[str], on_assigned: Callback, on_revoked: Callback) -> None:
        """Subscribe as a member of the worker's group; the callbacks get the partitions."""

    @abstractmethod
    def poll(self, timeout_s: float) -> list[Batch]:
        """The records fetched since the last poll, a batch per partition; waits up to
        ``timeout_s`` for a first one."""

    @abstractmethod
    def pause(self, tps: Iterable[TP]) -> None:
        """No records of these partitions until they are resumed (none is lost)."""

    @abstractmethod
    def resume(self, tps: Iterable[TP]) -> None:
        """Records of these partitions again, from where they stopped or were sought to."""

    @abstractmethod
    def paused(self) -> set[TP]:
        """The partitions paused now."""

    @abstractmethod
    def assignment(self) -> set[TP]:
        """The partitions the group gives this member now."""

    @abstractmethod
    def seek(self, tp: TP, offset: int) -> None:
        """Read ``tp`` from ``offset`` on."""

    @abstractmethod
    def seek_to(self, tp: TP, where: str) -> None:
        """``earliest``, ``latest``, or ``committed`` (the group's offset; earliest if none)."""

    @abstractmethod
    def offset_for_time(self, tp: TP, millis: int) -> int | None:
        """The offset of the first record stamped at or after ``millis``, or ``None``."""

    @abstractmethod
    def highwater(self, tp: TP) -> int | None:
        """The end of the partition as of the last fetch (no request), or ``None``."""

    @abstractmethod
    def end_offset(self, tp: TP) -> int | None:
        """The end of the partition, asked of the broker."""

    @abstractmethod
    def position(self, tp: TP) -> int | None:
        """The next offset this member will read."""

    @abstractmethod
    def commit(self, offsets: dict[TP, int], asynchronous: bool = False) -> None:
        """Commit these next offsets for the group (without waiting, in a callback)."""

    @abstractmethod
    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]]) -> Any:
        """Start a write (``acks=all``); returns a handle for ``delivery_error``."""

    @abstractmethod
    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every started write to be acknowledged or fail."""

    @abstractmethod
    def delivery_error(self, handle: Any) -> Exception | None:
        """After ``flush``: ``None`` when the write was acknowledged, else why not."""

    @abstractmethod
    def rebuild_producer(self) -> None:
        """Replace a producer that keeps failing (an idempotent producer can fail for good)."""

    @abstractmethod
    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group; give unacknowledged writes ``timeout_s`` to complete."""


def make_transport(kafka: KafkaSettings, group_id: str, assignor) -> Transport:
    if kafka.transport == "kafka-python":
        return KafkaPythonTransport(kafka, group_id, assignor)
    return ConfluentTransport(kafka, group_id, assignor)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assigned: Callback, on_revoked: Callback) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked

    def on_partitions_revoked(self, revoked):
        self.on_revoked({TP(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned):
        self.on_assigned({TP(tp.topic, tp.partition) for tp in assigned})


def _kp(tps: Iterable[TP]) -> list[TopicPartition]:
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


class KafkaPythonTransport(Transport):
    """Everything through kafka-python (the pure-Python fallback)."""

    name = "kafka-python"

    def __init__(self, kafka: KafkaSettings, group_id: str, assignor) -> None:
        self.kafka = kafka
        try:
            self.producer = self._make_producer()
            self.consumer = kio.make_consumer(kafka, group_id, assignor)
        except KafkaError as err:
            raise TransportError(f"cannot reach Kafka: {err!r}") from err

    def _make_producer(self):
        return kio.make_producer(self.kafka)

    # ---------------------------------------------------------------- group

    def join(self, topics, on_assigned, on_revoked) -> None:
        self.consumer.subscribe(topics, listener=_Listener(on_assigned, on_revoked))

    def assignment(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def commit(self, offsets, asynchronous=False) -> None:
        commit = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
                  for tp, offset in offsets.items()}
        try:
            if asynchronous:
                self.consumer.commit_async(commit)
            else:
                self.consumer.commit(commit)
        except KafkaError as err:
            raise TransportError(f"commit failed: {err!r}") from err

    # -------------------------------------------------------------- reading

    def poll(self, timeout_s):
        kio.release_parked_fetches(self.consumer)
        try:
            fetched = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as err:
            raise TransportError(f"poll failed: {err!r}") from err
        return [Batch(TP(tp.topic, tp.partition),
                      [r.value if r.value is not None else b"" for r in records],
                      [r.offset for r in records])
                for tp, records in fetched.items() if records]

    def pause(self, tps) -> None:
        tps = _kp(tps)
        if tps:
            self.consumer.pause(*tps)

    def resume(self, tps) -> None:
        tps = _kp(tps)
        if tps:
            self.consumer.resume(*tps)

    def paused(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self.consumer.paused()}

    def seek(self, tp, offset) -> None:
        self.consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

    def seek_to(self, tp, where) -> None:
        kp = TopicPartition(tp.topic, tp.partition)
        if where == "committed":
            offset = self._committed(tp)
            if offset is not None:
                self.consumer.seek(kp, offset)
                return
            where = "earliest"
        if where == "earliest":
            self.consumer.seek_to_beginning(kp)
        else:
            self.consumer.seek_to_end(kp)

    def _committed(self, tp: TP) -> int | None:
        try:
            offset = self.consumer.committed(TopicPartition(tp.topic, tp.partition))
        except KafkaError as err:
            raise TransportError(f"committed failed: {err!r}") from err
        return offset if offset is not None and offset >= 0 else None

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
            producer = self._make_producer()
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
        try:
            self.consumer.close(autocommit=False)
        except Exception:                  # noqa: BLE001
            log.exception("consumer close failed")
        self._close_producer(timeout_s)


def rdkafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection and security settings in librdkafka's names."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(s.strip() for s in kafka.bootstrap_servers.split(",")
                                      if s.strip()),
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol,
        "socket.timeout.ms": kafka.request_timeout_ms,
        # librdkafka's own log lines (connection refused, ...) through the project's logging,
        # in the worker's log format, instead of raw lines on stderr.
        "logger": logging.getLogger("detector.rdkafka"),
    }
    if kafka.security_protocol.startswith("SASL"):
        config.update({"sasl.mechanism": kafka.sasl_mechanism,
                       "sasl.username": kafka.sasl_username,
                       "sasl.password": kafka.sasl_password.get_secret_value()})
    if kafka.security_protocol.endswith("SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none")
        for ours, theirs in (("ssl_cafile", "ssl.ca.location"),
                             ("ssl_certfile", "ssl.certificate.location"),
                             ("ssl_keyfile", "ssl.key.location"),
                             ("ssl_password", "ssl.key.password")):
            value = getattr(kafka, ours)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if value:
                config[theirs] = value
    return config


def rdkafka_producer_config(kafka: KafkaSettings, linger_ms: int,
                            delivery_timeout_ms: int) -> dict[str, Any]:
    """A librdkafka producer's settings, for the worker's writes and ``detector produce``:
    ``acks=all`` and idempotent (per key, in order and once), and as kafka-python and the Java
    client: the same key to the same partition whichever client wrote it (murmur2), records up
    to 4 MB. A write not acknowledged within ``delivery_timeout_ms`` is reported failed."""
    return {
        **rdkafka_config(kafka),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "delivery.timeout.ms": delivery_timeout_ms,
        "partitioner": "murmur2_random",
        "message.max.bytes": 4_000_000,
    }


class _Delivery:
    """A librdkafka write's outcome, set by its delivery report."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: Exception | None = None

    def report(self, err, _msg) -> None:
        self.done = True
        if err is not None:
            self.error = TransportError(f"write failed: {err}")


class ConfluentTransport(KafkaPythonTransport):
    """Records in and out through librdkafka; the group through kafka-python (see the module
    docstring)."""

    name = "confluent"

    def __init__(self, kafka: KafkaSettings, group_id: str, assignor) -> None:
        try:
            import confluent_kafka
        except ImportError:
            raise ImportError(CONFLUENT_MISSING) from None
        self._ck = confluent_kafka
        self._lock = threading.Lock()
        self._revoked: set[TP] = set()     # revoked by the group, still to unassign (main thread)
        self._fetching: set[TP] = set()    # assigned to the librdkafka consumer
        self._paused: set[TP] = set()      # paused by the worker
        self._stopped: set[TP] = set()     # paused in librdkafka too (see ``pause``)
        self._parked: dict[TP, Batch] = {}  # records of paused partitions, in hand
        self._ready: dict[TP, Batch] = {}   # parked records of resumed partitions, next out
        # Where each partition was told to start (kept until revoked: librdkafka knows no
        # position before the first record after an assign or a seek).
        self._starts: dict[TP, int] = {}
        super().__init__(kafka, group_id, assignor)
        # The kafka-python member: membership and commits only. It fetches nothing, because
        # every partition it is given is paused before its first fetch (in the callback).
        self.fetcher = confluent_kafka.Consumer({
            **rdkafka_config(kafka),
            # The group's id, for reading committed offsets; this consumer never subscribes, so
            # it never joins the group, and it never commits.
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # As kafka-python (and the Kafka default): every record, transactional or not.
            "isolation.level": "read_uncommitted",
            # Prefetch at most ~16 MB per partition (librdkafka's default is 64 MB): a
            # partition paused for being ahead of the watermark keeps no more than that.
            "queued.max.messages.kbytes": 16_384,
            # When that queue is full, fetch again after 50 ms, not librdkafka's 1 s: the worker
            # drains 16 MB in about a second, and would otherwise wait with an empty queue.
            "fetch.queue.backoff.ms": 50,
        })
        self.max_records = kafka.max_poll_records

    def _make_producer(self):
        # A write not acknowledged in 30 s is reported failed and retried by the worker.
        return self._ck.Producer(rdkafka_producer_config(self.kafka, self.kafka.linger_ms,
                                                         delivery_timeout_ms=30_000))

    # ---------------------------------------------------------------- group

    def join(self, topics, on_assigned, on_revoked) -> None:
        def assigned(tps: set[TP]) -> None:
            # Never fetch through kafka-python: pause before anything else can run.
            KafkaPythonTransport.pause(self, tps)
            with self._lock:
                self._revoked -= tps
            on_assigned(tps)

        def revoked(tps: set[TP]) -> None:
            on_revoked(tps)
            with self._lock:
                self._revoked |= tps

        super().join(topics, assigned, revoked)

    # -------------------------------------------------------------- reading

    def _ctp(self, tp: TP, offset: int | None = None):
        if offset is None:
            return self._ck.TopicPartition(tp.topic, tp.partition)
        return self._ck.TopicPartition(tp.topic, tp.partition, offset)

    def _unassign_revoked(self) -> None:
        with self._lock:
            revoked, self._revoked = self._revoked, set()
        if not revoked:
            return
        fetching = revoked & self._fetching
        if fetching:
            try:
                self.fetcher.incremental_unassign([self._ctp(tp) for tp in fetching])
            except self._ck.KafkaException as err:     # not ours any more either way
                log.warning("unassign failed", extra={"error": repr(err)})
            self._fetching -= fetching
        self._paused -= revoked
        for tp in revoked:
            self._starts.pop(tp, None)
        self._forget(revoked)

    def _forget(self, tps: set[TP]) -> None:
        """Drop what is in hand for these partitions (revoked, or sought elsewhere)."""
        self._stopped -= tps
        for tp in tps:
            self._parked.pop(tp, None)
            self._ready.pop(tp, None)

    def poll(self, timeout_s):
        self._unassign_revoked()
        # Drive kafka-python's group protocol (its partitions are all paused: it returns no
        # records). With nothing to fetch (joining, standby) it is the poll that waits.
        try:
            self.consumer.poll(timeout_ms=0 if self._fetching else int(timeout_s * 1000))
        except KafkaError as err:
            raise TransportError(f"group poll failed: {err!r}") from err
        self.producer.poll(0)              # delivery reports
        if not self._fetching:
            return []
        batches, self._ready = self._ready, {}
        messages: list = []
        try:
            # consume(n, timeout) waits until n records are in or the timeout ends: take what is
            # there now, and wait only for a first record when there is none.
            messages = self.fetcher.consume(self.max_records, 0)
            if not messages and not batches:
                messages = self.fetcher.consume(1, timeout_s)
                if messages:
                    messages += self.fetcher.consume(self.max_records - 1, 0)
        except self._ck.KafkaException as err:
            # Records in hand (parked, or returned by an earlier call) are past librdkafka's
            # position: hand them over now; the error shows again at the next poll.
            if not messages and not batches:
                raise TransportError(f"consume failed: {err!r}") from err
            log.warning("consume failed", extra={"error": repr(err)})
        last = None
        for message in messages:
            if message.error() is not None:
                log.warning("fetch error", extra={"error": str(message.error())})
                continue
            key = (message.topic(), message.partition())
            if last is None or key != last.tp:
                last = batches.get(key)
                if last is None:
                    last = batches[key] = Batch(TP(*key), [], [])
            value = message.value()
            last.values.append(value if value is not None else b"")
            last.offsets.append(message.offset())
        if self._paused:
            self._park([batches.pop(tp) for tp in self._paused if tp in batches])
        with self._lock:
            gone = self._revoked
        return [b for b in batches.values() if b.tp not in gone]

    def _park(self, batches: list[Batch]) -> None:
        """Keep records of paused partitions that were already fetched; stop fetching a
        partition in librdkafka once a poll's worth is parked (see ``pause``)."""
        for batch in batches:
            parked = self._parked.get(batch.tp)
            if parked is None:
                parked = self._parked[batch.tp] = Batch(batch.tp, [], [])
            parked.values += batch.values
            parked.offsets += batch.offsets
            if len(parked.values) >= self.max_records and batch.tp not in self._stopped:
                try:
                    self.fetcher.pause([self._ctp(batch.tp)])
                    self._stopped.add(batch.tp)
                except self._ck.KafkaException as err:   # parking goes on; tried again later
                    log.warning("pause failed", extra={"error": repr(err)})

    def pause(self, tps) -> None:
        """Pausing a partition in librdkafka drops what it has prefetched, to be fetched again
        on resume; the worker pauses a partition whenever it runs ahead of the watermark (and
        resumes it soon), so that would throw away and fetch again most of the input when
        reading history (measured: a third of the throughput). Instead the records of a paused
        partition that keep coming are parked here, like kafka-python does, and the partition
        is paused in librdkafka only once a poll's worth (``max_poll_records``) is parked:
        memory stays bounded, and a short pause costs nothing."""
        self._paused |= set(tps)

    def resume(self, tps) -> None:
        tps = set(tps)
        self._unassign_revoked()
        self._paused -= tps
        stopped = tps & self._stopped
        if stopped:
            with self._errors("resume"):
                self.fetcher.resume([self._ctp(tp) for tp in stopped])
            self._stopped -= stopped
        for tp in tps:
            parked = self._parked.pop(tp, None)
            if parked is not None:
                self._ready[tp] = parked
        # Only what the group gives this member now is ever fetched.
        new = (tps - self._fetching) & self.assignment()
        if new:
            stored = self._ck.OFFSET_STORED
            with self._errors("assign"):
                self.fetcher.incremental_assign(
                    [self._ctp(tp, self._starts.get(tp, stored)) for tp in sorted(new)])
            self._fetching |= new

    def paused(self) -> set[TP]:
        return set(self._paused)

    def _start_at(self, tp: TP, offset: int) -> None:
        self._starts[tp] = offset
        if tp in self._fetching:
            with self._errors("seek"):
                if tp in self._stopped:
                    self.fetcher.resume([self._ctp(tp)])
                self._forget({tp})
                self.fetcher.seek(self._ctp(tp, offset))

    def seek(self, tp, offset) -> None:
        self._start_at(tp, offset)

    def seek_to(self, tp, where) -> None:
        if where == "committed":
            offset = self._committed(tp)
            self._start_at(tp, offset if offset is not None else self._ck.OFFSET_BEGINNING)
            return
        self._start_at(tp, self._ck.OFFSET_BEGINNING if where == "earliest"
                       else self._ck.OFFSET_END)

    def offset_for_time(self, tp, millis) -> int | None:
        try:
            found = self.fetcher.offsets_for_times([self._ctp(tp, millis)], timeout=10)
        except self._ck.KafkaException as err:
            raise TransportError(f"offsets_for_times failed: {err!r}") from err
        if found and found[0].error is not None:      # e.g. no leader: retried, not "the end"
            raise TransportError(f"offsets_for_times failed: {found[0].error}")
        offset = found[0].offset if found else -1
        return offset if offset >= 0 else None

    def highwater(self, tp) -> int | None:
        if tp not in self._fetching:
            return None
        try:
            _low, high = self.fetcher.get_watermark_offsets(self._ctp(tp), cached=True)
        except self._ck.KafkaException:
            return None
        return high if high >= 0 else None

    def _watermarks(self, tp: TP) -> tuple[int, int]:
        try:
            return self.fetcher.get_watermark_offsets(self._ctp(tp), timeout=10, cached=False)
        except self._ck.KafkaException as err:
            raise TransportError(f"watermarks failed: {err!r}") from err

    def end_offset(self, tp) -> int | None:
        return self._watermarks(tp)[1]

    def position(self, tp) -> int | None:
        """librdkafka knows a position only once a record was read after an assign or a seek;
        before that the position is where the partition was told to start: an offset, the
        log's end or start, or the group's committed offset (the start when there is none)."""
        found = -1
        if tp in self._fetching:
            with self._errors("position"):
                found = self.fetcher.position([self._ctp(tp)])[0].offset
        if found >= 0:
            return found
        start = self._starts.get(tp, self._ck.OFFSET_STORED)
        if start >= 0:
            return start
        if start == self._ck.OFFSET_STORED:
            committed = self._committed(tp)
            if committed is not None:
                return committed
        low, high = self._watermarks(tp)
        return high if start == self._ck.OFFSET_END else low

    @contextmanager
    def _errors(self, what: str):
        """librdkafka's errors as ``TransportError`` (the worker retries those)."""
        try:
            yield
        except self._ck.KafkaException as err:
            raise TransportError(f"{what} failed: {err!r}") from err

    # -------------------------------------------------------------- writing

    def send(self, topic, key, value, headers):
        delivery = _Delivery()
        try:
            self.producer.produce(topic, value=value, key=key, headers=headers,
                                  on_delivery=delivery.report)
        except BufferError as err:                 # the local queue is full
            self.producer.poll(0)
            raise TransportError(f"send failed: {err!r}") from err
        except self._ck.KafkaException as err:
            raise TransportError(f"send failed: {err!r}") from err
        return delivery

    def flush(self, timeout_s) -> None:
        self.producer.flush(timeout_s)

    def delivery_error(self, handle) -> Exception | None:
        if not handle.done:
            return TransportError("write not acknowledged in time")
        return handle.error

    def _close_producer(self, timeout_s: float) -> None:
        """Give outstanding writes ``timeout_s``, then drop the rest: their delivery reports
        say so, and the worker writes them again."""
        try:
            if self.producer.flush(timeout_s):
                self.producer.purge()
                self.producer.flush(0)
        except Exception:                  # noqa: BLE001 - closing is best effort
            log.exception("producer close failed")

    def close(self, timeout_s: float = 10.0) -> None:
        super().close(timeout_s)
        try:
            self.fetcher.close()
        except Exception:                  # noqa: BLE001
            log.exception("fetcher close failed")

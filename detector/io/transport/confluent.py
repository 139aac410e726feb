"""The confluent transport (the default): records in and out through librdkafka.

Records are fetched and produced by librdkafka (confluent-kafka), which decodes them in C. Group
membership and offset commits stay with a kafka-python consumer: librdkafka's Python binding
cannot take a custom assignor, and the detector needs single-active assignment (one member judges
all OTP mail, the others are standbys; see ``io.assignor``). That member keeps every partition it
is given paused, so it never fetches; the librdkafka consumer never joins the group (it only
``assign()``s what the group gave this member, at the offsets the worker seeks to).

Rebalance callbacks run on kafka-python's IO thread: this transport records the revoked
partitions there and stops fetching them at the next ``poll()`` on the main thread, where every
librdkafka consumer call is made.

Risky here: the bookkeeping between the two clients (which partitions librdkafka fetches, which
are paused, parked records of paused partitions, where each partition starts): a partition
fetched twice, or never resumed, or records handed over after a revocation, break the worker's
once-and-in-order reading.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from kafka.errors import KafkaError

from ...settings import KafkaSettings
from ..clients import make_consumer, rdkafka_config, rdkafka_producer_config
from .base import TP, Batch, Transport, TransportError
from .group import GroupDelegate, GroupMember

#: librdkafka's prefetch queue (``queued.max.messages.kbytes``: one queue for every partition of
#: the consumer), and what the paused partitions may park in hand together before they are paused
#: in librdkafka too: the same 16 MiB.
PREFETCH_KIB = 16_384
PARK_BYTES = PREFETCH_KIB * 1024
#: kafka-python's group member is polled at most this often while records flow (it fetches
#: nothing; its heartbeats run in their own thread): each poll costs about a millisecond, and
#: once per batch was 2 % of a backlog read. Rebalance callbacks wait at most this long more.
GROUP_POLL_INTERVAL_S = 0.1


log = logging.getLogger(__name__)

CONFLUENT_MISSING = ("kafka.transport = 'confluent' (the default) needs the confluent-kafka "
                     "package, a dependency of this project: pip install confluent-kafka, or "
                     "set kafka.transport = 'kafka-python' (pure Python, slower)")


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


class ConfluentTransport(GroupDelegate, Transport):
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
        self._parked_bytes: dict[TP, int] = {}
        self._next_group_poll = 0.0
        self._ready: dict[TP, Batch] = {}   # parked records of resumed partitions, next out
        # Where each partition was told to start (kept until revoked: librdkafka knows no
        # position before the first record after an assign or a seek).
        self._starts: dict[TP, int] = {}
        self.kafka = kafka
        try:
            self.producer = self._make_producer()
            # The kafka-python member: membership and commits only. It fetches nothing, because
            # every partition it is given is paused before its first fetch (in the callback).
            self.group = GroupMember(make_consumer(kafka, group_id, assignor))
        except KafkaError as err:
            raise TransportError(f"cannot reach Kafka: {err!r}") from err
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
            # Prefetch at most 16 MiB (librdkafka's default is 64 MB; one queue for all the
            # partitions): see ``PREFETCH_KIB``.
            "queued.max.messages.kbytes": PREFETCH_KIB,
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
    # (membership, assignment and commit: GroupDelegate's)

    def join(self, topics, on_assigned, on_revoked, on_lost=None) -> None:
        def assigned(tps: set[TP]) -> None:
            # Never fetch through kafka-python: pause before anything else can run.
            self.group.pause(tps)
            with self._lock:
                self._revoked -= tps
            on_assigned(tps)

        def taken(callback):
            """Revoked or lost: the worker first, then librdkafka stops fetching them."""
            def away(tps: set[TP]) -> None:
                callback(tps)
                with self._lock:
                    self._revoked |= tps
            return away

        self.group.join(topics, assigned, taken(on_revoked), taken(on_lost or on_revoked))

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
            self._parked_bytes.pop(tp, None)
            self._ready.pop(tp, None)

    def poll(self, timeout_s):
        self._unassign_revoked()
        # Drive kafka-python's group protocol (its partitions are all paused: it returns no
        # records). With nothing to fetch (joining, standby) it is the poll that waits.
        # (Its poll waits out the timeout even once the assignment has come: in short waits, the
        # worker starts reading within 0.1 s of it, not up to half a second later.)
        now = time.monotonic()
        if not self._fetching or now >= self._next_group_poll:
            self.group.poll(0 if self._fetching else min(timeout_s, GROUP_POLL_INTERVAL_S))
            self._next_group_poll = now + GROUP_POLL_INTERVAL_S
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
        # A resumed partition's parked records go out a poll's worth at a time, the rest first
        # in the next poll: the worker sees the partition's event time move as it reads it, and
        # pauses it again before it runs far ahead of the others.
        limit = self.max_records
        for batch in batches.values():
            if len(batch.values) > limit:
                self._ready[batch.tp] = Batch(batch.tp, batch.values[limit:],
                                              batch.offsets[limit:])
                del batch.values[limit:], batch.offsets[limit:]
        with self._lock:
            gone = self._revoked
        return [b for b in batches.values() if b.tp not in gone]

    def _park(self, batches: list[Batch]) -> None:
        """Keep records of paused partitions that were already fetched; stop fetching the
        parked partitions in librdkafka once a prefetch queue's worth is parked in all (see
        ``pause``)."""
        for batch in batches:
            parked = self._parked.get(batch.tp)
            if parked is None:
                parked = self._parked[batch.tp] = Batch(batch.tp, [], [])
            parked.values += batch.values
            parked.offsets += batch.offsets
            self._parked_bytes[batch.tp] = (self._parked_bytes.get(batch.tp, 0)
                                            + sum(map(len, batch.values)))
        if sum(self._parked_bytes.values()) < PARK_BYTES:
            return
        for tp in self._parked.keys() - self._stopped:
            try:
                self.fetcher.pause([self._ctp(tp)])
                self._stopped.add(tp)
            except self._ck.KafkaException as err:       # parking goes on; tried again later
                log.warning("pause failed", extra={"error": repr(err)})

    def pause(self, tps) -> None:
        """Pausing a partition in librdkafka drops what it has prefetched, to be fetched again
        on resume; the worker pauses a partition whenever it runs ahead of the watermark (and
        resumes it soon), so that would throw away and fetch again most of the input when
        reading history (measured: a third of the throughput). Instead the records of a paused
        partition that keep coming are parked here, like kafka-python does, and the partition
        is paused in librdkafka only once the paused partitions have parked a prefetch queue's
        worth (``PARK_BYTES`` of values, together): memory stays bounded (librdkafka's queue plus
        as much in hand), and a pause of the usual length costs nothing. (A bound of a poll's
        worth of records per partition, 5,000, was reached by most pauses of a backlog read at a
        few records a second, each dropping the prefetch: 281 times in a 3.4 M-record read, with
        a tenth of its time spent waiting for records fetched again.)"""
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
            self._parked_bytes.pop(tp, None)
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
            offset = self.group.committed(tp)
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
            committed = self.group.committed(tp)
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

    def rebuild_producer(self) -> None:
        try:
            producer = self._make_producer()
        except self._ck.KafkaException as err:
            raise TransportError(f"producer rebuild failed: {err!r}") from err
        self._close_producer(timeout_s=5)
        self.producer = producer

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
        self.group.close()
        self._close_producer(timeout_s)
        try:
            self.fetcher.close()
        except Exception:                  # noqa: BLE001
            log.exception("fetcher close failed")

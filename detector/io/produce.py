"""Load log files into a Kafka topic: ``detector produce`` (demos, tests, backfills).

Lines are sent as they are, bytes untouched (a malformed line stays malformed, so the worker's
dead-letter handling sees what production would). The message key is the join key
(``core.partitioning``) when it can be read: the registrable domain of the queried name for DNS
and of the sender's domain for mail (of its first named lookup when it has no sender), so
``_dmarc.bank.example``, ``sel._domainkey.bank.example`` and mail from ``codes@auth.bank.example``
all get ``bank.example``: with the same partitioner and the same partition count on both topics,
a delivery and the lookups of its sender's SPF, DKIM and DMARC records land in the same partition
number, the task a join worker owns. Before keyed records go into one of the configured input
topics, ``detector produce`` checks that the other one has as many (``copartition``). With
``speed`` the file's event time is replayed at that multiple of real time (60: an hour of logs in
a minute).

Records go out through librdkafka (confluent-kafka): a backfill of a day of a provider's logs is
millions of lines, and kafka-python's producer spends ~80 us of Python per record where
librdkafka's ``produce()`` is one C call that only copies the bytes into its queue; its own
threads batch, send and retry. Measured by ``detector bench`` (section 2): 12 k records/s through
kafka-python, over 100 k through librdkafka on the same machine. Only failures come back as
delivery reports (``delivery.report.only.error``), so a record that is acknowledged costs no
Python at all. Keys go through librdkafka's ``murmur2_random`` partitioner, the Java client's
and kafka-python's murmur2, so a key lands in the same partition whichever client wrote it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ..core.partitioning import (CACHE_ENTRIES, CACHED_NAME_CHARS, REVERSE_SUFFIXES,
                                 registrable_domain)
from ..core.records import Rejected, domain_of, parse_ts
from ..formats.base import convert_chunks
from ..settings import KafkaSettings
from .files import LineSource, TruncatedInput

#: A record not acknowledged in this long has failed, and so has the run (exit 3): long enough to
#: ride over a leader election (seconds), short enough to report a broker that went away while
#: the user waits. librdkafka retries within it.
DELIVERY_TIMEOUT_MS = 30_000
#: While the producer's queue is full, wait this long for room between checks for failures.
QUEUE_WAIT_S = 0.1

#: librdkafka logs every failed connection attempt; ``produce`` is a command with one error line,
#: so its log goes nowhere and the last broker error is named in that line instead.
_LIBRDKAFKA_LOG = logging.getLogger("detector.produce.librdkafka")
_LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
_LIBRDKAFKA_LOG.propagate = False


def _record(line: bytes) -> dict | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _key(obj: dict) -> bytes | None:
    """The join key of a decoded record (see ``join_key``)."""
    qname = obj.get("qname")
    if not (isinstance(qname, str) and qname):
        sender = obj.get("sender")
        qname = domain_of(sender) if isinstance(sender, str) else None
        if qname is None:
            # No sender: the delivery joins only through the lookups it names.
            lookups = obj.get("dns_lookups")
            first = lookups[0] if isinstance(lookups, list) and lookups else None
            qname = first.get("qname") if isinstance(first, dict) else None
            if not isinstance(qname, str):
                return None
    key = _KEYS.get(qname)
    return (key if key is not None else _new_key(qname)) or None


#: The key bytes of each name seen: one dict hit a record, as cheap as the old key (the name in
#: lower case), where a call into ``registrable_domain`` and an ``encode`` cost 90 ns more. A name
#: not seen before costs the Public Suffix List lookup, 2 to 3 us (README, "Co-partitioning for
#: scale-out", has the measurements).
_KEYS: dict[str, bytes] = {}


def _new_key(name: str) -> bytes:
    domain = registrable_domain(name)
    key = domain.encode()
    # As registrable_domain's own cache: not a long name, nor a reverse name (as many as there
    # are client addresses: they would empty the cache of the senders' names).
    if len(name) <= CACHED_NAME_CHARS and not domain.endswith(REVERSE_SUFFIXES):
        if len(_KEYS) >= CACHE_ENTRIES:
            _KEYS.clear()
        _KEYS[name] = key
    return key


def _ts(obj: dict) -> float | None:
    try:
        return parse_ts(obj.get("ts"))
    except Rejected:
        return None


def join_key(line: bytes) -> tuple[bytes | None, float | None]:
    """The record's join key and event time, when the line is readable enough to say: the
    registrable domain of a DNS record's question name, of a mail record's sender's domain, or,
    for mail without a sender (or the null sender ``<>``), of the first lookup it names; no key
    for mail with neither.

    >>> join_key(b'{"ts": "2026-11-27T10:15:02Z", "qname": "_DMARC.Bank1.Example.", "rcode": "x"}')
    (b'bank1.example', 1795774502.0)
    >>> join_key(b'{"ts": 1795774502, "sender": "codes@auth.bank1.example", "status": "x"}')
    (b'bank1.example', 1795774502.0)
    >>> join_key(b'{"ts": 1795774502, "sender": "<>", "status": "failed"}')[0] is None
    True
    >>> join_key(b'{oops')
    (None, None)
    """
    obj = _record(line)
    if obj is None:
        return None, None
    return _key(obj), _ts(obj)


def _text(err: Exception) -> str:
    """A librdkafka exception's message (its ``KafkaError``'s text, not its repr)."""
    first: Any = err.args[0] if err.args else None
    return first.str() if hasattr(first, "str") else str(err)


class ProduceStopped(Exception):
    """Producing stopped part-way: ``sent`` records were acknowledged by Kafka before it did
    (an input that broke off, a broker that went away); ``cause`` says why."""

    def __init__(self, sent: int, cause: str, started: bool = True) -> None:
        super().__init__(cause)
        self.sent, self.cause, self.started = sent, cause, started


class _Loader:
    """A librdkafka producer that counts what it was handed and what failed.

    Every record handed over is either acknowledged (no report) or reported failed, so once
    the queue is flushed or purged, ``handed - failed`` is exactly what Kafka acknowledged.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        from confluent_kafka import KafkaException, Producer

        from .clients import rdkafka_producer_config

        self.topic = topic
        self.handed = 0
        self.failed = 0
        self.error: str | None = None
        self.broker_error: str | None = None     # the last one librdkafka reported
        self._exception = KafkaException
        # Per key, in order and once (the watermark's lateness bound holds per key); keys
        # partitioned as kafka-python and the Java client do (see the module docstring).
        self.producer = Producer({
            **rdkafka_producer_config(kafka, linger_ms=20,
                                      delivery_timeout_ms=DELIVERY_TIMEOUT_MS),
            "delivery.report.only.error": True,
            "on_delivery": self._report,
            "error_cb": self._broker_failed,
            "logger": _LIBRDKAFKA_LOG,
        })
        self._produce = self.producer.produce
        try:                  # what kafka-python's constructor did: fail now when no broker answers
            self.producer.list_topics(timeout=kafka.request_timeout_ms / 1000)
        except KafkaException as err:
            raise ProduceStopped(0, f"cannot connect to Kafka at {kafka.bootstrap_servers}: "
                                    f"{_text(err)}", started=False) from None

    def _report(self, err, _message) -> None:
        self.failed += 1
        if self.error is None:
            self.error = err.str()

    def _broker_failed(self, err) -> None:
        self.broker_error = err.str()

    def send(self, values: list[bytes], keys: list[bytes | None] | None) -> None:
        """Hand ``values`` (with ``keys``) to librdkafka; waits while its queue is full."""
        produce, topic = self._produce, self.topic
        for n, value in enumerate(values):
            key = keys[n] if keys is not None else None
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    self.producer.poll(QUEUE_WAIT_S)
                    self.check()
                except self._exception as err:
                    self.error = _text(err)
                    self.check()
            self.handed += 1
        self.producer.poll(0)
        self.check()

    def check(self) -> None:
        """Raise ``ProduceStopped`` once a record has failed."""
        if self.error is not None:
            cause = f"Kafka failed: {self.error}"
            if self.broker_error and self.broker_error not in cause:
                cause += f" (last broker error: {self.broker_error})"
            raise ProduceStopped(self.stop(), cause)

    def flush(self) -> int:
        """Wait for every record; raises ``ProduceStopped`` if one failed. Returns the count."""
        while self.producer.flush(1.0):
            self.check()
        self.check()
        return self.handed

    def stop(self) -> int:
        """Drop what is still queued (its reports say so); the count acknowledged."""
        try:
            self.producer.purge()
            self.producer.flush(5.0)
        except (self._exception, RuntimeError):      # closing is best effort
            pass
        return self.handed - self.failed


def produce_files(kafka: KafkaSettings, topic: str, paths: list[str], speed: float | None = None,
                  keyed: bool = True, adapter=None,
                  rejected: Callable[[str, int | None], None] | None = None) -> int:
    """Send every non-blank line of ``paths`` to ``topic``; returns the number sent.

    With an ``adapter`` (a log format of its own), the records it makes of the lines are sent
    instead, in the contract's JSON form; lines it rejects are not sent, and are reported to
    ``rejected(reason, line number)``. Raises ``ProduceStopped`` with the count acknowledged when
    an input breaks off (what was read before is sent and flushed first) or Kafka fails.
    """
    loader = _Loader(kafka, topic)
    pace = _Pace(speed) if speed else None
    for path in paths:
        source = LineSource(path, "any")
        try:
            batches: Iterator[tuple[list[bytes], tuple | None]]
            if adapter is None:
                batches = ((lines, None) for lines, _ in source.chunks())
            else:
                batches = ((out.records, (out, numbers))
                           for out, numbers in convert_chunks(adapter, source.chunks()))
            for batch, converted in batches:
                if converted is not None and rejected is not None:
                    out, numbers = converted
                    for index, reason in out.rejected:
                        rejected(reason, numbers[index] if numbers else None)
                if pace is None:
                    loader.send(batch, [_key(o) if (o := _record(line)) is not None else None
                                        for line in batch] if keyed else None)
                    continue
                for line in batch:               # paced: each line waits for its event time
                    obj = _record(line)
                    if obj is not None:
                        pace.wait(_ts(obj), loader)
                    loader.send([line], [_key(obj) if obj is not None and keyed else None])
        except TruncatedInput as err:
            loader.flush()
            raise ProduceStopped(loader.stop(), str(err)) from None
        finally:
            source.close()
    return loader.flush()


class _Pace:
    """Sends a record no earlier than its event time after the first, divided by ``speed``."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first_ts: float | None = None
        self.started = 0.0

    def wait(self, ts: float | None, loader: _Loader) -> None:
        if ts is None:
            return
        if self.first_ts is None:
            self.first_ts, self.started = ts, time.monotonic()
            return
        delay = (ts - self.first_ts) / self.speed - (time.monotonic() - self.started)
        if delay > 0:
            # librdkafka sends what it holds meanwhile (linger); its reports are served here.
            loader.producer.poll(0)
            time.sleep(delay)
            loader.check()

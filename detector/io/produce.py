"""Load log files into a Kafka topic: ``detector produce`` (demos, tests, backfills).

Lines are sent as they are, bytes untouched (a malformed line stays malformed, so the worker's
dead-letter handling sees what production would). The message key is the join key when it can be
read (the sender's domain for mail, the queried name for DNS), so a topic partitioned by key keeps
a delivery and its lookups together. With ``speed`` the file's event time is replayed at that
multiple of real time (60: an hour of logs in a minute).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from kafka.errors import KafkaError

from ..core.records import Rejected, domain_of, normalize_name, parse_ts
from ..formats.base import convert_chunks
from ..settings import KafkaSettings
from .files import LineSource, TruncatedInput
from .kafka import make_producer


def join_key(line: bytes) -> tuple[bytes | None, float | None]:
    """The record's join key and event time, when the line is readable enough to say."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    key = None
    qname, sender = obj.get("qname"), obj.get("sender")
    if isinstance(qname, str) and qname:
        key = normalize_name(qname)
    elif isinstance(sender, str):
        key = domain_of(sender)
    try:
        ts = parse_ts(obj.get("ts"))
    except Rejected:
        ts = None
    return (key.encode() if key else None), ts


class ProduceStopped(Exception):
    """Producing stopped part-way: ``sent`` records were handed to the producer before it did
    (an input that broke off, a broker that went away); ``cause`` says why."""

    def __init__(self, sent: int, cause: str, started: bool = True) -> None:
        super().__init__(cause)
        self.sent, self.cause, self.started = sent, cause, started


def produce_files(kafka: KafkaSettings, topic: str, paths: list[str], speed: float | None = None,
                  keyed: bool = True, adapter=None,
                  rejected: Callable[[str, int | None], None] | None = None) -> int:
    """Send every non-blank line of ``paths`` to ``topic``; returns the number sent.

    With an ``adapter`` (a log format of its own), the records it makes of the lines are sent
    instead, in the contract's JSON form; lines it rejects are not sent, and are reported to
    ``rejected(reason, line number)``. Raises ``ProduceStopped`` with the count sent when an
    input breaks off (what was read before is sent and flushed first) or Kafka fails.
    """
    try:
        producer = make_producer(kafka, batch_size=1_048_576, linger_ms=20)
    except KafkaError as err:
        raise ProduceStopped(0, f"cannot connect to Kafka at {kafka.bootstrap_servers}: "
                                f"{err}", started=False) from None
    sent = 0
    first_ts = started = None
    try:
        for path in paths:
            source = LineSource(path, "any")
            try:
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
                    for line in batch:
                        key, ts = join_key(line) if (keyed or speed) else (None, None)
                        if speed and ts is not None:
                            if first_ts is None:
                                first_ts, started = ts, time.monotonic()
                            delay = (ts - first_ts) / speed - (time.monotonic() - started)
                            if delay > 0:
                                producer.flush()
                                time.sleep(delay)
                        producer.send(topic, key=key if keyed else None, value=line)
                        sent += 1
            except TruncatedInput as err:
                producer.flush()
                raise ProduceStopped(sent, str(err)) from None
            finally:
                source.close()
        producer.flush()
    except KafkaError as err:
        raise ProduceStopped(sent, f"Kafka failed: {err}") from None
    finally:
        try:
            producer.close(timeout=5)
        except KafkaError:
            pass
    return sent

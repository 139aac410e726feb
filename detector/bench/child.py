"""One measurement in a fresh process: ``python -m detector.bench.child KIND 'JSON args'``.

Each measurement runs alone in its own interpreter so that none inherits another's heap, caches or
imported modules, and its peak RSS is its own. The clock starts after the imports and stops when
the work is done (for the Kafka kinds, the clock starts before the client is made: joining the
group is part of consuming); the last line on stdout is a JSON object with ``records``,
``seconds``, ``max_rss_kib`` and ``cpu_s`` (user + system, every thread, imports included) and
what else the kind reports. Kinds:

- ``read``: the bare cost of the input: gzip and ``orjson.loads`` of every line, nothing else.
- ``replay``: ``detector.replay.replay`` of the files, anomaly events to a file.
- ``naive``: ``naive.run_naive`` of the files, events to a file.
- ``produce``: ``detector produce``'s ``produce_files`` (librdkafka) of a DNS and a mail file
  into their topics, timed from the start to the last record acknowledged.
- ``produce-kafka-python``: the same lines, keyed the same way, through kafka-python's producer
  with the settings ``detector produce`` used before it moved to librdkafka (the baseline).
- ``consume``: kafka-python's bare consumer over topics until ``expected`` records have come;
  timed from its start (the group join included) to the ``poll()`` that completes the count.
  It reports where each partition ends (the offset after the last record read).
- ``consume-confluent``: the same with confluent-kafka (librdkafka).
- ``worker``: the stream worker (``Worker``) over the topics, as ``detector run
  --exit-when-idle`` runs it; timed from its start (the group join included) until its group
  has committed the end offsets (``ends``, from a bare consume).
- ``format-read``: the bare read of a log file: ``LineSource.read_chunk()`` to its end, no more.
- ``format-feed``: the same read plus a format adapter's ``feed()`` of every chunk and its
  ``flush()``; records, skipped lines and rejections by reason are counted.
"""

from __future__ import annotations

import gzip
import resource
import sys
import time
from collections import Counter

import orjson


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_s() -> float:
    """User and system CPU time of this process, every thread (librdkafka's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_read(paths: list[str]) -> dict:
    started = time.perf_counter()
    count = 0
    loads, error = orjson.loads, orjson.JSONDecodeError
    for path in paths:
        with gzip.open(path, "rb") as lines:
            for line in lines:
                count += 1
                try:
                    loads(line)
                except error:
                    pass
    return {"records": count, "seconds": time.perf_counter() - started}


def replay_files(mail: str, dns: str, out: str) -> dict:
    from ..io.files import JsonLinesSink
    from ..replay import replay

    started = time.perf_counter()
    sink = JsonLinesSink(out)
    try:
        summary = replay([mail], [dns], sink)
    finally:
        sink.close()
    return {"records": summary.total_records, "seconds": time.perf_counter() - started,
            "anomalies": summary.anomalies}


def naive_files(mail: str, dns: str, out: str) -> dict:
    from .naive import run_naive

    started = time.perf_counter()
    events, count = run_naive([mail], [dns])
    with open(out, "wb") as sink:
        sink.write(b"".join(orjson.dumps(event) + b"\n" for event in events))
    return {"records": count, "seconds": time.perf_counter() - started}


def produce(bootstrap: str, topics: dict[str, str], paths: dict[str, str]) -> dict:
    from ..io.produce import produce_files
    from ..settings import KafkaSettings

    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    started = time.perf_counter()
    sent = sum(produce_files(kafka, topics[stream], [paths[stream]]) for stream in ("dns", "mail"))
    return {"records": sent, "seconds": time.perf_counter() - started, "cpu_s": cpu_s()}


def produce_kafka_python(bootstrap: str, topics: dict[str, str], paths: dict[str, str]) -> dict:
    """What ``detector produce`` did before librdkafka: one ``send()`` per line, the join key
    from the same code, the producer settings it had."""
    from kafka import KafkaProducer

    from ..io.files import LineSource
    from ..io.produce import join_key

    started = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             batch_size=1_048_576, max_block_ms=5_000,
                             max_request_size=4_000_000)
    sent = 0
    for stream in ("dns", "mail"):
        source = LineSource(paths[stream], "any")
        try:
            for lines, _ in source.chunks():
                for line in lines:
                    producer.send(topics[stream], key=join_key(line)[0], value=line)
                    sent += 1
        finally:
            source.close()
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return {"records": sent, "seconds": seconds, "cpu_s": cpu_s()}


def bare_consume(bootstrap: str, topics: list[str], expected: int, group: str,
                 timeout_s: float = 600.0) -> dict:
    """kafka-python as BROKER.md measured it: a group member, ``poll()`` batches, crc32c."""
    from kafka import KafkaConsumer

    started = time.perf_counter()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=5000)
    consumer.subscribe(topics)
    count, ends = 0, {}
    done = started
    deadline = time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                if records:
                    count += len(records)
                    ends[f"{tp.topic}/{tp.partition}"] = records[-1].offset + 1
            done = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    return {"records": count, "seconds": done - started if count else 0.0, "ends": ends,
            "cpu_s": cpu_s()}


def bare_consume_confluent(bootstrap: str, topics: list[str], expected: int, group: str,
                           timeout_s: float = 600.0) -> dict:
    """confluent-kafka the same way: a group member, ``consume()`` batches, every value read."""
    from confluent_kafka import Consumer

    started = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe(topics)
    count, ends = 0, {}
    done = started
    deadline = time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            for message in consumer.consume(5000, 0.5):
                offset = message.offset()
                if message.error() is None and message.value() is not None and offset is not None:
                    count += 1
                    ends[f"{message.topic()}/{message.partition()}"] = offset + 1
            done = time.perf_counter()
    finally:
        consumer.close()
    return {"records": count, "seconds": done - started if count else 0.0, "ends": ends,
            "cpu_s": cpu_s()}


def worker_run(settings_overrides: dict, ends: dict[str, int]) -> dict:
    """The worker as ``detector run --exit-when-idle`` runs it, timed from its start until a
    commit of its group reaches ``ends`` (the commit is synchronous: the broker has it)."""
    import logging

    from ..io.transport.group import GroupMember
    from ..logs import configure_logging
    from ..settings import load_settings
    from ..worker import Worker

    configure_logging("WARNING", "json")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    overrides = {tuple(key.split(".", 1)): value for key, value in settings_overrides.items()}
    settings = load_settings(environ={}, overrides=overrides)
    committed: dict[str, float] = {}
    commit = GroupMember.commit              # both transports commit through it

    def timed_commit(self, offsets, asynchronous=False):
        commit(self, offsets, asynchronous)
        reached = {f"{tp.topic}/{tp.partition}": offset for tp, offset in offsets.items()}
        if ("at" not in committed and not asynchronous
                and all(reached.get(source, -1) >= end for source, end in ends.items())):
            committed["at"] = time.perf_counter()

    GroupMember.commit = timed_commit  # type: ignore[method-assign]
    started = time.perf_counter()
    worker = Worker(settings)
    worker.run()
    return {"records": worker.counts["consumed"],
            "seconds": committed["at"] - started if "at" in committed else 0.0,
            "cpu_s": cpu_s()}


def read_log(path: str) -> dict:
    """Chunks of lines as ``LineSource`` reads them for a replay, nothing else."""
    from ..io.files import LineSource

    started = time.perf_counter()
    source = LineSource(path, "bench")
    count = 0
    try:
        for chunk, _ in source.chunks():
            count += len(chunk)
    finally:
        source.close()
    return {"lines": count, "seconds": time.perf_counter() - started}


def feed_log(path: str, name: str) -> dict:
    """The same read plus the adapter's ``feed()`` of every chunk and its ``flush()``."""
    from ..formats import ADAPTERS, convert_chunks, make_adapter
    from ..io.files import LineSource

    stream = ADAPTERS[name].stream
    adapter = make_adapter(name, stream)
    assert adapter is not None                 # (formats of their own only)
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    source = LineSource(path, stream)
    count = records = skipped = 0
    try:
        for out, numbers in convert_chunks(adapter, source.chunks()):
            count += len(numbers)
            records += len(out.records)
            skipped += out.skipped
            reasons.update(reason for _, reason in out.rejected)
    finally:
        source.close()
    return {"lines": count, "seconds": time.perf_counter() - started, "records": records,
            "skipped": skipped, "rejected": sum(reasons.values()), "reasons": dict(reasons)}


KINDS = {
    "read": lambda a: bare_read(a["paths"]),
    "replay": lambda a: replay_files(a["mail"], a["dns"], a["out"]),
    "naive": lambda a: naive_files(a["mail"], a["dns"], a["out"]),
    "produce": lambda a: produce(a["bootstrap"], a["topics"], a["paths"]),
    "produce-kafka-python": lambda a: produce_kafka_python(a["bootstrap"], a["topics"],
                                                           a["paths"]),
    "consume": lambda a: bare_consume(a["bootstrap"], a["topics"], a["expected"], a["group"]),
    "consume-confluent": lambda a: bare_consume_confluent(a["bootstrap"], a["topics"],
                                                          a["expected"], a["group"]),
    "worker": lambda a: worker_run(a["settings"], a["ends"]),
    "format-read": lambda a: read_log(a["path"]),
    "format-feed": lambda a: feed_log(a["path"], a["format"]),
}


def main(argv: list[str]) -> int:
    from .. import gcpolicy

    gcpolicy.tune()                 # as the ``detector`` command does for every command
    kind, args = argv[0], orjson.loads(argv[1])
    result = KINDS[kind](args)
    result["max_rss_kib"] = max_rss_kib()
    result.setdefault("cpu_s", cpu_s())
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

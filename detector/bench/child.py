"""One measurement in a fresh process: ``python -m detector.bench.child KIND 'JSON args'``.

Each measurement runs alone in its own interpreter so that none inherits another's heap, caches or
imported modules, and its peak RSS is its own. The clock starts after the imports and stops when
the work is done; the last line on stdout is a JSON object with ``records``, ``seconds`` and
``max_rss_kib`` (and what else the kind reports). Kinds:

- ``read``: the bare cost of the input: gzip and ``orjson.loads`` of every line, nothing else.
- ``replay``: ``detector.replay.replay`` of the files, anomaly events to a file.
- ``naive``: ``naive.run_naive`` of the files, events to a file.
- ``consume``: kafka-python's bare consumer over topics until ``expected`` records have come;
  timed from the first non-empty ``poll()`` to the one that completes the count.
- ``consume-confluent``: the same with confluent-kafka (librdkafka), for reference.
- ``worker``: the stream worker (``Worker``) over the topics; timed from its first fed batch to
  the batch that completes the count, the idle wait before it exits left out.
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


def bare_consume(bootstrap: str, topics: list[str], expected: int, group: str,
                 timeout_s: float = 300.0) -> dict:
    """kafka-python as BROKER.md measured it: a group member, ``poll()`` batches, crc32c."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=5000)
    consumer.subscribe(topics)
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            got = sum(len(records) for records in batch.values())
            if got:
                now = time.perf_counter()
                first = now if first is None else first
                count += got
                last = now
    finally:
        consumer.close(autocommit=False)
    return {"records": count, "seconds": (last - first) if first is not None else 0.0}


def bare_consume_confluent(bootstrap: str, topics: list[str], expected: int, group: str,
                           timeout_s: float = 300.0) -> dict:
    """confluent-kafka the same way: a group member, ``consume()`` batches, every value read."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe(topics)
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while count < expected and time.monotonic() < deadline:
            got = 0
            for message in consumer.consume(5000, 0.5):
                if message.error() is None and message.value() is not None:
                    got += 1
            if got:
                now = time.perf_counter()
                first = now if first is None else first
                count += got
                last = now
    finally:
        consumer.close()
    return {"records": count, "seconds": (last - first) if first is not None else 0.0}


def worker_run(settings_overrides: dict, expected: int) -> dict:
    """The worker as ``detector run --exit-when-idle`` runs it, its fed batches timed."""
    import logging

    from ..core import pipeline
    from ..logs import configure_logging
    from ..settings import load_settings
    from ..worker import Worker

    configure_logging("WARNING", "json")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    overrides = {tuple(key.split(".", 1)): value for key, value in settings_overrides.items()}
    settings = load_settings(environ={}, overrides=overrides)
    timing = {"first": None, "last": None, "fed": 0}
    feed = pipeline.Detector.feed

    def timed_feed(self, stream, lines, source=None, now=None):
        if timing["first"] is None:
            timing["first"] = time.perf_counter()
        result = feed(self, stream, lines, source=source, now=now)
        timing["fed"] += len(lines)
        if timing["fed"] <= expected:
            timing["last"] = time.perf_counter()
        return result

    pipeline.Detector.feed = timed_feed
    worker = Worker(settings)
    worker.run()
    seconds = (timing["last"] - timing["first"]) if timing["first"] is not None else 0.0
    return {"records": timing["fed"], "seconds": seconds, "consumed": worker.counts["consumed"]}


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
    "consume": lambda a: bare_consume(a["bootstrap"], a["topics"], a["expected"], a["group"]),
    "consume-confluent": lambda a: bare_consume_confluent(a["bootstrap"], a["topics"],
                                                          a["expected"], a["group"]),
    "worker": lambda a: worker_run(a["settings"], a["expected"]),
    "format-read": lambda a: read_log(a["path"]),
    "format-feed": lambda a: feed_log(a["path"], a["format"]),
}


def main(argv: list[str]) -> int:
    kind, args = argv[0], orjson.loads(argv[1])
    result = KINDS[kind](args)
    result["max_rss_kib"] = max_rss_kib()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``make demo``: the main job end to end on an embedded default, on a fresh machine.

It starts a local broker, generates the seed-incident scenario (an OTP sender's SPF lookups
SERVFAIL after a zone misconfiguration), produces its logs to the input topics, runs the stream
worker until it has consumed them, prints the anomaly events read back from ``otp-anomalies`` as a
table with the evaluation against the scenario's truth, stops everything it started, and writes
the HTML report of those events (the per-minute series from a replay of the same files, which
gives the same events) to ``demo-out/report.html``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

import orjson

from .evaluate import evaluate, format_table
from .io.broker import LocalBroker
from .io.files import JsonLinesSink
from .io.kafka import make_consumer
from .io.produce import produce_files
from .logs import configure_logging
from .replay import replay
from .report import events_table
from .settings import load_settings
from .synth import generate
from .worker import Worker

OUT = Path("demo-out")


def read_events(kafka, topic: str, idle_s: float = 2.0) -> list[dict]:
    from kafka import TopicPartition

    consumer = make_consumer(kafka, None)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        events, quiet = [], time.monotonic()
        while time.monotonic() - quiet < idle_s:
            for records in consumer.poll(timeout_ms=200).values():
                events.extend(orjson.loads(r.value) for r in records)
                quiet = time.monotonic()
        return events
    finally:
        consumer.close()


def main() -> int:
    say = lambda text: print(f"demo: {text}", file=sys.stderr, flush=True)  # noqa: E731
    configure_logging("WARNING", "text")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    OUT.mkdir(exist_ok=True)
    say("generating the seed-incident scenario (SPF lookups SERVFAIL for one OTP sender)")
    summary = generate("seed-incident", OUT, seed=7).to_dict()
    say(f"{summary['mail_records']} mail and {summary['dns_records']} DNS records, "
        f"{summary['start']} to {summary['end']}")
    with LocalBroker(log_path=OUT / "broker.log") as broker:
        say(f"local broker on {broker.bootstrap}")
        settings = load_settings(environ={}, overrides={
            ("kafka", "bootstrap_servers"): broker.bootstrap,
            ("kafka", "session_timeout_ms"): 6000, ("kafka", "heartbeat_interval_ms"): 1000,
            ("worker", "exit_when_idle_s"): 5.0, ("worker", "idle_timeout_s"): 3.0,
            ("worker", "log_format"): "text", ("worker", "log_level"): "WARNING"})
        started = time.monotonic()
        sent = produce_files(settings.kafka, settings.topics.dns, [str(OUT / "dns.jsonl.gz")])
        sent += produce_files(settings.kafka, settings.topics.mail, [str(OUT / "mail.jsonl.gz")])
        say(f"produced {sent} records in {time.monotonic() - started:.1f} s; running the worker")
        worker = Worker(settings)
        started = time.monotonic()
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        while runner.is_alive():
            runner.join(0.5)
        say(f"worker consumed {worker.counts['consumed']} records in "
            f"{time.monotonic() - started:.1f} s (including the idle wait before it exits)")
        events = read_events(settings.kafka, settings.topics.anomalies)
    print(events_table(events))
    truth = orjson.loads((OUT / "truth.json").read_bytes())
    print()
    print(format_table(evaluate(events, truth)))
    say(f"report: {write_report(events).resolve()}")
    return 0


def write_report(events: list[dict]) -> Path:
    """The HTML report of the worker's events over the series of a replay of the same files."""
    from .htmlreport import render

    series: list[dict] = []
    sink = JsonLinesSink(OUT / "replayed.jsonl")
    try:
        summary = replay([str(OUT / "mail.jsonl.gz")], [str(OUT / "dns.jsonl.gz")], sink,
                         series=series.extend)
    finally:
        sink.close()
    path = OUT / "report.html"
    path.write_text(render(events, series, summary))
    return path


if __name__ == "__main__":
    sys.exit(main())

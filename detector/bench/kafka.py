"""Through Kafka: loading logs, the worker against bare consumers of the same topics, and the
wall-clock latency from a spike's records being produced to its ``open`` event.

Everything runs against a ``LocalBroker`` started here, on fresh topics and group ids, with the
test settings of BROKER.md (``session_timeout_ms=6000, heartbeat_interval_ms=1000``). Input is the
``mixed`` scenario (72 h, 3.4 M records; ``--quick``: an hour of seed-incident), on days already
past (a live worker rejects records from the future): the replay section's own files when they
are, so that the worker can be set against that replay.

**Loading.** The files are produced once with ``detector produce``'s ``produce_files``
(librdkafka), timed in a fresh process: the "records produced at" rate. Then, alternating, the
first ``PRODUCE_SAMPLE_LINES`` of each file into scratch topics (deleted after), through
``produce_files`` and through kafka-python's producer as ``produce`` used it before (the baseline).

**Throughput.** Then, alternating, in fresh processes: confluent-kafka's and kafka-python's bare
consumers (group members reading until every record has come), a replay of the same files (no
Kafka), and the worker with each transport (``Worker`` as ``detector run --exit-when-idle`` runs
it). Each is timed from its start, the group join included, until it holds every record, or, for
the worker, until its group has committed the end offsets (the offsets after the last records,
as the bare consumers saw them): what a user waits for. The targets compare the default worker
with both bare consumers, and with bare confluent consume + replay: what the worker would take if
its own work around the core (transport, alignment, checkpoints, writes) cost nothing.

**Latency.** A worker runs as ``detector run`` on fresh topics. The history before the incident is
produced as fast as the broker takes it (the warm-up) and the worker reads it; from a minute
before the incident the records are produced at ``pace`` times real time, each stamped with the
wall time its send was acknowledged, while a reader waits for the ``open`` event. The latency
splits into event time the detector must see first, and the system's own overhead:

- the detection delay: ``detected_at`` minus the incident's start (failures must accumulate in a
  10 s step; ``detected_at`` includes the join's 5 s wait);
- the allowed lateness (10 s): the watermark passes ``detected_at`` only once both inputs carry
  records 10 s newer;
- overhead: from the acknowledged send of the record that let the watermark pass ``detected_at``
  to the ``open`` event read back, in two parts split at the event's Kafka timestamp (its
  CreateTime, stamped by the worker's producer at ``send``): the worker's part (fetch, poll, the
  core, a checkpoint if one fell there) and the way back (producer linger, broker, the reader's
  fetch). All of it is on one host, so one wall clock serves.

At ``pace`` the wall latency is (delay + lateness) / pace + overhead; in real time it is
delay + lateness + overhead, which is what is projected.
"""

from __future__ import annotations

import heapq
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson

from ..demo import read_events
from ..evaluate import evaluate, parse_time
from ..io.broker import LocalBroker, free_port
from ..io.clients import ensure_topics, make_producer
from ..io.produce import join_key
from ..settings import TRANSPORTS, KafkaSettings
from ..synth import SCENARIOS
from .data import Dataset, Spec, ensure_all, past_start
from .harness import Say, quiet, run_child

SCENARIO = "seed-incident"
THROUGHPUT_SCENARIO = "mixed"
QUICK_HOURS = 3.25                 # the incident starts 2.5 h in
QUICK_THROUGHPUT_HOURS = 1.0       # throughput needs no incident: the first hour, quiet
#: Lines of each file produced by both loaders for their comparison (the baseline is slow).
PRODUCE_SAMPLE_LINES = 100_000
#: The default worker against confluent-kafka's and kafka-python's bare consumers (issue 12).
TARGET_OVER_CONFLUENT = 0.25
TARGET_OVER_KAFKA_PYTHON = 0.8
#: The default worker against bare confluent consume + replay of the same records.
TARGET_OVER_CONSUME_AND_REPLAY = 1.3
QUICK_WARMUP_S = 45 * 60           # the model arms after 30 min and 1000 OTP attempts
LEAD_S = 60.0                      # paced production starts this long before the incident
LATENESS_S = 10.0                  # the core's allowed lateness (default configuration)
GROUP_SETTINGS = {"kafka.session_timeout_ms": 6000, "kafka.heartbeat_interval_ms": 1000}


def throughput_spec(quick: bool, replay_spec: Spec | None) -> Spec:
    """The throughput input: the replay section's ``mixed`` when it lies in the past."""
    if quick:
        return Spec(SCENARIO, 1, QUICK_THROUGHPUT_HOURS, past_start(SCENARIO))
    if replay_spec is not None and replay_spec.scenario == THROUGHPUT_SCENARIO:
        scenario = SCENARIOS[THROUGHPUT_SCENARIO]
        if scenario.start + timedelta(hours=replay_spec.hours or scenario.hours) <= datetime.now(
                timezone.utc):
            return replay_spec
    return Spec(THROUGHPUT_SCENARIO, 1, None, past_start(THROUGHPUT_SCENARIO))


def kafka_section(root: Path, work: Path, quick: bool, repeat: int, latency_runs: int,
                  pace: float, say: Say = quiet, replay_spec: Spec | None = None) -> dict:
    """``replay_spec``: the replay section's input, if it ran (the same files are used)."""
    start = past_start(SCENARIO)
    hours = QUICK_HOURS if quick else None
    specs = [Spec(SCENARIO, seed, hours, start) for seed in range(1, max(1, latency_runs) + 1)]
    through = throughput_spec(quick, replay_spec)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    datasets = ensure_all(root, [*specs, through], workers)
    with LocalBroker(log_path=work / "broker.log") as broker:
        throughput = throughput_through_kafka(broker, datasets[-1], repeat, work, say)
        latency = {transport: open_latency(broker, datasets[:latency_runs], pace, quick, work,
                                           say, transport)
                   for transport in TRANSPORTS}
    return {"scenario": through.scenario, "start": datasets[-1].truth()["start"],
            "hours": QUICK_THROUGHPUT_HOURS if quick else SCENARIOS[through.scenario].hours,
            "throughput": throughput, "latency_scenario": SCENARIO,
            "latency": latency["confluent"], "latency_kafka_python": latency["kafka-python"]}


def _kafka(broker: LocalBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap, session_timeout_ms=6000,
                         heartbeat_interval_ms=1000)


def throughput_through_kafka(broker: LocalBroker, dataset: Dataset, repeat: int, work: Path,
                             say: Say = quiet) -> dict:
    kafka = _kafka(broker)
    tag = uuid.uuid4().hex[:8]
    topics = {"mail": f"bench-mail-{tag}", "dns": f"bench-dns-{tag}"}
    create_topics(kafka, list(topics.values()))
    load = run_child("produce", {"bootstrap": broker.bootstrap, "topics": topics,
                                 "paths": {"dns": str(dataset.dns), "mail": str(dataset.mail)}})
    produced = load["records"]
    if produced != dataset.lines:
        raise RuntimeError(f"produced {produced} records, the files have {dataset.lines}")
    say(f"kafka: produced {produced:,} records in {load['seconds']:.1f} s "
        f"({produced / load['seconds']:,.0f} records/s)")
    loading = _loading(broker, dataset, repeat, work, say)
    truth = dataset.truth()
    kinds = {"bare_confluent": "consume-confluent", "bare": "consume"}
    runs: dict[str, list[dict]] = {name: [] for name in (*kinds, "replay", *TRANSPORTS)}
    checks = []
    ends = None
    for round_no in range(repeat):
        for name, kind in kinds.items():
            bare = run_child(kind, {"bootstrap": broker.bootstrap,
                                    "topics": list(topics.values()), "expected": produced,
                                    "group": f"bench-{kind}-{tag}-{round_no}"})
            _complete(bare, produced, f"the bare consumer ({kind})")
            if ends is not None and bare["ends"] != ends:
                raise RuntimeError(f"the bare consumers saw different ends: {ends}, {bare['ends']}")
            ends = bare["ends"]
            runs[name].append(bare)
        replay = run_child("replay", {"mail": str(dataset.mail), "dns": str(dataset.dns),
                                      "out": str(work / "kafka-replay.jsonl")})
        if not replay["records"] or replay["seconds"] <= 0:
            raise RuntimeError(f"the replay of {dataset.directory} read nothing")
        runs["replay"].append(replay)
        rates = []
        for transport in TRANSPORTS:
            run_tag = f"{tag}-{transport}-{round_no}"
            out = {"anomalies": f"bench-anom-{run_tag}", "dead_letter": f"bench-dlq-{run_tag}",
                   "state": f"bench-state-{run_tag}"}
            settings = {**GROUP_SETTINGS, "kafka.bootstrap_servers": broker.bootstrap,
                        "kafka.transport": transport,
                        "topics.mail": topics["mail"], "topics.dns": topics["dns"],
                        **{f"topics.{k}": v for k, v in out.items()},
                        "worker.group_id": f"bench-worker-{run_tag}",
                        "worker.start_from": "earliest", "worker.idle_timeout_s": 1.0,
                        "worker.exit_when_idle_s": 1.0}
            worker = run_child("worker", {"settings": settings, "ends": ends})
            _complete(worker, produced, f"the worker ({transport})")
            runs[transport].append(worker)
            report = evaluate(read_events(kafka, out["anomalies"], idle_s=1.0), truth)
            checks.append({"transport": transport, "detected": report["detected"],
                           "incidents": report["total_incidents"],
                           "false_alarms": report["false_alarm_count"]})
            rates.append(f"worker ({transport}) {worker['seconds']:.1f} s "
                         f"({report['detected']}/{report['total_incidents']} detected)")
        say(f"kafka round {round_no + 1}/{repeat}: bare consume, confluent-kafka "
            f"{runs['bare_confluent'][-1]['seconds']:.1f} s, kafka-python "
            f"{runs['bare'][-1]['seconds']:.1f} s; replay {replay['seconds']:.1f} s; "
            + ", ".join(rates))
    best = {name: min(r["seconds"] for r in found) for name, found in runs.items()}
    default = TRANSPORTS[0]
    result = {
        "records": produced, "repeat": repeat, "produce_rate": produced / load["seconds"],
        "loading": loading,
        "best_s": best,
        "cpu_s": {name: min(r["cpu_s"] for r in found) for name, found in runs.items()},
        "default_transport": default,
        "bare_consume_confluent_rate": produced / best["bare_confluent"],
        "bare_consume_rate": produced / best["bare"],
        "worker_rate": produced / best[default],
        "worker_over_confluent": best["bare_confluent"] / best[default],
        "worker_over_confluent_target": TARGET_OVER_CONFLUENT,
        "worker_over_bare": best["bare"] / best[default],
        "worker_over_bare_target": TARGET_OVER_KAFKA_PYTHON,
        "worker_kafka_python_rate": produced / best["kafka-python"],
        "worker_over_consume_and_replay": best[default] / (best["bare_confluent"]
                                                           + best["replay"]),
        "worker_over_consume_and_replay_target": TARGET_OVER_CONSUME_AND_REPLAY,
        "seconds": {name: [r["seconds"] for r in found] for name, found in runs.items()},
        "worker_max_rss_kib": max(r["max_rss_kib"] for r in runs[default]),
        "worker_kafka_python_max_rss_kib": max(r["max_rss_kib"] for r in runs["kafka-python"]),
        "worker_detection": checks}
    return result


def _loading(broker: LocalBroker, dataset: Dataset, repeat: int, work: Path,
             say: Say = quiet) -> dict:
    """``produce_files`` against kafka-python's producer on the first lines of each file,
    alternating, best of ``repeat``; each into scratch topics deleted after."""
    from ..io.files import LineSource

    paths = {}
    for stream in ("dns", "mail"):
        source = LineSource(str(getattr(dataset, stream)), stream)
        try:
            lines, _ = source.read_chunk(PRODUCE_SAMPLE_LINES)
        finally:
            source.close()
        paths[stream] = str(work / f"produce-sample-{stream}.jsonl")
        Path(paths[stream]).write_bytes(b"\n".join(lines) + b"\n")
    kafka = _kafka(broker)
    runs: dict[str, list[dict]] = {"produce": [], "produce-kafka-python": []}
    for round_no in range(repeat):
        for kind in runs:
            topics = {stream: f"bench-load-{stream}-{uuid.uuid4().hex[:8]}"
                      for stream in ("dns", "mail")}
            create_topics(kafka, list(topics.values()))
            try:
                result = run_child(kind, {"bootstrap": broker.bootstrap, "topics": topics,
                                          "paths": paths})
            finally:
                delete_topics(kafka, list(topics.values()))
            runs[kind].append(result)
            say(f"loading round {round_no + 1}/{repeat}: {kind} "
                f"{result['records'] / result['seconds']:,.0f} records/s")
    records = runs["produce"][0]["records"]
    best = {kind: min(r["seconds"] for r in found) for kind, found in runs.items()}
    return {"records": records, "lines_per_file": PRODUCE_SAMPLE_LINES,
            "rate": records / best["produce"],
            "kafka_python_rate": records / best["produce-kafka-python"],
            "speedup": best["produce-kafka-python"] / best["produce"],
            "seconds": {kind: [r["seconds"] for r in found] for kind, found in runs.items()}}


def create_topics(kafka: KafkaSettings, topics: list[str], timeout_s: float = 10.0) -> None:
    """Create ``topics`` and wait until each has a leader: a producer that meets a topic still
    being created waits for its metadata (about half a second here), which is not loading."""
    from confluent_kafka.admin import AdminClient

    ensure_topics(kafka, {topic: {} for topic in topics})
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = admin.list_topics(timeout=timeout_s).topics
        if all(topic in found and found[topic].error is None and found[topic].partitions
               and all(p.leader >= 0 for p in found[topic].partitions.values())
               for topic in topics):
            return
        time.sleep(0.1)


def delete_topics(kafka: KafkaSettings, topics: list[str]) -> None:
    from kafka import KafkaAdminClient

    from ..io.clients import client_config

    admin = KafkaAdminClient(**client_config(kafka))
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()


def _complete(result: dict, expected: int, who: str) -> None:
    if result["records"] < expected or result["seconds"] <= 0:
        raise RuntimeError(f"{who} saw {result['records']} of {expected} records")


# ------------------------------------------------------------------------------------ latency

class _Line:
    """One input line bound for a topic, with its event time and, once sent, its acked time."""

    __slots__ = ("ts", "stream", "key", "value", "acked")

    def __init__(self, ts: float, stream: str, key: bytes | None, value: bytes) -> None:
        self.ts, self.stream, self.key, self.value = ts, stream, key, value
        self.acked: float | None = None


def _split(dataset: Dataset, warm_from: float, cut: float, until: float) -> tuple[list, list]:
    """Each file's lines from ``warm_from``: those before ``cut`` (the warm-up, in file order)
    and those from ``cut`` to ``until``, both streams merged by event time (the paced part)."""
    from ..io.files import LineSource

    warmup, paced = [], []
    for stream, path in (("dns", dataset.dns), ("mail", dataset.mail)):
        source = LineSource(str(path), stream)
        phase, last_ts, lines = "skip", warm_from, []
        try:
            while phase != "done":
                chunk, _ = source.read_chunk()
                if not chunk:
                    break
                for value in chunk:
                    key, ts = join_key(value)
                    ts = last_ts if ts is None else ts
                    last_ts = ts
                    if phase == "skip" and ts >= warm_from:
                        phase = "warm"
                    if phase == "warm" and ts >= cut:
                        phase = "paced"
                    if phase == "paced" and ts > until:
                        phase = "done"
                        break
                    if phase == "warm":
                        warmup.append(_Line(ts, stream, key, value))
                    elif phase == "paced":
                        lines.append(_Line(ts, stream, key, value))
        finally:
            source.close()
        paced.append(lines)
    return warmup, list(heapq.merge(*paced, key=lambda line: line.ts))


def _consumed(metrics_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return -1
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("otp_detector_records_consumed_total{")))


class _OpenReader(threading.Thread):
    """Reads the anomalies topic: each ``open`` event with its arrival and creation times."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        # A short fetch wait: the instrument should add little to what it measures.
        self.consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      fetch_max_wait_ms=10)
        self.consumer.assign([TopicPartition(topic, 0)])
        self.opens: list[tuple[float, float, dict]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for records in self.consumer.poll(timeout_ms=20).values():
                    arrived = time.time()
                    for record in records:
                        event = orjson.loads(record.value)
                        if event.get("state") == "open":
                            self.opens.append((arrived, record.timestamp / 1000, event))
        finally:
            self.consumer.close()


def open_latency(broker: LocalBroker, datasets: list[Dataset], pace: float, quick: bool,
                 work: Path, say: Say = quiet, transport: str = "kafka-python") -> dict:
    runs = [_latency_run(broker, dataset, pace, quick, work, say, transport)
            for dataset in datasets]
    found = [run for run in runs if run.get("wall_s") is not None]
    summary = {"pace": pace, "transport": transport, "runs": runs, "n": len(found),
               "missed": len(runs) - len(found), "lateness_s": LATENESS_S}
    for name in ("wall_s", "detection_delay_s", "overhead_s", "worker_s", "read_back_s",
                 "projected_real_time_s"):
        values = [run[name] for run in found if run.get(name) is not None]
        summary[name] = ({"p50": float(np.percentile(values, 50)),
                          "p99": float(np.percentile(values, 99)), "max": max(values)}
                         if values else None)
    return summary


def _latency_run(broker: LocalBroker, dataset: Dataset, pace: float, quick: bool, work: Path,
                 say: Say, transport: str) -> dict:
    truth = dataset.truth()
    incident = truth["incidents"][0]
    onset = parse_time(incident["start"]).timestamp()
    scenario_start = parse_time(truth["start"]).timestamp()
    warm_from = onset - QUICK_WARMUP_S if quick else scenario_start
    cut = onset - LEAD_S
    warmup, paced = _split(dataset, warm_from, cut, onset + 15 * 60)

    kafka = _kafka(broker)
    tag = uuid.uuid4().hex[:8]
    topics = {"mail": f"lat-mail-{tag}", "dns": f"lat-dns-{tag}", "anomalies": f"lat-anom-{tag}",
              "dead_letter": f"lat-dlq-{tag}", "state": f"lat-state-{tag}"}
    ensure_topics(kafka, {topics[name]: {} for name in ("mail", "dns", "anomalies")})
    config = work / f"latency-{tag}.toml"
    config.write_text(
        "[kafka]\nsession_timeout_ms = 6000\nheartbeat_interval_ms = 1000\n"
        f'transport = "{transport}"\n[topics]\n'
        + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
        + f'[worker]\ngroup_id = "lat-{tag}"\nlog_format = "json"\n')
    metrics_port = free_port()
    log = open(work / f"latency-worker-{transport}-s{truth['seed']}.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "run", "--bootstrap-servers", broker.bootstrap,
         "--config", str(config), "--metrics-port", str(metrics_port)],
        stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader = _OpenReader(kafka, topics["anomalies"])
    producer = make_producer(kafka, batch_size=1_048_576, linger_ms=5)
    try:
        for line in warmup:
            producer.send(topics[line.stream], key=line.key, value=line.value)
        producer.flush()
        deadline = time.monotonic() + 300
        while _consumed(metrics_port) < len(warmup):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the latency worker did not read its warm-up "
                                   f"({work / log.name}); exit status {worker.poll()}")
            time.sleep(0.1)
        reader.start()
        began = time.monotonic()
        unacked: list[_Line] = []
        for line in paced:
            delay = began + (line.ts - cut) / pace - time.monotonic()
            if delay > 0:
                _flush(producer, unacked)
                if reader.opens:
                    break
                time.sleep(delay)
            producer.send(topics[line.stream], key=line.key, value=line.value)
            unacked.append(line)
        _flush(producer, unacked)
        deadline = time.monotonic() + 10
        while not reader.opens and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        reader.stopping.set()
        producer.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        if reader.is_alive():
            reader.join(5)
    row: dict = {"seed": truth["seed"], "warmup_records": len(warmup), "outcome": incident["outcome"]}
    opened = [(at, created, event) for at, created, event in reader.opens
              if event["key"]["outcome"] == incident["outcome"]]
    sent = [line for line in paced if line.acked is not None]
    first = next((line for line in sent if line.ts >= onset), None)
    if not opened or first is None:
        say(f"latency ({transport}): seed {truth['seed']}: no open event for "
            f"{incident['outcome']}")
        return row | {"wall_s": None}
    arrived, created, event = opened[0]
    detected_at = parse_time(event["detected_at"]).timestamp()
    enabling = []
    for stream in ("mail", "dns"):
        line = next((x for x in sent if x.stream == stream and x.ts >= detected_at + LATENESS_S), None)
        if line is not None:
            enabling.append(line.acked)
    enabled = max(enabling) if len(enabling) == 2 else None
    delay = detected_at - onset
    overhead = arrived - enabled if enabled is not None else None
    row |= {"detected_at": event["detected_at"], "wall_s": arrived - first.acked,
            "detection_delay_s": delay, "overhead_s": overhead,
            "worker_s": created - enabled if enabled is not None else None,
            "read_back_s": arrived - created,
            "projected_real_time_s": (delay + LATENESS_S + overhead) if overhead is not None else None}
    say(f"latency ({transport}): seed {truth['seed']}: open {arrived - first.acked:.2f} s after "
        f"the spike's "
        f"first record at {pace:g}x (detection delay {delay:.0f} s event time, overhead "
        f"{overhead if overhead is not None else float('nan'):.3f} s)")
    return row


def _flush(producer, unacked: list[_Line]) -> None:
    if unacked:
        producer.flush()
        acked = time.time()
        for line in unacked:
            line.acked = acked
        unacked.clear()

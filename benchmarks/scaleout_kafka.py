"""The scale-out through the real broker: K join workers and a judge, measured on 2 cores.

Issue 14, "Measured". On a machine of 2 cores (shared with the broker) a speed-up of several join
workers cannot show, so this measures what would scale, with the processes users run
(``detector run --role join|judge``) against the local broker (``LocalBroker``, tansu):

- each join worker's records consumed and CPU seconds (the ``"stopped"`` log line's ``consumed``
  and ``cpu_s``: the whole process, librdkafka's threads, start-up and idle polling included), as
  shares of the join workers' totals, with the tasks each was given (``"tasks assigned"`` /
  ``"tasks revoked"`` lines). The shares follow the keys: a task is a partition, a partition
  holds whole join keys (registrable domains), and one big sender is one key, so the split is as
  even as the keys' sizes allow; the records of each partition (by the producer's partitioner,
  murmur2 of the key) and the biggest keys are reported beside it;
- the judge's CPU seconds, gross and net of what a judge costs doing nothing (a second judge, on
  an empty steps topic of its own, runs over the same wall time alongside: start-up, group
  membership, idle polling), and its CPU per million input records as a fraction of the join
  workers' (the issue's target: < 2 %). The judge's work follows the steps of event time (and what
  a step holds: the tasks' partial counts, the distinct senders and resolvers of its slices), a
  join worker's the records, so the fraction depends on the input's rate; the generated
  scenarios run at a dozen records a second, a provider's logs at thousands. So
  also: the judge's CPU per 1000 steps and the input rate above which it is < 2 %, as
  ``benchmarks/scaleout_split.py`` (the same split in one process, without Kafka) reports them;
- the steps topic read back after the run with confluent-kafka: messages and value bytes, in
  total, per message and per step of event time per task;
- whether the events published equal those of ``detector replay`` of the same files, ids
  included (and the first difference if not). The generator's deliberately late lines (30-120 s
  late) are filtered out of the input first, as ``tests/test_stages.py`` does (its
  ``detector.synth.without_late_lines``, which both use): whether such a line is
  rejected depends on how far the other inputs of its watermark have been read when it comes, in a
  replay every file, in a task its other partition;
- for reference, the same input through one ``--role all`` worker (the single-process worker,
  fresh group): its wall time and CPU, and whether its events equal the replay's too;
- a sizing table from those figures: for input rates (``--rates``), the join workers (one core
  each, the busiest at ``--utilisation`` of it) and partitions needed, with keys that spread
  evenly and with this input's keys placed as the producer and ``io.task_assignor`` place them
  (a key is never split, so the biggest key caps the rate one worker can take).

Wall times are reported from start to exit and "active" (to the log line where the worker saw
its input idle, minus ``--exit-when-idle``: about when it read its last record); on 2 cores the
three join workers, the judge and the broker share the CPUs, so the scale-out's wall time says
nothing about a deployment's. What scales is the per-record CPU of a join worker (each on its
own core, it would read ``1 / (us per record)`` records a second) and the judge's per-step CPU.

Input: ``detector generate SCENARIO DIR --seed 1`` (``detector.bench.data.ensure``: the same
generator, cached under ``--out-dir``/data as ``detector bench`` caches it), the late lines
filtered out into plain JSON-lines files (cached too). Steps: ``detector replay`` of the files;
a local broker; the input topics with ``--partitions`` partitions and the steps topic with one;
``detector produce`` of both files (keyed by the join key); a worker TOML file (unique topics
and group); one judge and ``--workers`` join workers with ``--exit-when-idle 8``, and the idle
judge (stopped with SIGTERM once they are done), each with its own log; then the steps and
anomalies topics read back;
then the ``--role all`` worker. Logs and the results go to ``--out-dir``/scaleout-kafka-<tag>/.

    .venv/bin/python benchmarks/scaleout_kafka.py          # mixed, 72 h: ~3 min, 2 once cached
    .venv/bin/python benchmarks/scaleout_kafka.py --hours 12 --workers 2 --partitions 4
    .venv/bin/python benchmarks/scaleout_kafka.py --scenario seed-incident --json
"""

from __future__ import annotations

import argparse
import gzip
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from kafka.partitioner.default import murmur2

from detector.bench.data import Spec, ensure
from detector.core.config import DetectorConfig
from detector.io.broker import LocalBroker
from detector.io.produce import join_key
from detector.io.task_assignor import plan
from detector.synth import without_late_lines

DETECTOR = [sys.executable, "-m", "detector.cli"]
EXIT_WHEN_IDLE = 8
#: As the tests' Deployment: this broker holds JoinGroup for half the session timeout.
KAFKA = "session_timeout_ms = 6000\nheartbeat_interval_ms = 1000\ntransport = \"confluent\"\n"


def progress(message: str) -> None:
    print(f"[scaleout_kafka] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ input

def prepare_input(root: Path, scenario: str, seed: int, hours: float | None) -> dict:
    """The scenario's two logs without the late lines, as plain JSON lines (cached), and what
    was filtered out, the records of each join key."""
    dataset = ensure(root, Spec(scenario, seed, hours))
    directory = root / "data" / f"{dataset.directory.name}-nolate"
    info_path = directory / "info.json"
    if info_path.exists():
        return orjson.loads(info_path.read_bytes())
    directory.mkdir(parents=True, exist_ok=True)
    info: dict = {"scenario": scenario, "seed": seed, "hours": hours,
                  "generated": str(dataset.directory), "late_lines_removed": {}, "lines": {},
                  "keys": Counter(), "unkeyed": 0, "files": {}}
    for stream in ("mail", "dns"):
        lines = gzip.decompress(
            (dataset.directory / f"{stream}.jsonl.gz").read_bytes()).splitlines()
        kept = [line for line in without_late_lines(lines) if line.strip()]
        info["late_lines_removed"][stream] = len(lines) - len(kept)
        info["lines"][stream] = len(kept)
        for line in kept:
            key, _ = join_key(line)
            if key is None:
                info["unkeyed"] += 1
            else:
                info["keys"][key.decode(errors="replace")] += 1
        path = directory / f"{stream}.jsonl"
        path.write_bytes(b"\n".join(kept) + b"\n")
        info["files"][stream] = str(path)
    info["keys"] = dict(info["keys"].most_common())
    info_path.write_bytes(orjson.dumps(info))
    return info


def partition_of(key: str, partitions: int) -> int:
    """The partition ``detector produce`` writes a key to (librdkafka's murmur2_random)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


# ---------------------------------------------------------------------------------- sizing

#: Partition counts to choose from: each divides evenly among many worker counts, and the count
#: cannot grow later without moving keys (and tasks' state) between partitions.
PARTITION_CHOICES = (6, 12, 24, 48, 96, 192, 384, 768)


def busiest_share(hashes: list[tuple[int, int]], partitions: int, workers: int) -> float:
    """The busiest worker's share of the keyed records when ``workers`` share ``partitions``
    tasks as ``io.task_assignor.plan`` places them (by count, not by load), the keys
    (``(murmur2 hash, records)``) placed as the producer places them."""
    per_partition = [0] * partitions
    for hashed, records in hashes:
        per_partition[hashed % partitions] += records
    assignment = plan(partitions, {f"member-{i:05d}": set() for i in range(workers)})
    return max(sum(per_partition[t] for t in tasks) for tasks in assignment.values()) / max(
        sum(per_partition), 1)


def sizing(keys: dict[str, int], us_per_record: float, judge_s_per_step: float, step_s: int,
           rates: list[float], utilisation: float) -> dict:
    """Join workers (one core each) and partitions an input rate needs, from the measured CPU
    per record of a join worker, for the busiest worker at ``utilisation`` of its core: with
    keys that spread evenly, and with this input's keys (one key is never split: the worker
    holding the biggest one sets the limit). Partitions: the first of ``PARTITION_CHOICES`` at
    least twice the workers, so each worker holds several and hot partitions average out."""
    hashes = [(murmur2(key.encode()) & 0x7FFFFFFF, n) for key, n in keys.items()]
    total = sum(keys.values())
    top_share = max(keys.values()) / total if total else 0.0
    per_core = utilisation / (us_per_record * 1e-6)        # records/s one worker may take
    rows = []
    for rate in rates:
        even = max(1, math.ceil(rate / per_core))
        row: dict[str, Any] = {
            "rate": rate, "workers_even": even,
            "partitions_even": next((p for p in PARTITION_CHOICES if p >= 2 * even), None),
            "workers": None, "partitions": None, "busiest_share": None,
        }
        if rate * top_share <= per_core:
            for workers in range(even, 4 * even + 8):
                partitions = next((p for p in PARTITION_CHOICES if p >= 2 * workers), None)
                if partitions is None:
                    break
                share = busiest_share(hashes, partitions, workers)
                if rate * share <= per_core:
                    row.update(workers=workers, partitions=partitions,
                               busiest_share=round(share, 4))
                    break
        rows.append(row)
    return {"utilisation": utilisation, "us_per_record": round(us_per_record, 2),
            "records_per_s_per_worker": round(per_core),
            "biggest_key_share": round(top_share, 4),
            "max_rate_biggest_key": round(per_core / top_share) if top_share else None,
            "judge_core_share": float(f"{judge_s_per_step / step_s:.3g}"), "rows": rows}


# ------------------------------------------------------------------------------- processes

class Worker:
    """One ``detector run`` process with its own log file."""

    def __init__(self, name: str, config: Path, log: Path, bootstrap: str, *args: str,
                 profile: Path | None = None) -> None:
        self.name = name
        self.log_path = log
        self.started = time.time()
        self.exited: float | None = None
        command = DETECTOR if profile is None else [
            sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "detector.cli"]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [*command, "run", "--bootstrap-servers", bootstrap, "--config", str(config),
                 *args], stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and self.exited is None:
            self.exited = time.time()
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.poll()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def entries(self) -> list[dict]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def summary(self) -> dict:
        """From the log: the stopped line's counts, the tasks held, the wall times."""
        entries = self.entries()
        stopped = next((e for e in reversed(entries) if e.get("msg") == "stopped"), {})
        # The tasks held when the input went idle: those given up at shutdown (revoked as the
        # worker leaves the group) were worked on all the same.
        tasks: set[int] = set()
        history = []
        idle_at = None
        for entry in entries:
            msg = entry.get("msg", "")
            if idle_at is not None:
                break
            if msg == "tasks assigned":
                tasks |= set(entry.get("tasks", []))
                history.append(("+", entry.get("tasks"), entry.get("restored")))
            elif msg.startswith("tasks revoked") or msg.startswith("tasks lost"):
                tasks -= set(entry.get("tasks", []))
                history.append(("-", entry.get("tasks"), None))
            elif msg.startswith("input idle"):
                idle_at = _log_time(entry["ts"])
        wall = (self.exited or time.time()) - self.started
        return {
            "consumed": stopped.get("consumed"), "produced": stopped.get("produced"),
            "checkpoints": stopped.get("checkpoints"), "cpu_s": stopped.get("cpu_s"),
            "tasks": sorted(tasks), "task_history": history, "wall_s": round(wall, 2),
            "active_wall_s": (round(idle_at - EXIT_WHEN_IDLE - self.started, 2)
                              if idle_at is not None else None),
        }


def _log_time(text: str) -> float:
    """A log line's ``ts`` (RFC 3339, UTC, milliseconds) as a Unix time."""
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_all(workers: list[Worker], timeout_s: float) -> list[int | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(w.poll() is None for w in workers):
        time.sleep(0.1)
    return [w.poll() for w in workers]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0,
               timeout_s: float = 300.0) -> list[tuple[bytes | None, bytes]]:
    """Every message of a topic (all partitions) as (key, value), read with confluent-kafka until
    none came for ``idle_s`` (this broker's end offsets cannot be trusted: BROKER.md)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "logger": logging.getLogger("rdkafka")})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[tuple[bytes | None, bytes]] = []
        deadline, quiet = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet < idle_s:
            batch = consumer.consume(10_000, 0.2)
            for message in batch:
                value = message.value()
                if message.error() is None and value is not None:
                    messages.append((message.key(), value))
            if batch:
                quiet = time.monotonic()
        return messages
    finally:
        consumer.close()


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap,
                                "logger": logging.getLogger("rdkafka")}
    admin = AdminClient(settings)
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    for future in futures.values():
        future.result(timeout=10)


def write_config(path: Path, topics: dict[str, str], group: str, checkpoint_s: float) -> Path:
    path.write_text(
        "[kafka]\n" + KAFKA +
        "[topics]\n" + "".join(f'{k} = "{v}"\n' for k, v in topics.items()) +
        "[worker]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in {
            "group_id": group, "idle_timeout_s": 3, "checkpoint_interval_s": checkpoint_s,
            "log_format": "json"}.items()))
    return path


def first_difference(found: list[dict], expected: list[dict]) -> str | None:
    if found == expected:
        return None
    for i, (a, b) in enumerate(zip(found, expected)):
        if a != b:
            return (f"event {i}: published {orjson.dumps(a).decode()[:400]} / replay "
                    f"{orjson.dumps(b).decode()[:400]}")
    return (f"{len(found)} events published, {len(expected)} by the replay; the first extra: "
            f"{orjson.dumps((found if len(found) > len(expected) else expected)[min(len(found), len(expected))]).decode()[:400]}")


# -------------------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> dict:
    root = args.out_dir
    progress(f"input: {args.scenario}, seed {args.seed}, "
             f"{'its full length' if args.hours is None else f'{args.hours:g} h'}")
    info = prepare_input(root, args.scenario, args.seed, args.hours)
    mail, dns = Path(info["files"]["mail"]), Path(info["files"]["dns"])
    total_lines = info["lines"]["mail"] + info["lines"]["dns"]
    tag = uuid.uuid4().hex[:8]
    work = root / f"scaleout-kafka-{tag}"
    work.mkdir(parents=True)

    progress("detector replay of the same files (the reference events)")
    expected_path = work / "replay.jsonl"
    cpu0, wall0 = children_cpu_s(), time.monotonic()
    subprocess.run([*DETECTOR, "replay", "--mail", str(mail), "--dns", str(dns),
                    "--out", str(expected_path)], check=True, capture_output=True)
    replay = {"wall_s": round(time.monotonic() - wall0, 2),
              "cpu_s": round(children_cpu_s() - cpu0, 2)}
    expected = [orjson.loads(line) for line in expected_path.read_bytes().splitlines()]

    result: dict = {
        "scenario": args.scenario, "seed": args.seed, "hours": args.hours,
        "input_records": total_lines, "late_lines_removed": info["late_lines_removed"],
        "partitions": args.partitions, "join_workers": args.workers,
        "checkpoint_interval_s": args.checkpoint_interval, "work_dir": str(work),
        "replay": {**replay, "events": len(expected)},
    }
    with LocalBroker(log_path=work / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        broker_pid = broker.process.pid           # type: ignore[union-attr]

        def topics_of(prefix: str) -> dict[str, str]:
            return {"mail": f"mail-{tag}", "dns": f"dns-{tag}",
                    **{k: f"{prefix}-{k}-{tag}"
                       for k in ("anomalies", "dead_letter", "state", "steps")}}

        scale_topics, idle_topics, all_topics = (topics_of(p) for p in ("scale", "idle", "all"))
        create_topics(bootstrap, {scale_topics["mail"]: args.partitions,
                                  scale_topics["dns"]: args.partitions,
                                  scale_topics["steps"]: 1, idle_topics["steps"]: 1})
        scale_config = write_config(work / "scale.toml", scale_topics, f"scale-{tag}",
                                    args.checkpoint_interval)
        idle_config = write_config(work / "idle-judge.toml", idle_topics, f"idle-{tag}",
                                   args.checkpoint_interval)
        all_config = write_config(work / "all.toml", all_topics, f"all-{tag}",
                                  args.checkpoint_interval)

        progress(f"detector produce: {total_lines:,} records into {args.partitions} "
                 "partitions per input")
        wall0 = time.monotonic()
        for stream, path in (("dns", dns), ("mail", mail)):
            subprocess.run([*DETECTOR, "produce", "--bootstrap-servers", bootstrap, "--config",
                            str(scale_config), "--topic", scale_topics[stream], str(path)],
                           check=True, capture_output=True)
        result["produce_wall_s"] = round(time.monotonic() - wall0, 2)

        progress(f"a judge, an idle judge and {args.workers} join workers")
        idle = ("--exit-when-idle", str(EXIT_WHEN_IDLE))
        broker_cpu0 = process_cpu_s(broker_pid)
        wall0 = time.time()
        idle_judge = Worker("idle judge", idle_config, work / "idle-judge.log", bootstrap,
                            "--role", "judge")
        judge = Worker("judge", scale_config, work / "judge.log", bootstrap,
                       "--role", "judge", *idle, profile=args.profile_judge)
        joins = [Worker(f"join{i}", scale_config, work / f"join{i}.log", bootstrap,
                        "--role", "join", *idle) for i in range(args.workers)]
        everyone = [*joins, judge]
        try:
            codes = wait_all(everyone, args.timeout)
            idle_judge.stop()
        finally:
            for worker in [*everyone, idle_judge]:
                worker.kill()
        scale_wall = max(w.exited or time.time() for w in everyone) - wall0
        broker_cpu_scale = process_cpu_s(broker_pid) - broker_cpu0
        if codes != [0] * len(everyone):
            tails = "\n".join(f"--- {w.name} (exit {c})\n" + w.log_path.read_text()[-3000:]
                              for w, c in zip(everyone, codes))
            raise SystemExit(f"a worker did not exit 0: {codes}\n{tails}")

        progress("reading the steps and anomalies topics back")
        steps = read_topic(bootstrap, scale_topics["steps"])
        found = [orjson.loads(v) for _, v in read_topic(bootstrap, scale_topics["anomalies"])]

        progress("the same input through one --role all worker")
        broker_cpu0 = process_cpu_s(broker_pid)
        single = Worker("all", all_config, work / "all.log", bootstrap, "--role", "all", *idle)
        try:
            code = wait_all([single], args.timeout)[0]
        finally:
            single.kill()
        broker_cpu_all = process_cpu_s(broker_pid) - broker_cpu0
        if code != 0:
            raise SystemExit(f"the --role all worker exited {code}:\n"
                             + single.log_path.read_text()[-3000:])
        found_all = [orjson.loads(v) for _, v in read_topic(bootstrap, all_topics["anomalies"])]

    # ----------------------------------------------------------------------------- figures
    config = DetectorConfig()
    step_s = config.model.step_s
    part_records = [0] * args.partitions
    for key, count in info["keys"].items():
        part_records[partition_of(key, args.partitions)] += count
    keyed = sum(part_records)
    top_keys = list(info["keys"].items())[:5]

    workers = [w.summary() for w in joins]
    join_records = sum(w["consumed"] for w in workers)
    join_cpu = sum(w["cpu_s"] for w in workers)
    for w in workers:
        w["share_records"] = round(w["consumed"] / join_records, 4)
        w["share_cpu"] = round(w["cpu_s"] / join_cpu, 4)
        w["us_per_record"] = round(w["cpu_s"] / max(w["consumed"], 1) * 1e6, 2)
        w["keyed_records_of_its_tasks"] = sum(part_records[p] for p in w["tasks"])
    judge_summary = judge.summary()
    idle_summary = idle_judge.summary()
    # What a detector process costs doing nothing over the run's wall time (start-up, group
    # membership, idle polls): the idle judge's CPU, taken off every process's for "net".
    fixed_cpu = idle_summary["cpu_s"]
    judge_net = judge_summary["cpu_s"] - fixed_cpu
    for w in workers:
        w["net_us_per_record"] = round((w["cpu_s"] - fixed_cpu) / max(w["consumed"], 1) * 1e6, 2)

    messages, value_bytes = len(steps), sum(len(v) for _, v in steps)
    per_task_msgs: Counter[str] = Counter()
    first_step, last_step = math.inf, -math.inf
    for _, value in steps:
        data = orjson.loads(value)
        per_task_msgs[data["task"]] += 1
        if data.get("first_ts") is not None:
            first_step = min(first_step, int(data["first_ts"] // step_s))
        if data.get("through") is not None:
            last_step = max(last_step, data["through"])
        for index in data.get("steps", {}):
            first_step, last_step = min(first_step, int(index)), max(last_step, int(index))
    steps_of_event_time = int(last_step - first_step + 1) if messages else 0
    tasks = len(per_task_msgs) or args.partitions

    us_per_record = join_cpu / join_records * 1e6
    net_us_per_record = (join_cpu - fixed_cpu * len(workers)) / join_records * 1e6
    judge_per_step_s = judge_net / max(steps_of_event_time, 1)
    span_s = steps_of_event_time * step_s
    result.update({
        "keyed_records_per_partition": part_records,
        "share_per_partition": [round(r / keyed, 4) for r in part_records],
        "unkeyed_records": info["unkeyed"],
        "top_keys": [{"key": k, "records": n, "share": round(n / keyed, 4)} for k, n in top_keys],
        "workers": workers,
        "join_records_consumed": join_records,
        "join_cpu_s": round(join_cpu, 2),
        "join_us_per_record": round(us_per_record, 2),
        "join_net_us_per_record": round(net_us_per_record, 2),
        "judge": {
            **judge_summary,
            "idle_judge_cpu_s": idle_summary["cpu_s"],
            "idle_judge_wall_s": idle_summary["wall_s"],
            "net_cpu_s": round(judge_net, 3),
            "cpu_s_per_million_records": round(judge_summary["cpu_s"] / total_lines * 1e6, 3),
            "net_cpu_s_per_million_records": round(judge_net / total_lines * 1e6, 3),
            "share_of_join_cpu": round(judge_summary["cpu_s"] / join_cpu, 4),
            "net_share_of_join_cpu": round(judge_net / join_cpu, 4),
            "net_ms_per_1000_steps": round(judge_per_step_s * 1000 * 1000, 1),
            "input_rate_for_2pct": round(judge_per_step_s / (0.02 * step_s * net_us_per_record
                                                             * 1e-6)),
        },
        "input_rate_records_per_s": round(total_lines / max(span_s, 1), 1),
        "steps_topic": {
            "messages": messages, "value_bytes": value_bytes,
            "bytes_per_message": round(value_bytes / max(messages, 1), 1),
            "steps_of_event_time": steps_of_event_time, "tasks": tasks,
            "bytes_per_step_per_task": round(value_bytes / max(steps_of_event_time * tasks, 1), 1),
            "messages_per_task": dict(sorted(per_task_msgs.items())),
            "join_workers_produced": sum(w["produced"] or 0 for w in workers),
            "judge_consumed": judge_summary["consumed"],
        },
        "scaleout_wall_s": round(scale_wall, 2),
        "broker_cpu_s_scaleout": round(broker_cpu_scale, 2),
        "events": len(found),
        "events_equal_replay": found == expected,
        "first_difference": first_difference(found, expected),
        "single_worker": {**single.summary(), "broker_cpu_s": round(broker_cpu_all, 2),
                          "events_equal_replay": found_all == expected},
    })
    result["sizing"] = sizing(info["keys"], us_per_record, judge_per_step_s, step_s,
                              args.rates, args.utilisation)
    single_summary = result["single_worker"]
    single_summary["us_per_record"] = round(
        single_summary["cpu_s"] / max(single_summary["consumed"], 1) * 1e6, 2)
    single_summary["net_us_per_record"] = round(
        (single_summary["cpu_s"] - fixed_cpu) / max(single_summary["consumed"], 1) * 1e6, 2)
    (work / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


# ---------------------------------------------------------------------------------- output

def table(r: dict) -> str:
    hours = "full length" if r["hours"] is None else f"{r['hours']:g} h"
    late = r["late_lines_removed"]
    lines = [
        f"scale-out through the broker: {r['scenario']} (seed {r['seed']}, {hours}), "
        f"{r['input_records']:,} records (late lines removed first: mail {late['mail']:,}, "
        f"dns {late['dns']:,}), {r['partitions']} partitions, {r['join_workers']} join workers, "
        f"checkpoints every {r['checkpoint_interval_s']:g} s",
        f"input rate (event time): {r['input_rate_records_per_s']:,} records/s",
        "",
        f"{'worker':<8} {'tasks':<14} {'records':>10} {'share':>7} {'cpu s':>8} {'share':>7} "
        f"{'us/rec':>7} {'wall s':>7} {'active s':>8}",
    ]
    for i, w in enumerate(r["workers"]):
        lines.append(
            f"{'join' + str(i):<8} {','.join(map(str, w['tasks'])):<14} {w['consumed']:>10,} "
            f"{w['share_records']:>7.1%} {w['cpu_s']:>8.2f} {w['share_cpu']:>7.1%} "
            f"{w['us_per_record']:>7.2f} {w['wall_s']:>7.1f} {w['active_wall_s'] or 0:>8.1f}")
    j = r["judge"]
    lines.append(f"{'judge':<8} {'(steps)':<14} {j['consumed']:>10,} {'':>7} {j['cpu_s']:>8.2f} "
                 f"{'':>7} {'':>7} {j['wall_s']:>7.1f} {j['active_wall_s'] or 0:>8.1f}")
    s = r["single_worker"]
    lines.append(f"{'all':<8} {'(one process)':<14} {s['consumed']:>10,} {'':>7} "
                 f"{s['cpu_s']:>8.2f} {'':>7} {s['us_per_record']:>7.2f} {s['wall_s']:>7.1f} "
                 f"{s['active_wall_s'] or 0:>8.1f}")
    moved = [f"join{i}: {w['task_history']}" for i, w in enumerate(r["workers"])
             if len(w["task_history"]) > 1]
    lines += [
        "",
        "task history (tasks moved during the run): " + ("; ".join(moved) if moved else "none"),
        "keyed records per partition: " + ", ".join(
            f"{p}: {n:,} ({n / sum(r['keyed_records_per_partition']):.1%})"
            for p, n in enumerate(r["keyed_records_per_partition"]))
        + f"; unkeyed {r['unkeyed_records']:,}",
        "biggest keys: " + ", ".join(f"{k['key']} {k['share']:.1%}" for k in r["top_keys"]),
        "",
        f"join workers: {r['join_records_consumed']:,} records, {r['join_cpu_s']:.2f} cpu s, "
        f"{r['join_us_per_record']:.2f} us/record (the whole process), "
        f"{r['join_net_us_per_record']:.2f} net of the idle process's cost; one --role all "
        f"worker: {s['us_per_record']:.2f}, net {s['net_us_per_record']:.2f}",
        f"judge: {j['cpu_s']:.2f} cpu s gross, idle judge over the same wall "
        f"{j['idle_judge_cpu_s']:.2f} s, net {j['net_cpu_s']:.2f} s",
        f"judge per million input records: {j['cpu_s_per_million_records']:.3f} s gross, "
        f"{j['net_cpu_s_per_million_records']:.3f} s net; of the join workers' cpu: "
        f"{j['share_of_join_cpu']:.2%} gross, {j['net_share_of_join_cpu']:.2%} net (target < 2 %)",
        f"judge per 1000 steps of event time ({r['steps_topic']['tasks']} tasks): "
        f"{j['net_ms_per_1000_steps']:.1f} ms net; net, < 2 % of the join workers' above "
        f"{j['input_rate_for_2pct']:,} records/s",
    ]
    st = r["steps_topic"]
    lines += [
        f"steps topic: {st['messages']:,} messages, {st['value_bytes']:,} value bytes, "
        f"{st['bytes_per_message']:.0f} bytes/message, {st['steps_of_event_time']:,} steps x "
        f"{st['tasks']} tasks: {st['bytes_per_step_per_task']:.0f} bytes per step per task "
        f"(join workers produced {st['join_workers_produced']:,} steps messages and dead "
        f"letters, the judge consumed {st['judge_consumed']:,})",
        "",
        f"scale-out wall {r['scaleout_wall_s']:.1f} s (broker cpu {r['broker_cpu_s_scaleout']:.1f}"
        f" s); one --role all worker: wall {s['wall_s']:.1f} s, active {s['active_wall_s']} s, "
        f"cpu {s['cpu_s']:.2f} s (broker {s['broker_cpu_s']:.1f} s); replay: wall "
        f"{r['replay']['wall_s']:.1f} s, cpu {r['replay']['cpu_s']:.1f} s",
        f"events equal the replay's ({r['replay']['events']}): scale-out "
        f"{'yes' if r['events_equal_replay'] else 'no'}, --role all "
        f"{'yes' if s['events_equal_replay'] else 'no'}",
    ]
    if r["first_difference"]:
        lines.append(f"first difference: {r['first_difference']}")
    z = r["sizing"]
    lines += [
        "",
        f"sizing: a join worker per core at {z['utilisation']:.0%} of it, "
        f"{z['us_per_record']:.2f} us/record (measured above, the whole process): "
        f"{z['records_per_s_per_worker']:,} records/s each; the judge "
        f"{z['judge_core_share']:.2g} of a core at the measured cost per step; this input's "
        f"biggest key is {z['biggest_key_share']:.1%} of it, so one worker limits it to "
        f"{z['max_rate_biggest_key']:,} records/s",
        f"{'records/s':>10} {'even keys: workers':>19} {'partitions':>10} "
        f"{'these keys: workers':>20} {'partitions':>10} {'busiest':>8}",
    ]
    for row in z["rows"]:
        these = (f"{row['workers']:>20} {row['partitions']:>10} {row['busiest_share']:>8.1%}"
                 if row["workers"] else f"{'not reachable':>20} {'':>10} {'':>8}")
        lines.append(f"{row['rate']:>10,.0f} {row['workers_even']:>19} "
                     f"{row['partitions_even'] or '-':>10} {these}")
    lines.append(f"logs and result.json: {r['work_dir']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=float, default=None,
                        help="length of the input (default: the scenario's own; mixed 72 h)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=3, help="join workers")
    parser.add_argument("--checkpoint-interval", type=float, default=5.0,
                        help="worker.checkpoint_interval_s (default: the worker's default, 5)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds the workers may take")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    parser.add_argument("--profile-judge", type=Path, metavar="PATH",
                        help="run the judge under cProfile, its stats to PATH (where its time "
                        "goes; the profiler inflates its CPU: not for the figures)")
    parser.add_argument("--rates", type=float, nargs="+",
                        default=[10_000, 50_000, 200_000, 1_000_000],
                        help="input rates (records/s) of the sizing table")
    parser.add_argument("--utilisation", type=float, default=0.7,
                        help="the busiest join worker's share of its core, in the sizing table")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    print(orjson.dumps(result).decode() if args.json else table(result))
    return 0 if result["events_equal_replay"] else 1


if __name__ == "__main__":
    sys.exit(main())

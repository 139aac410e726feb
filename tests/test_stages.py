"""Scaled out against a real broker: join workers and a judge (``detector run --role``).

Input is produced with ``detector produce`` (keyed by the join key) into topics of six partitions
each; join workers share the partitions as tasks and publish their closed steps, one judge merges
them. The anomaly events must equal a single-process replay of the same files, ids included.
"""

from __future__ import annotations

import gzip
import re
import signal
import time

import orjson
import pytest
from kafka.partitioner.default import murmur2

from conftest import Deployment, replay_events
from detector.core.records import Rejected, parse_ts
from detector.io.produce import join_key
from detector.synth import generate, without_late_lines

pytestmark = pytest.mark.kafka

PARTITIONS = 6


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Three and a half hours of a provider-wide SERVFAIL incident (many senders: every task
    gets traffic), as plain JSON-lines files, and what a replay makes of them."""
    directory = tmp_path_factory.mktemp("scenario")
    generate("seed-incident", directory, seed=5, hours=3.5)
    files = {}
    for stream in ("mail", "dns"):
        path = directory / f"{stream}.jsonl"
        lines = gzip.decompress((directory / f"{stream}.jsonl.gz").read_bytes()).splitlines()
        path.write_bytes(b"\n".join(without_late_lines(lines)) + b"\n")
        files[stream] = path
    expected = replay_events(files["mail"], files["dns"], directory)
    assert [e["state"] for e in expected][:1] == ["open"], "the scenario must page"
    return files, expected


@pytest.fixture
def deployment(broker, tmp_path):
    return Deployment(broker, tmp_path, partitions=PARTITIONS)


def _wait_all(processes, timeout: float) -> list[int | None]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
        except Exception:                     # noqa: BLE001 - reported by the assertion
            codes.append(None)
    return codes


def test_three_join_workers_and_a_judge_on_six_partitions_equal_a_replay(deployment, scenario):
    files, expected = scenario
    deployment.produce_files("dns", files["dns"])
    deployment.produce_files("mail", files["mail"])
    judge = deployment.start_worker("--role", "judge", "--exit-when-idle", "8",
                                    log_name="judge.log")
    joins = [deployment.start_worker("--role", "join", "--exit-when-idle", "8",
                                     log_name=f"join{i}.log") for i in range(3)]
    codes = _wait_all([*joins, judge], timeout=300)
    assert codes == [0, 0, 0, 0], "\n".join(deployment.log(n)[-3000:] for n in
                                            ("join0.log", "join1.log", "join2.log", "judge.log"))
    found = deployment.anomalies()
    assert found == expected
    # Every join worker had tasks: the partitions were shared.
    for i in range(3):
        assert '"tasks assigned"' in deployment.log(f"join{i}.log")



def _partition(line: bytes) -> int | None:
    """The partition ``detector produce`` writes a line to (kafka-python's murmur2 of its key)."""
    key, _ = join_key(line)
    return None if key is None else (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def _ts(line: bytes) -> float | None:
    try:
        value = orjson.loads(line).get("ts")
        return parse_ts(value) if isinstance(value, str) else float(value)
    except (orjson.JSONDecodeError, AttributeError, Rejected, TypeError, ValueError):
        return None


def test_a_task_whose_producer_stopped_does_not_stall_the_judge(deployment, scenario, tmp_path):
    """The input of one task stops at 08:30 while the others go on past the incident (10:00):
    once that task's partitions are idle the judge goes on without it, and pages the incident
    while every worker is still running; the page is the one a replay of the same files gives."""
    files, _ = scenario
    quiet = (_partition(b'{"qname": "bank1.example"}') + 1) % PARTITIONS  # not the incident's
    stop_quiet, stop_all = parse_ts("2026-11-27T08:30:00Z"), parse_ts("2026-11-27T10:10:00Z")
    cut = {}
    for stream, path in files.items():
        kept = []
        for line in path.read_bytes().splitlines():
            ts = _ts(line)
            if ts is not None and (ts > stop_all or (ts > stop_quiet and _partition(line) == quiet)):
                continue
            kept.append(line)
        cut[stream] = tmp_path / f"{stream}.jsonl"
        cut[stream].write_bytes(b"\n".join(kept) + b"\n")
    expected = [e for e in replay_events(cut["mail"], cut["dns"], tmp_path)
                if e["state"] == "open"]
    assert expected
    deployment.produce_files("dns", cut["dns"])
    deployment.produce_files("mail", cut["mail"])
    workers = [deployment.start_worker("--role", "judge", log_name="judge.log"),
               *(deployment.start_worker("--role", "join", log_name=f"join{i}.log")
                 for i in range(2))]
    deadline, opened = time.monotonic() + 120, []
    while time.monotonic() < deadline and not opened:
        opened = [e for e in deployment.anomalies() if e["state"] == "open"]
    assert all(w.poll() is None for w in workers), "every worker is still running"
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    assert _wait_all(workers, timeout=60) == [0, 0, 0]
    assert opened[:1] == expected[:1], deployment.log("judge.log")[-3000:]


@pytest.mark.faults
def test_kill_9_a_join_worker_a_fourth_joins_kill_9_the_judge_and_the_events_stand(
        broker, tmp_path_factory, tmp_path):
    """Mid-stream, one of three join workers is killed (-9): its tasks move to the others and
    are restored there from their own checkpoints; a fourth worker joins and takes tasks over;
    then the active judge is killed and its standby takes over from its checkpoint. The events
    published (an event may be published twice, never changed) are the replay's."""
    directory = tmp_path_factory.mktemp("long")
    generate("seed-incident", directory, seed=6)          # six hours: long enough to kill in
    files = {}
    for stream in ("mail", "dns"):
        files[stream] = directory / f"{stream}.jsonl"
        files[stream].write_bytes(b"\n".join(without_late_lines(gzip.decompress(
            (directory / f"{stream}.jsonl.gz").read_bytes()).splitlines())) + b"\n")
    expected = replay_events(files["mail"], files["dns"], directory)
    assert any(e["state"] == "resolved" for e in expected)
    deployment = Deployment(broker, tmp_path, partitions=PARTITIONS,
                            worker={"checkpoint_interval_s": 0.5})
    deployment.produce_files("dns", files["dns"])
    deployment.produce_files("mail", files["mail"])
    idle = ("--exit-when-idle", "10")
    # The join workers read the six hours in a few seconds: they stay until the fourth has
    # joined and taken its tasks over (the takeover under test), not leave mid-rebalance.
    join_idle = ("--exit-when-idle", "30")
    judge = deployment.start_worker("--role", "judge", *idle, log_name="judge.log")
    deployment.wait_for_log('"judging"', "judge.log")
    standby = deployment.start_worker("--role", "judge", *idle, log_name="standby.log")
    joins = [deployment.start_worker("--role", "join", *join_idle, log_name=f"join{i}.log")
             for i in range(3)]
    deployment.wait_for_log('"tasks assigned"', "join0.log")
    time.sleep(2)
    joins[0].kill()
    joins[0].wait()
    time.sleep(4)
    joins.append(deployment.start_worker("--role", "join", *join_idle, log_name="join3.log"))
    deployment.wait_for_log('"tasks assigned"', "join3.log", timeout=90)
    judge.kill()
    judge.wait()
    codes = _wait_all([*joins[1:], standby], timeout=400)
    logs = "\n".join(deployment.log(n)[-2000:] for n in
                     ("join1.log", "join2.log", "join3.log", "standby.log"))
    assert codes == [0, 0, 0, 0], logs
    assert '"judging"' in deployment.log("standby.log")        # the standby took over
    found = deployment.anomalies()
    distinct = {orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in found}
    assert distinct == {orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in expected}, logs
    # The killed worker's tasks were restored elsewhere from their checkpoints (not re-read
    # from the start), and the standby judge from the judge's.
    assert re.search(r'"tasks assigned".*"restored":\[\d', "".join(
        deployment.log(f"join{i}.log") for i in (1, 2, 3)))
    assert '"judging","tasks":6,"restored":true' in deployment.log("standby.log")


def test_a_join_worker_refuses_input_topics_of_different_partition_counts(broker, tmp_path):
    """Tasks need partition p of both topics to hold the same keys: a join worker started on
    topics of 6 and 4 partitions says so in one line and exits 2, reading nothing."""
    from confluent_kafka.admin import AdminClient, NewTopic

    other = f"dns4-{tmp_path.name[-8:]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(other, 4, 1)]).values():
        future.result(timeout=10)
    deployment = Deployment(broker, tmp_path, partitions=PARTITIONS, formats={"dns": other})
    code = deployment.start_worker("--role", "join", log_name="join.log").wait(timeout=60)
    assert code == 2
    errors = [orjson.loads(line) for line in deployment.log("join.log").splitlines()
              if '"level":"ERROR"' in line]
    assert len(errors) == 1 and "6 partitions" in errors[0]["error"] \
        and "4 partitions" in errors[0]["error"]
    assert not deployment.read("steps", idle_s=1.0)


def test_the_judge_dead_letters_what_is_not_a_steps_message_and_goes_on(deployment):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": deployment.broker.bootstrap})
    for junk in (b"{oops", b'{"task": 3}', b"[1, 2]"):
        producer.produce(deployment.topics["steps"], junk)
    producer.flush(10)
    judge = deployment.start_worker("--role", "judge", log_name="judge.log")
    deadline, dead = time.monotonic() + 60, []
    while time.monotonic() < deadline and len(dead) < 3:
        dead = deployment.read("dead_letter", idle_s=1.0)
    assert judge.poll() is None
    judge.send_signal(signal.SIGTERM)
    assert judge.wait(timeout=60) == 0
    assert sorted(m.value() for m in dead) == sorted([b"{oops", b'{"task": 3}', b"[1, 2]"])
    assert {dict(m.headers())["reason"] for m in dead} == {b"bad_steps_message"}

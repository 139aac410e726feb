"""Scaled out against a real broker: join workers and a judge (``detector run --role``).

Input is produced with ``detector produce`` (keyed by the join key) into topics of six partitions
each; join workers share the partitions as tasks and publish their closed steps, one judge merges
them. The anomaly events must equal a single-process replay of the same files, ids included.
"""

from __future__ import annotations

import gzip
import time

import orjson
import pytest

from conftest import Deployment, replay_events
from detector.core.records import Rejected, parse_ts
from detector.synth import generate

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
        path.write_bytes(b"\n".join(_without_late_lines(lines)) + b"\n")
        files[stream] = path
    expected = replay_events(files["mail"], files["dns"], directory)
    assert [e["state"] for e in expected][:1] == ["open"], "the scenario must page"
    return files, expected


def _without_late_lines(lines: list[bytes]) -> list[bytes]:
    """The lines of a log without those the generator sends late on purpose (30 s or more after
    their time). Whether such a record is rejected depends on how far the *other* inputs of its
    watermark have been read when it comes: in a replay every file's, in a join task its other
    partition's, which may lead by up to ``max_lead_s`` (README, "Scaling"). Every other record's
    fate is the same however the input is split."""
    kept, newest = [], float("-inf")
    for line in lines:
        try:
            ts = orjson.loads(line).get("ts")
        except (orjson.JSONDecodeError, AttributeError):
            kept.append(line)                  # junk stays: it is rejected wherever it goes
            continue
        if isinstance(ts, str):
            try:
                ts = parse_ts(ts)
            except Rejected:                   # a bad time is junk: kept
                kept.append(line)
                continue
        if isinstance(ts, (int, float)) and ts < newest - 30:
            continue
        if isinstance(ts, (int, float)):
            newest = max(newest, ts)
        kept.append(line)
    return kept


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


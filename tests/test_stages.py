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
        path.write_bytes(gzip.decompress((directory / f"{stream}.jsonl.gz").read_bytes()))
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

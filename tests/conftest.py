"""Shared fixtures: a real local Kafka broker process for the integration tests, and helpers to
run the worker as users do (the ``detector`` command) and to read topics with confluent-kafka, a
client this project did not write."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from detector.io.broker import LocalBroker  # noqa: E402

DETECTOR = [sys.executable, "-m", "detector.cli"]
#: Every process a test started; killed after the test, whatever its outcome.
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as running:
        yield running


class Deployment:
    """Unique topics and group for one test, its config file, and ways to drive the worker."""

    def __init__(self, broker: LocalBroker, workdir: Path, partitions: int = 1,
                 kafka: str = "session_timeout_ms = 6000\nheartbeat_interval_ms = 1000\n",
                 worker: dict | None = None, formats: dict | None = None,
                 tables: str = "", transport: str = "confluent") -> None:
        self.broker = broker
        self.transport = transport
        kafka += f'transport = "{transport}"\n'
        self.workdir = workdir
        tag = uuid.uuid4().hex[:8]
        self.topics = {"mail": f"mail-{tag}", "dns": f"dns-{tag}", "anomalies": f"anom-{tag}",
                       "dead_letter": f"dlq-{tag}", "state": f"state-{tag}",
                       "steps": f"steps-{tag}"}
        self.group = f"group-{tag}"
        self.config = workdir / "worker.toml"
        self.config.write_text(
            # Short group timeouts: this broker holds JoinGroup for half the session timeout.
            "[kafka]\n" + kafka +
            "[topics]\n" + "".join(f'{k} = "{v}"\n' for k, v in {**self.topics,
                                                                **(formats or {})}.items()) +
            "[worker]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in {
                "group_id": self.group, "idle_timeout_s": 3, "checkpoint_interval_s": 1,
                "log_format": "json", **(worker or {})}.items()) + tables)
        self.create_input_topics(partitions)

    def create_input_topics(self, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": self.broker.bootstrap})
        futures = admin.create_topics([NewTopic(self.topics[t], partitions, 1)
                                       for t in ("mail", "dns")])
        for future in futures.values():
            future.result(timeout=10)

    def produce_files(self, stream: str, path: Path) -> None:
        subprocess.run([*DETECTOR, "produce", "--bootstrap-servers", self.broker.bootstrap,
                        "--topic", self.topics[stream], str(path)], check=True,
                       capture_output=True, timeout=120)

    def produce_paced(self, stream: str, path: Path, speed: float) -> subprocess.Popen:
        """Produce a file at ``speed`` times its event time, in the background."""
        process = subprocess.Popen([*DETECTOR, "produce", "--bootstrap-servers",
                                    self.broker.bootstrap, "--topic", self.topics[stream],
                                    "--speed", str(speed), str(path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(process)
        return process

    def start_worker(self, *args: str, log_name: str = "worker.log") -> subprocess.Popen:
        log = open(self.workdir / log_name, "ab")
        process = subprocess.Popen(
            [*DETECTOR, "run", "--bootstrap-servers", self.broker.bootstrap,
             "--config", str(self.config), *args],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        STARTED.append(process)
        return process

    def run_worker_until_idle(self, *args: str, idle_s: float = 6, timeout: float = 180) -> int:
        return self.start_worker("--exit-when-idle", str(idle_s), *args).wait(timeout=timeout)

    def read(self, topic_key: str, idle_s: float = 3.0, timeout: float = 60.0) -> list:
        """Every message of a topic (all partitions), read with confluent-kafka until idle."""
        return read_topic(self.broker.bootstrap, self.topics[topic_key], idle_s, timeout)

    def log(self, name: str = "worker.log") -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, text: str, name: str = "worker.log", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            if time.monotonic() > deadline or "detector: error" in self.log(name):
                raise AssertionError(f"{text!r} not in {name} after {timeout} s:\n{self.log(name)[-3000:]}")
            time.sleep(0.1)

    def anomalies(self) -> list[dict]:
        return [orjson.loads(m.value()) for m in self.read("anomalies")]


def write_logs(traffic, directory: Path, extra_mail=()) -> tuple[Path, Path]:
    mail, dns = directory / "mail.jsonl", directory / "dns.jsonl"
    mail.write_bytes(b"\n".join([*traffic.mail, *extra_mail]) + b"\n")
    dns.write_bytes(b"\n".join(traffic.dns) + b"\n")
    return mail, dns


def replay_events(mail: Path, dns: Path, directory: Path) -> list[dict]:
    """What ``detector replay`` makes of the same files: the reference for the worker."""
    out = directory / "replay.jsonl"
    subprocess.run([*DETECTOR, "replay", "--mail", str(mail), "--dns", str(dns), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def read_topic(bootstrap: str, topic: str, idle_s: float = 3.0, timeout: float = 60.0) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"logger": logging.getLogger("rdkafka"), "bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, deadline, quiet = [], time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet < idle_s:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            messages.append(message)
            quiet = time.monotonic()
        return messages
    finally:
        consumer.close()


@pytest.fixture
def deployment(broker, tmp_path):
    return Deployment(broker, tmp_path)

"""Real receivers for the integration tests: Debian's Alertmanager and Prometheus as processes on
loopback, a recording HTTP server, and the notifier run as users run it (``detector notify``).

A component that cannot be found fails the test with one line naming the install step; nothing
here skips.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import orjson
import pytest

from conftest import DETECTOR, STARTED
from detector.io.broker import free_port

INSTALL = "run `make integrations-deps` (Debian packages prometheus, prometheus-alertmanager)"


def binary(*names: str, install: str = INSTALL) -> str:
    """The first of ``names`` on PATH, else the test fails with one line saying how to get it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} not found: {install}", pytrace=False)


def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return orjson.loads(response.read())


def wait_for(what: str, condition: Callable[[], object], timeout: float = 20.0,
             interval: float = 0.1, log: Callable[[], str] | None = None):
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OSError:                  # a server not listening yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{log()[-3000:]}" if log else ""
            raise AssertionError(f"{what}: not within {timeout} s{detail}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- HTTP recorder

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answered: bool = False
    at: float = field(default_factory=time.monotonic)


class Recorder:
    """A small real HTTP(S) server on 127.0.0.1 that records every POST and answers what
    ``respond(request) -> (status, body, delay_s)`` says (200 by default)."""

    def __init__(self, respond=None, certfile: Path | None = None, keyfile: Path | None = None):
        self.received: list[Received] = []
        self.respond = respond or (lambda request: (200, b"ok", 0.0))
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with recorder.lock:
                    recorder.received.append(request)
                status, answer, delay = recorder.respond(request)
                request.status = status
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return                   # the client was killed mid-request
                request.answered = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "Recorder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [orjson.loads(r.body) for r in self.received]


# ----------------------------------------------------------------------------- Alertmanager

class Alertmanager:
    """Debian's Alertmanager on a free loopback port, clustering off, its own storage; it
    notifies ``notify_url`` (a Recorder) of every alert, one group per alert, within a second."""

    def __init__(self, workdir: Path, notify_url: str) -> None:
        self.binary = binary("prometheus-alertmanager", "alertmanager")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(
            "route:\n  receiver: recorder\n  group_by: ['...']\n  group_wait: 0s\n"
            "  group_interval: 1s\n  repeat_interval: 1h\n"
            f"receivers:\n  - name: recorder\n    webhook_configs:\n"
            f"      - url: '{notify_url}'\n        send_resolved: true\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Alertmanager":
        log = open(self.workdir / "alertmanager.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--storage.path={self.workdir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=warn"], stdout=log, stderr=log)
        STARTED.append(self.process)
        wait_for("alertmanager ready", lambda: urllib.request.urlopen(
            self.url + "/-/ready", timeout=1).status == 200, timeout=15, log=self.log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def log(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alerts(self) -> list[dict]:
        """The active alerts (GET /api/v2/alerts: resolved ones are not listed)."""
        return [a for a in http_json(self.url + "/api/v2/alerts")
                if a["labels"].get("alertname") == "OTPDeliveryFailures"]


# ----------------------------------------------------------------------------- Prometheus

class Prometheus:
    """Debian's Prometheus on a free loopback port with ``config`` (YAML text), its own TSDB."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.binary = binary("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Prometheus":
        log = open(self.workdir / "prometheus.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=log)
        STARTED.append(self.process)
        wait_for("prometheus ready", lambda: urllib.request.urlopen(
            self.url + "/-/ready", timeout=1).status == 200, timeout=20, log=self.log)
        return self

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        answer = http_json(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        assert answer["status"] == "success", answer
        return answer["data"]


# ----------------------------------------------------------------------------- the notifier

class NotifierDeployment:
    """A fresh anomalies topic, dead-letter topic and group on the suite's broker, a config file
    with short timeouts, and ways to produce events and run ``detector notify``."""

    def __init__(self, broker, workdir: Path, partitions: int = 1, notify: dict | None = None):
        self.broker = broker
        self.workdir = workdir
        tag = uuid.uuid4().hex[:8]
        self.topic, self.dead_letter, self.group = f"anom-{tag}", f"ndlq-{tag}", f"notifier-{tag}"
        settings = {"group_id": self.group, "dead_letter_topic": self.dead_letter,
                    "resend_interval_s": 2, "retry_backoff_min_s": 0.1,
                    "retry_backoff_max_s": 0.5, "request_timeout_s": 2,
                    "commit_interval_s": 0.2, **(notify or {})}
        self.config = workdir / "notify.toml"
        self.config.write_text(
            # Short group timeouts (tests only): this broker holds a join for half of them.
            "[kafka]\nsession_timeout_ms = 2000\nheartbeat_interval_ms = 500\n"
            f'[topics]\nanomalies = "{self.topic}"\n'
            "[notify]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n"
                                   for k, v in settings.items()))
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic(self.topic, partitions, 1)]).values():
            future.result(timeout=10)

    def produce(self, lines: list[bytes]) -> None:
        """Events as the detector writes them: value = the JSON, key = the id."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.broker.bootstrap, "linger.ms": 5})
        for line in lines:
            try:
                key = orjson.loads(line)["id"].encode()
            except (orjson.JSONDecodeError, KeyError, TypeError):
                key = None
            producer.produce(self.topic, line, key=key)
        assert producer.flush(10) == 0

    def start(self, *receivers: str, log_name: str = "notify.log", metrics_port: int | None = None,
              env: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / log_name, "ab")
        args = [*DETECTOR, "notify", "--bootstrap-servers", self.broker.bootstrap,
                "--config", str(self.config), *receivers]
        if metrics_port:
            args += ["--metrics-port", str(metrics_port)]
        process = subprocess.Popen(args, stdout=log, stderr=log,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        STARTED.append(process)
        return process

    def log(self, name: str = "notify.log") -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition (read with confluent-kafka; 0: none)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False})
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            found = consumer.committed([TopicPartition(self.topic, p) for p in partitions],
                                       timeout=10)
            return {tp.partition: max(tp.offset, 0) for tp in found}
        finally:
            consumer.close()


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample from a /metrics endpoint, or None when absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


# ----------------------------------------------------------------------------- real events

@pytest.fixture(scope="session")
def seed_events(tmp_path_factory) -> list[bytes]:
    """The anomaly events ``detector replay`` makes of the seed incident (seed 1, 4 h): one
    SERVFAIL anomaly, open, eight updates (warning, then critical), resolved."""
    directory = tmp_path_factory.mktemp("seed-incident")
    subprocess.run([*DETECTOR, "generate", "seed-incident", str(directory), "--seed", "1",
                    "--hours", "4"], check=True, capture_output=True, timeout=120)
    out = directory / "anomalies.jsonl"
    subprocess.run([*DETECTOR, "replay", "--mail", str(directory / "mail.jsonl.gz"),
                    "--dns", str(directory / "dns.jsonl.gz"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    lines = out.read_bytes().splitlines()
    states = [orjson.loads(line)["state"] for line in lines]
    assert states[0] == "open" and states[-1] == "resolved" and "update" in states, states
    return lines


def as_anomaly(line: bytes, anomaly_id: str, key: dict, **fields) -> bytes:
    """The same event for another anomaly (a slice key, say): its id and key replaced."""
    return orjson.dumps({**orjson.loads(line), "id": anomaly_id, "key": key, **fields})

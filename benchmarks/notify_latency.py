"""``detector notify`` against a real Alertmanager: throughput (events/s) and open-to-visible latency.

Starts a local broker (tansu), Debian's Alertmanager on loopback (``make integrations-deps``) and
``detector notify`` with its defaults (group timeouts shortened to 6000/1000 ms, so the group join
is not what is measured), then:

1. Throughput: with the notifier caught up, N events are produced at once and timed from the
   first produce to the notifier's ``otp_notifier_sent_total`` reaching N (every event accepted
   by Alertmanager). Two streams: every event a new anomaly (every event is an alert of its own),
   and anomalies with a realistic life (open, 8 updates, resolved: the seed incident's events),
   where the lane coalesces what a batch holds of one anomaly into its newest state.
2. Latency: one ``open`` event of a new anomaly produced, then ``GET /api/v2/alerts`` every 5 ms
   until the alert is listed; R repetitions, p50/p99/max.

    python benchmarks/notify_latency.py [--events 5000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from detector.io.broker import LocalBroker, free_port

EVENT = {"id": "", "state": "open", "key": {"outcome": "SERVFAIL"},
         "detected_at": "2026-11-27T10:00:25Z", "since": "2026-11-27T09:59:20Z",
         "window": {"start": "2026-11-27T09:59:20Z", "end": "2026-11-27T10:00:20Z"},
         "observed": {"attempts": 192, "failures": 8, "failure_rate": 0.041667},
         "expected": {"attempts": 119.15, "failures": 0.054, "failure_rate": 0.000279},
         "score": 13.15, "severity": "warning", "rule": "short",
         "reason": "SERVFAIL OTP failures 8/192 (4.2%) vs expected 0.03% over 60 s; p = 1e-13.2",
         "evidence": {"sender_domains": [{"value": "auth.bank1.example", "count": 8}],
                      "resolvers": [{"value": "res-a.dns.example", "count": 5}],
                      "status_codes": [{"value": "4.4.3", "count": 8}]}}
LIFE = ["open"] + ["update"] * 8 + ["resolved"]


def sent_total(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('otp_notifier_sent_total{receiver="alertmanager"}'):
            return float(line.split()[-1])
    return 0.0


def active_ids(am_url: str) -> set[str]:
    alerts = orjson.loads(urllib.request.urlopen(am_url + "/api/v2/alerts", timeout=5).read())
    return {a["annotations"].get("anomaly_id") for a in alerts}


def wait(what: str, condition, timeout: float, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise SystemExit(f"notify_latency: {what} did not happen within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not alertmanager:
        raise SystemExit("notify_latency: prometheus-alertmanager not found: make integrations-deps")
    from confluent_kafka import Producer

    work = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    processes = []
    with LocalBroker(log_path=work / "broker.log") as broker:
        try:
            am_port = free_port()
            (work / "am.yml").write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
            processes.append(subprocess.Popen(
                [alertmanager, f"--config.file={work / 'am.yml'}",
                 f"--storage.path={work / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                 "--cluster.listen-address=", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            am_url = f"http://127.0.0.1:{am_port}"
            wait("alertmanager ready", lambda: urllib.request.urlopen(
                am_url + "/-/ready", timeout=1).status == 200, 20, 0.05)
            topic = f"anomalies-{uuid.uuid4().hex[:8]}"
            (work / "notify.toml").write_text(
                "[kafka]\nsession_timeout_ms = 6000\nheartbeat_interval_ms = 1000\n"
                f'[topics]\nanomalies = "{topic}"\n'
                f'[notify]\ngroup_id = "bench-{topic}"\n')
            metrics_port = free_port()
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            producer.produce(topic, orjson.dumps({**EVENT, "id": "warm-up"}), key=b"warm-up")
            producer.flush(10)
            log = open(work / "notify.log", "ab")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "detector.cli", "notify", "--bootstrap-servers",
                 broker.bootstrap, "--alertmanager-url", am_url, "--config",
                 str(work / "notify.toml"), "--metrics-port", str(metrics_port)],
                stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
            wait("the notifier caught up", lambda: "warm-up" in active_ids(am_url), 60, 0.05)
            sent = sent_total(metrics_port)

            print(f"detector notify -> Alertmanager {subprocess.run([alertmanager, '--version'], capture_output=True, text=True).stdout.split(chr(10))[0]}")
            print(f"  throughput: {args.events} events produced at once, until every one is "
                  "accepted (otp_notifier_sent_total)")
            # The baseline, as the benchmarks' rules want one measured alongside: the same number
            # of alerts POSTed straight to Alertmanager by one process, 500 a request (no Kafka).
            from detector.notify.alerts import OpenAnomalies, render
            from detector.notify.receivers import post

            book = OpenAnomalies()
            alerts = [render(intent, time.time(), 240) for n in range(args.events)
                      for intent in book.apply({**EVENT, "id": f"direct-{n}"}, b"", 0)]
            started = time.perf_counter()
            for i in range(0, len(alerts), 500):
                answer = post(am_url + "/api/v2/alerts", orjson.dumps(alerts[i:i + 500]), {}, 30,
                              None)
                assert answer.verdict == "accepted", answer
            direct = len(alerts) / (time.perf_counter() - started)
            print(f"    {'baseline: the alerts POSTed straight, 500 a request':<52} "
                  f"{direct:>9,.0f} alerts/s")
            for name, events in (
                    ("every event a new anomaly", [
                        orjson.dumps({**EVENT, "id": f"new-{n}"}) for n in range(args.events)]),
                    ("anomalies of 10 events (open, 8 updates, resolved)", [
                        orjson.dumps({**EVENT, "id": f"life-{n // 10}", "state": LIFE[n % 10],
                                      "severity": "critical" if n % 10 >= 2 else "warning"})
                        for n in range(args.events)])):
                started = time.perf_counter()
                for line in events:
                    producer.produce(topic, line, key=orjson.loads(line)["id"].encode())
                producer.flush(30)
                target = sent + len(events)
                wait(f"{name}: all sent", lambda: sent_total(metrics_port) >= target, 300, 0.01)
                elapsed = time.perf_counter() - started
                sent = target
                rate = len(events) / elapsed
                print(f"    {name:<52} {rate:>9,.0f} events/s  {rate / direct:5.2f}x baseline  "
                      f"({elapsed:.2f} s)")

            delays = []
            for n in range(args.repeats):
                anomaly_id = f"latency-{n}-{uuid.uuid4().hex[:6]}"
                started = time.perf_counter()
                producer.produce(topic, orjson.dumps({**EVENT, "id": anomaly_id}),
                                 key=anomaly_id.encode())
                producer.flush(10)
                wait("the alert visible", lambda: anomaly_id in active_ids(am_url), 30)
                delays.append(time.perf_counter() - started)
                time.sleep(0.2)
            delays.sort()
            p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
            print(f"  latency: an open event produced to its alert listed by GET /api/v2/alerts "
                  f"({args.repeats} runs)")
            print(f"    p50 {statistics.median(delays) * 1000:.1f} ms   p99 {p99 * 1000:.1f} ms   "
                  f"max {delays[-1] * 1000:.1f} ms")
            del producer              # before the broker goes: no disconnect chatter
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

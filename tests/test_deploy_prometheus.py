"""What ``deploy/`` ships, held to real tools: ``promtool`` checks the rules and runs their unit
tests (and each alert's tests fail when its rule is broken), and Debian's Prometheus scrapes a
running worker (``detector run --metrics-port``), loads the rules, evaluates them without error,
and answers every query of the Grafana dashboard."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from detector.io.broker import free_port
from integrations import Prometheus, binary, wait_for
from traffic import Traffic

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "otp-detector.rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "otp-detector.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "otp-detector-dashboard.json"


def alert_names(text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", text, re.M)


def promtool(*args: str, cwd: Path = DEPLOY / "prometheus") -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_promtool_accepts_the_rules_and_the_example_config_and_the_rules_tests_pass():
    for args in (("check", "rules", RULES.name), ("check", "config", "prometheus.yml"),
                 ("test", "rules", RULES_TEST.name)):
        done = promtool(*args)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    done = subprocess.run([binary("amtool"), "check-config",
                           str(DEPLOY / "alertmanager" / "alertmanager.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def with_expr(rules: str, alert: str, expr: str) -> str:
    """``rules`` with the expression of ``alert`` replaced (one line or a ``|`` block)."""
    lines = rules.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- alert: {alert}")
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("expr:"))
    indent = len(lines[at]) - len(lines[at].lstrip())
    end = at + 1
    if lines[at].rstrip().endswith("|"):
        while end < len(lines) and (len(lines[end]) - len(lines[end].lstrip()) > indent
                                    or not lines[end].strip()):
            end += 1
    return "\n".join([*lines[:at], " " * indent + f"expr: {expr}", *lines[end:]]) + "\n"


@pytest.mark.parametrize("broken", ["vector(0) > 1", "vector(1)"], ids=["never", "always"])
def test_each_alerts_rules_test_fails_when_its_rule_never_or_always_fires(tmp_path, broken):
    rules = RULES.read_text()
    names = alert_names(rules)
    assert len(names) == 10 and all(f"alertname: {n}" in RULES_TEST.read_text() for n in names)
    (tmp_path / RULES_TEST.name).write_text(RULES_TEST.read_text())
    for name in names:
        (tmp_path / RULES.name).write_text(with_expr(rules, name, broken))
        assert promtool("check", "rules", RULES.name, cwd=tmp_path).returncode == 0
        done = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
        report = done.stdout + done.stderr
        assert done.returncode != 0 and f"alertname: {name}," in report, (name, report)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    assert queries
    return [q.replace("$__rate_interval", "1m").replace("$notifier_job", "otp-notifier")
            .replace("$job", "otp-detector") for q in queries]


def exported_names(worker_metrics: str) -> set[str]:
    """Every sample name the worker exposes, and every one the notifier's registry has."""
    from prometheus_client import generate_latest

    from detector.notify.metrics import NotifierMetrics

    notifier = NotifierMetrics()
    notifier.add_receiver("alertmanager")
    notifier.failed.labels(receiver="alertmanager", status="400")
    notifier.invalid.labels(reason="not_json")
    text = worker_metrics + generate_latest(notifier.registry).decode()
    return set(re.findall(r"^(?:# TYPE )?([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M))


@pytest.mark.kafka
def test_prometheus_scrapes_a_worker_loads_the_rules_and_answers_the_dashboard(deployment,
                                                                             tmp_path):
    traffic = Traffic().minutes(0, 5, 30, fail_every=20).sorted()
    (tmp_path / "mail.jsonl").write_bytes(b"\n".join([*traffic.mail, b"{oops", b"[1]"]) + b"\n")
    (tmp_path / "dns.jsonl").write_bytes(b"\n".join(traffic.dns) + b"\n")
    deployment.produce_files("dns", tmp_path / "dns.jsonl")
    deployment.produce_files("mail", tmp_path / "mail.jsonl")
    port = free_port()
    deployment.start_worker("--metrics-port", str(port))
    prometheus = Prometheus(tmp_path, (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: otp-detector\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n")).start()

    wait_for("the worker scraped as up", lambda: [
        t for t in prometheus.api("targets")["activeTargets"] if t["health"] == "up"],
        timeout=30, log=deployment.log)
    groups = wait_for("the rules evaluated", lambda: (g := prometheus.api("rules")["groups"]) and all(
        r["health"] == "ok" for group in g for r in group["rules"]) and g, timeout=20,
        log=prometheus.log)
    assert {g["name"] for g in groups} == {"otp-detector", "otp-notifier"}
    assert sorted(r["name"] for g in groups for r in g["rules"]) == sorted(alert_names(RULES.read_text()))

    def value(query: str) -> float | None:
        result = prometheus.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    checkpoint = wait_for("a checkpoint time scraped", lambda: value(
        'max(otp_detector_last_checkpoint_timestamp_seconds{job="otp-detector"}) > 0'),
        timeout=30, log=deployment.log)
    assert time.time() - 60 < checkpoint <= time.time() + 1
    wait_for("records consumed", lambda: value(
        'sum(otp_detector_records_consumed_total{job="otp-detector"}) > 0'), timeout=15)
    # A healthy worker: every rule of the detector's group evaluates to nothing (once the first
    # scrape is in, OTPDetectorAbsent, pending before it, goes back to inactive).
    wait_for("the detector's rules inactive", lambda: all(
        rule["state"] == "inactive" for group in prometheus.api("rules")["groups"]
        if group["name"] == "otp-detector" for rule in group["rules"]), timeout=15)

    # Every query of the dashboard is valid PromQL over names the worker and notifier export,
    # and the detector's panels show data.
    import urllib.request

    exported = exported_names(urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    for query in dashboard_queries() + [RULES.read_text()]:
        for name in re.findall(r"\b(otp_(?:detector|notifier)_[a-z_]+)", query):
            assert name in exported, f"{name} is not exported"
    # The panels the brief asks for show this worker's data (the rest may be empty: no
    # anomaly, no write failure, no notifier here).
    required = ("records_consumed_total", "records_rejected_total", "otp_attempts_total",
                "open_anomalies", "consumer_lag_records", "last_checkpoint_timestamp_seconds")
    for query in dashboard_queries():
        prometheus.api("query", query=query)                 # valid PromQL, whatever the data
        if any(f"otp_detector_{name}" in query for name in required):
            wait_for(f"data for {query}", lambda: prometheus.api("query", query=query)["result"],
                     timeout=10)

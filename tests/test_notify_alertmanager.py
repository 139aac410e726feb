"""``detector notify`` against a real Alertmanager (Debian's, on loopback) and the real broker:
events produced to the anomalies topic become alerts with the key as labels, resolve, survive
Alertmanager being away, and a notifier killed mid-stream sends no alert under another id."""

import signal
import time
from collections import defaultdict
from datetime import datetime

import orjson
import pytest

from integrations import (Alertmanager, NotifierDeployment, Recorder, as_anomaly, metric,
                          seed_events, wait_for)
from detector.io.broker import free_port

pytestmark = pytest.mark.kafka
__all__ = ["seed_events"]        # a fixture


def ids(alerts: list[dict]) -> set[str]:
    return {a["annotations"]["anomaly_id"] for a in alerts}


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_events_become_alerts_labelled_by_their_key_then_resolve(broker, tmp_path, seed_events):
    *opening, resolved = seed_events
    first = orjson.loads(opening[0])
    servfail = first["id"]
    by_domain = as_anomaly(opening[0], "servfail-auth-bank1", related=[servfail],
                           key={"outcome": "SERVFAIL", "sender_domain": "auth.bank1.example"})
    by_resolver = as_anomaly(opening[0], "timeout-res-b",
                             key={"outcome": "TIMEOUT", "resolver": "res-b"})
    with Recorder() as notified:
        alertmanager = Alertmanager(tmp_path, notified.url).start()
        deployment = NotifierDeployment(broker, tmp_path, partitions=2, notify={
            "resend_interval_s": 1,
            "runbook_url": "https://runbooks.example/otp#{id}",
            "generator_url": "https://grafana.example/d/otp-dns-detector?var-anomaly={id}"})
        deployment.produce([*opening, by_domain, by_resolver])
        notifier = deployment.start("--alertmanager-url", alertmanager.url)
        alerts = wait_for("three alerts firing", lambda: len(a := alertmanager.alerts()) == 3 and a,
                          timeout=30, log=deployment.log)
        by_id = {a["annotations"]["anomaly_id"]: a for a in alerts}
        last = orjson.loads(opening[-1])
        alert = by_id[servfail]
        # The last update's severity: the warning alert it opened with was ended, not left firing.
        assert alert["labels"] == {"alertname": "OTPDeliveryFailures", "outcome": "SERVFAIL",
                                   "severity": last["severity"]} and last["severity"] == "critical"
        assert alert["annotations"]["summary"] == last["reason"]
        assert "auth.bank1.example" in alert["annotations"]["description"]
        assert "res-a.dns.example" in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"] == f"https://runbooks.example/otp#{servfail}"
        assert alert["generatorURL"].endswith(f"?var-anomaly={servfail}")
        assert seconds(alert["startsAt"]) == seconds(first["since"])
        assert by_id["servfail-auth-bank1"]["labels"] == {
            "alertname": "OTPDeliveryFailures", "outcome": "SERVFAIL",
            "sender_domain": "auth.bank1.example", "severity": "warning"}
        assert by_id["servfail-auth-bank1"]["annotations"]["related"] == servfail
        assert by_id["timeout-res-b"]["labels"] == {
            "alertname": "OTPDeliveryFailures", "outcome": "TIMEOUT", "resolver": "res-b",
            "severity": "warning"}
        # Re-sent while open: the end time moves on, so Alertmanager never lets it lapse.
        ends = seconds(by_id["timeout-res-b"]["endsAt"])
        wait_for("a re-send", lambda: any(seconds(a["endsAt"]) > ends for a in alertmanager.alerts()
                                          if a["annotations"]["anomaly_id"] == "timeout-res-b"))

        deployment.produce([resolved])
        wait_for("the SERVFAIL alert no longer active",
                 lambda: servfail not in ids(alertmanager.alerts()))
        assert ids(alertmanager.alerts()) == {"servfail-auth-bank1", "timeout-res-b"}

        def notified_resolved():      # Alertmanager's own notification says so
            return [a for body in notified.bodies() for a in body["alerts"]
                    if a["status"] == "resolved" and a["annotations"]["anomaly_id"] == servfail
                    and a["labels"]["severity"] == "critical"]

        [ended] = wait_for("Alertmanager notifying the resolution", notified_resolved)
        assert seconds(ended["endsAt"]) == seconds(orjson.loads(resolved)["detected_at"])
        total = len(opening) + 3
        wait_for("every event committed", lambda: sum(deployment.committed().values()) == total)
        notifier.send_signal(signal.SIGTERM)
        assert notifier.wait(timeout=15) == 0


def test_alertmanager_away_for_a_while_loses_nothing(broker, tmp_path, seed_events):
    first, by_domain = seed_events[0], as_anomaly(
        seed_events[0], "servfail-auth-bank1",
        key={"outcome": "SERVFAIL", "sender_domain": "auth.bank1.example"})
    servfail = orjson.loads(first)["id"]
    with Recorder() as notified:
        alertmanager = Alertmanager(tmp_path, notified.url).start()
        deployment = NotifierDeployment(broker, tmp_path)
        port = free_port()
        deployment.start("--alertmanager-url", alertmanager.url, metrics_port=port)
        deployment.produce([first])
        wait_for("the first alert", lambda: ids(alertmanager.alerts()) == {servfail}, timeout=30,
                 log=deployment.log)
        alertmanager.stop()
        deployment.produce([by_domain])
        wait_for("retries while Alertmanager is away",
                 lambda: metric(port, "otp_notifier_retries_total", receiver="alertmanager") >= 3)
        assert metric(port, "otp_notifier_receiver_up", receiver="alertmanager") == 0
        assert sum(deployment.committed().values()) == 1      # not the event it could not hand on
        time.sleep(1)
        alertmanager.start()                                  # same port, empty memory
        wait_for("both alerts after Alertmanager came back",
                 lambda: ids(alertmanager.alerts()) == {servfail, "servfail-auth-bank1"},
                 timeout=15, log=deployment.log)
        wait_for("the second event committed", lambda: sum(deployment.committed().values()) == 2)
        assert metric(port, "otp_notifier_receiver_up", receiver="alertmanager") == 1


def test_kill_9_mid_stream_then_restart_sends_no_alert_under_another_id(broker, tmp_path,
                                                                       seed_events):
    keys = [{"outcome": "SERVFAIL"}, {"outcome": "TIMEOUT", "resolver": "res-b"},
            {"outcome": "SERVFAIL", "sender_domain": "auth.bank1.example"},
            {"outcome": "NXDOMAIN", "sender_domain": "id.shop.example"},
            {"outcome": "REFUSED", "tenant": "t003.example"}]
    anomalies = {f"anomaly-{n}": [as_anomaly(line, f"anomaly-{n}", key) for line in seed_events]
                 for n, key in enumerate(keys)}
    still_open = {"anomaly-1", "anomaly-3"}
    for anomaly_id in still_open:
        anomalies[anomaly_id].pop()                           # no resolved event
    interleaved = [events[i] for i in range(len(seed_events))
                   for events in anomalies.values() if i < len(events)]
    every_key = {f"{e['id']}:{e['state']}:{e['detected_at']}"
                 for e in map(orjson.loads, interleaved)}
    # A slow webhook holds the commit back, so the kill lands with events read but not committed.
    with Recorder() as notified, Recorder(respond=lambda r: (200, b"ok", 0.05)) as webhook:
        alertmanager = Alertmanager(tmp_path, notified.url).start()
        deployment = NotifierDeployment(broker, tmp_path, partitions=2)
        deployment.produce(interleaved)
        receivers = ("--alertmanager-url", alertmanager.url, "--webhook-url", webhook.url)
        first = deployment.start(*receivers, log_name="first.log")
        wait_for("a third of the events delivered", lambda: len(webhook.received) >= 15,
                 timeout=30, log=lambda: deployment.log("first.log"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        committed = sum(deployment.committed().values())
        assert 0 < committed < len(interleaved), committed
        deployment.start(*receivers, log_name="second.log")
        wait_for("every event at the webhook",
                 lambda: {r.headers["idempotency-key"] for r in webhook.received} >= every_key,
                 timeout=30, log=lambda: deployment.log("second.log"))
        wait_for("exactly the open anomalies firing",
                 lambda: ids(alertmanager.alerts()) == still_open, timeout=15)
        wait_for("every event committed",
                 lambda: sum(deployment.committed().values()) == len(interleaved))
    # Re-sent after the restart or not, one label set never fired under two anomaly ids...
    fired = defaultdict(set)
    for body in notified.bodies():
        for alert in body["alerts"]:
            if alert["status"] == "firing":
                fired[tuple(sorted(alert["labels"].items()))].add(
                    alert["annotations"]["anomaly_id"])
    assert fired and all(len(anomaly_ids) == 1 for anomaly_ids in fired.values()), fired
    # (An anomaly whose events were all on the topic before it was read may reach Alertmanager
    # already resolved: the lane sends each alert's newest state.)
    assert still_open <= set().union(*fired.values()) <= set(anomalies)
    # ...and a webhook event delivered twice is the same request both times.
    first_body = {}
    for request in webhook.received:
        key = request.headers["idempotency-key"]
        assert first_body.setdefault(key, request.body) == request.body
    assert len(webhook.received) >= len(every_key)

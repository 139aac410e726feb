"""``make demo`` as users run it (``python -m detector.demo``): with a real Alertmanager (Debian's,
started by the suite, notifying a recorder of every change) the alert is shown firing with the
anomaly's labels, then resolved; with an Alertmanager that cannot be reached, one line says so
and the demo runs as it does without one, to its report."""

import os
import subprocess
import sys
from datetime import datetime

import orjson
import pytest

from integrations import Alertmanager, Recorder, wait_for
from detector.demo import FIRING_FOR_S
from detector.io.broker import free_port

DEMO = [sys.executable, "-m", "detector.demo"]
#: The demo's scenario cut short after the incident (2.5 h in, 40 min long): the same incident,
#: half the records to read.
HOURS = "3.5"


def run_demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # The caller's DETECTOR_* configuration is not the test's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=timeout,
                          env={**env, "PYTHONUNBUFFERED": "1"})


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def replayed(out) -> tuple[list[dict], dict]:
    """The events a replay of the demo's files gives (the demo writes them for its report), and
    the scenario's truth."""
    events = [orjson.loads(line) for line in (out / "replayed.jsonl").read_bytes().splitlines()]
    return events, orjson.loads((out / "truth.json").read_bytes())


@pytest.mark.slow
def test_the_demo_shows_the_alert_firing_in_alertmanager_with_its_labels_then_resolved(tmp_path):
    out = tmp_path / "out"
    with Recorder() as notified:
        alertmanager = Alertmanager(tmp_path, notified.url).start()
        demo = run_demo("--alertmanager-url", alertmanager.url, "--out", str(out),
                        "--hours", HOURS)
        assert demo.returncode == 0, demo.stderr[-3000:]
        assert "Traceback" not in demo.stderr

        events, truth = replayed(out)
        cut = seconds(truth["incidents"][0]["start"]) + FIRING_FOR_S
        [opened] = [e for e in events if e["state"] == "open"]
        at_cut = [e for e in events if e["id"] == opened["id"] and e["state"] != "resolved"
                  and seconds(e["detected_at"]) < cut][-1]
        [resolved] = [e for e in events if e["id"] == opened["id"] and e["state"] == "resolved"]
        labels = {"alertname": "OTPDeliveryFailures", **opened["key"],
                  "severity": at_cut["severity"]}
        assert labels["outcome"] == truth["incidents"][0]["outcome"]

        # What the demo printed: the alert as Alertmanager listed it, then its resolution.
        printed = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        assert f"lists the alert, firing:\ndemo:   labels      {{{printed}}}" in demo.stderr
        assert f"anomaly_id  {opened['id']}" in demo.stderr
        assert (f"no longer lists {opened['id']}: resolved, endsAt {resolved['detected_at']}"
                in demo.stderr)
        assert demo.stderr.index("firing:") < demo.stderr.index("part two") \
            < demo.stderr.index("resolved, endsAt")

        # What Alertmanager itself says it did: it notified the alert firing, then resolved.
        def changes():
            found = [(a["status"], a) for body in notified.bodies() for a in body["alerts"]
                     if a["annotations"].get("anomaly_id") == opened["id"]]
            return found if any(status == "resolved" for status, _ in found) else None

        found = wait_for("Alertmanager notifying the resolution", changes, timeout=15,
                         log=alertmanager.log)
        firing = [a for status, a in found if status == "firing"]
        ended = [a for status, a in found if status == "resolved"]
        assert firing and firing[0]["labels"] == labels
        assert seconds(firing[0]["startsAt"]) == seconds(opened["since"])
        assert found.index(("firing", firing[0])) < found.index(("resolved", ended[-1]))
        assert ended[-1]["labels"] == labels
        assert seconds(ended[-1]["endsAt"]) == seconds(resolved["detected_at"])
        assert alertmanager.alerts() == []                  # nothing of it left active

    # The events are the same as without Alertmanager: the incident found, nothing else.
    assert "Incidents: 1 of 1 detected" in demo.stdout and "False alarms: 0" in demo.stdout
    assert f"report: {(out / 'report.html').resolve()}" in demo.stderr
    assert (out / "report.html").stat().st_size > 0
    assert not (out / "parts").exists()                     # the split files are cleaned up


@pytest.mark.slow
def test_an_unreachable_alertmanager_is_one_line_and_the_demo_runs_as_without_one(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"                # nothing listens there
    out = tmp_path / "out"
    demo = run_demo("--alertmanager-url", url, "--out", str(out), "--hours", HOURS)
    assert demo.returncode == 0, demo.stderr[-3000:]
    [said] = [line for line in demo.stderr.splitlines() if url in line]
    assert said.startswith(f"demo: Alertmanager at {url} is not reachable (")
    assert said.endswith("the demo goes on without it")
    assert "Traceback" not in demo.stderr and "part one" not in demo.stderr
    assert "Incidents: 1 of 1 detected" in demo.stdout and "False alarms: 0" in demo.stdout
    assert (out / "report.html").stat().st_size > 0


def test_a_bad_alertmanager_url_is_one_line_naming_the_key_before_anything_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    demo = subprocess.run([*DEMO, "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=60,
                          env={**env, "DETECTOR_NOTIFY_ALERTMANAGER_URLS": "alertmanager:9093"})
    assert demo.returncode == 2
    assert demo.stderr.strip().splitlines() == [
        "demo: error: notify.alertmanager_urls: 'alertmanager:9093' is not an http(s) URL"]
    assert not (tmp_path / "out").exists()

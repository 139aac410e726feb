"""The HTML report, opened as a person opens it: rendered by a real browser (Debian's headless
Chromium, no network), from a replay of the seed incident and from the files ``detector report``
reads. And the core's per-step series it is drawn from: off by default, JSON-able, the same events
with it on.

``make report-screenshot`` copies the screenshot a run here takes to ``docs/``; the test itself
writes only under pytest's temporary directory.
"""

from __future__ import annotations

import re
import subprocess

import orjson
import pytest

from conftest import DETECTOR
from detector.core.outcomes import KEYS
from detector.core.pipeline import Detector
from detector.synth import generate
from integrations import binary

CHROMIUM_INSTALL = "run `make integrations-deps` (Debian package chromium)"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=5000")
#: A page's console messages as Chromium logs them (``INFO:CONSOLE:1] "Uncaught ..."``). The log
#: does not say a message's level, and a healthy report logs none: any one fails the test.
CONSOLE_ERROR = re.compile(r":CONSOLE[:(]")


def browse(page, profile, *extra: str) -> subprocess.CompletedProcess:
    chromium = binary("chromium", install=CHROMIUM_INSTALL)
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def rendered(page, tmp_path):
    """The DOM Chromium rendered and its log, with the screenshot taken beside them."""
    dump = browse(page, tmp_path / "profile", "--dump-dom")
    assert dump.returncode == 0, dump.stderr[-2000:]
    shot = browse(page, tmp_path / "profile", f"--screenshot={tmp_path / 'report.png'}",
                  "--window-size=1400,1800")
    assert shot.returncode == 0, shot.stderr[-2000:]
    errors = [line for line in (dump.stderr + shot.stderr).splitlines()
              if CONSOLE_ERROR.search(line)]
    assert errors == [], errors
    return dump.stdout


def read_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def drawn_traces(dom: str) -> list[str]:
    """The trace names plotly drew (the page writes them into ``data-traces`` once drawn)."""
    found = re.search(r'data-traces="([^"]*)"', dom)
    assert found, "the plot was not drawn (no data-traces on the plot's div)"
    return orjson.loads(found.group(1).replace("&quot;", '"'))


def check_page(dom: str, series: list[dict], events: list[dict], tmp_path) -> None:
    # One rate trace per key that had any failure, ALL included, each with expected and band.
    failing = {key for row in series for key in row["failures"]}
    traces = drawn_traces(dom)
    rates = [name for name in traces if name not in ("band", "expected")]
    assert sorted(rates) == sorted(failing)
    assert traces.count("expected") == len(failing) and traces.count("band") == 2 * len(failing)
    assert len(re.findall(r'class="trace scatter', dom)) == len(traces)
    # Every anomaly shaded (one rectangle per panel) and labelled with its id and severity.
    ids = sorted({event["id"] for event in events})
    assert ids
    shapes = re.findall(r'<path data-index="\d+" fill-rule="evenodd"', dom)
    assert len(shapes) == len(ids) * len(failing)
    for anomaly_id in ids:
        severities = {e["severity"] for e in events if e["id"] == anomaly_id}
        worst = next(s for s in ("critical", "warning", "info") if s in severities)
        assert re.search(rf'data-unformatted="&lt;b&gt;{re.escape(anomaly_id)}&lt;/b&gt;'
                         rf'&lt;br&gt;{worst}', dom)
    # The table: each anomaly with its evidence.
    table = dom[dom.index('id="anomalies"'):]
    for event in events:
        assert event["id"] in table
        for sender in event["evidence"]["sender_domains"][:1]:
            assert sender["value"] in table
        for code in event["evidence"]["status_codes"][:1]:
            assert code["value"] in table
    shot = (tmp_path / "report.png").read_bytes()
    assert shot.startswith(b"\x89PNG") and len(shot) > 50_000


@pytest.fixture(scope="module")
def seed_incident(tmp_path_factory):
    """3.5 h of the seed incident (its SERVFAIL incident starts 2.5 h in)."""
    data = tmp_path_factory.mktemp("seed-incident")
    generate("seed-incident", data, seed=1, hours=3.5)
    return data


def test_replay_report_renders_rates_anomalies_and_summary(seed_incident, tmp_path):
    report, series_path, out = tmp_path / "report.html", tmp_path / "series.jsonl", \
        tmp_path / "anomalies.jsonl"
    run = subprocess.run([*DETECTOR, "replay", "--mail", str(seed_incident / "mail.jsonl.gz"),
                          "--dns", str(seed_incident / "dns.jsonl.gz"), "--out", str(out),
                          "--series", str(series_path), "--report", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    page = report.read_text()
    # Self-contained: plotly's JavaScript is in the page (no script is loaded from elsewhere).
    assert "plotly.js v" in page and not re.search(r"<script[^>]+src=", page)
    events, series = read_lines(out), read_lines(series_path)
    assert {"SERVFAIL", "ALL"} <= {key for row in series for key in row["failures"]}
    dom = rendered(report, tmp_path)
    check_page(dom, series, events, tmp_path)
    # The replay's summary: records and rejections by reason.
    summary = dom[dom.index('id="summary"'):]
    assert "not_json" in summary and "bad_ts" in summary
    assert "OTP attempts 34," in summary


def test_report_from_anomaly_and_series_files(seed_incident, tmp_path):
    out, series_path = tmp_path / "anomalies.jsonl", tmp_path / "series.jsonl"
    run = subprocess.run([*DETECTOR, "replay", "--mail", str(seed_incident / "mail.jsonl.gz"),
                          "--dns", str(seed_incident / "dns.jsonl.gz"), "--out", str(out),
                          "--series", str(series_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    report = tmp_path / "from-files.html"
    run = subprocess.run([*DETECTOR, "report", "--anomalies", str(out), "--series",
                          str(series_path), "--out", str(report)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    dom = rendered(report, tmp_path)
    check_page(dom, read_lines(series_path), read_lines(out), tmp_path)
    assert 'id="summary"' not in dom           # no replay, no replay summary


def test_report_refuses_a_file_that_is_not_a_series(seed_incident, tmp_path):
    events = tmp_path / "anomalies.jsonl"
    events.write_text("")
    run = subprocess.run([*DETECTOR, "report", "--anomalies", str(events), "--series",
                          str(seed_incident / "truth.json"), "--out", str(tmp_path / "r.html")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("detector: error: --series ") and run.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_series_is_off_by_default_and_changes_no_event(seed_incident):
    mail = subprocess.run(["gzip", "-dc", str(seed_incident / "mail.jsonl.gz")],
                          capture_output=True, check=True).stdout.splitlines()
    dns = subprocess.run(["gzip", "-dc", str(seed_incident / "dns.jsonl.gz")],
                         capture_output=True, check=True).stdout.splitlines()
    plain, traced = Detector(), Detector(series=True)
    assert plain.series is None
    outputs = []
    for detector in (plain, traced):
        events = []
        for start in range(0, max(len(mail), len(dns)), 4096):
            events += detector.feed("dns", dns[start:start + 4096], source="dns").events
            events += detector.feed("mail", mail[start:start + 4096], source="mail").events
        outputs.append(events + detector.close())
    assert outputs[0] == outputs[1]
    rows = traced.series
    assert orjson.loads(orjson.dumps(rows)) == rows
    assert sum(row["attempts"] for row in rows) == traced.counters["otp_attempts"]
    assert sum(row["failures"].get("ALL", 0) for row in rows) == traced.counters["otp_failures"]
    ends = [row["end"] for row in rows]
    assert ends == sorted(ends) and all(end % traced.config.model.step_s == 0 for end in ends)
    assert all(len(row["expected"]) == len(KEYS) and 0 not in row["failures"].values()
               for row in rows)

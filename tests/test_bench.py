"""``detector bench`` on small inputs: it runs, its table has every row, ``--json`` parses, the
quality section sums up its scenarios and the total, the naive per-record detector it compares
against finds an obvious spike, and the log-format inputs keep their headers once and move on in
time. Nothing here asserts a speed: these machines are too noisy for wall-clock limits, which is
why the benchmark reports ratios to baselines measured alongside."""

from __future__ import annotations

import gzip
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from conftest import DETECTOR
from detector.bench.cli import bench
from detector.bench.formats import SAMPLES, STEP_S, build_input, sample_lines
from detector.bench.harness import quality_specs, summarize
from detector.bench.naive import run_naive
from detector.core.config import AlertConfig
from detector.evaluate import evaluate
from detector.formats import ADAPTERS, make_adapter
from detector.synth import SCENARIOS


QUALITY_SCENARIOS = ("seed-incident", "decoy-volume-surge", "resolver-ramp", "mixed")


def write_gz(path: Path, records: list[dict]) -> str:
    with gzip.open(path, "wb") as out:
        out.write(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return str(path)


def quiet_hour_then_a_servfail_minute(minutes: int = 40, spike_minute: int = 35):
    """Ten OTP mails a minute from bank.example, each after its SPF lookup; in one minute the
    lookups SERVFAIL and eight of the ten mails are deferred."""
    mail, dns = [], []
    for minute in range(minutes):
        for n in range(10):
            ts = 1_795_766_400 + minute * 60 + n * 6
            failing = minute == spike_minute and n < 8
            dns.append({"ts": ts, "qname": "auth.bank.example", "qtype": "TXT",
                        "rcode": "SERVFAIL" if failing else "NOERROR", "resolver": "res-a"})
            mail.append({"ts": ts + 0.5, "message_id": f"<{minute}-{n}@mx1>",
                         "status": "deferred" if failing else "delivered",
                         "sender": "verify@auth.bank.example", "category": "otp"})
    return mail, dns


def test_the_naive_detector_opens_on_an_obvious_servfail_spike(tmp_path):
    mail, dns = quiet_hour_then_a_servfail_minute()
    events, count = run_naive([write_gz(tmp_path / "mail.jsonl.gz", mail)],
                              [write_gz(tmp_path / "dns.jsonl.gz", dns)])
    assert count == len(mail) + len(dns)
    opens = [(e["key"]["outcome"], e["detected_at"]) for e in events if e["state"] == "open"]
    assert ("SERVFAIL", "2026-11-27T08:36:00Z") in opens
    truth = {"incidents": [{"outcome": "SERVFAIL", "start": "2026-11-27T08:35:00Z",
                            "end": "2026-11-27T08:36:00Z"}], "decoys": []}
    report = evaluate(events, truth)
    assert report["recall"] == 1.0 and report["false_alarm_count"] == 0
    assert report["median_delay_s"] == 60.0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``detector bench --quick --json`` without the Kafka section, shared by the tests; the
    quality section on three scenarios of the thirteen (each costs a few seconds) and ``mixed``."""
    out_dir = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(bench, ["--quick", "--json", "--out-dir", str(out_dir),
                                        "--only", "replay", "--only", "memory",
                                        "--only", "quality", "--only", "formats",
                                        *(arg for name in QUALITY_SCENARIOS
                                          for arg in ("--scenario", name))])
    assert result.exit_code == 0, result.output
    return out_dir, result


def test_quick_bench_json_parses_and_holds_every_section(quick_run):
    out_dir, result = quick_run
    report = orjson.loads(result.stdout)
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    replay = report["replay"]
    for rate in ("bare_read_rate", "pipeline_rate", "naive_rate"):
        assert replay[rate] > 0
    assert replay["pipeline_over_bare"] > 0 and replay["project_over_naive"] > 0
    assert [row["factor"] for row in report["memory"]["rows"]] == [1, 4, 10]
    assert all(row["max_rss_kib"] > 0 for row in report["memory"]["rows"])
    rows = {row["scenario"]: row for row in report["quality"]["rows"]}
    assert list(rows) == list(QUALITY_SCENARIOS)
    assert rows["seed-incident"]["project"]["detected"] == 1
    assert rows["seed-incident"]["naive"]["detected"] == 1
    rows = report["formats"]["rows"]
    assert [row["format"] for row in rows] == list(ADAPTERS)
    for row in rows:
        assert 4_000 <= row["lines"] <= 6_000, row
        assert row["records"] > 0 and row["records_rate"] > 0
        assert row["bare_read_rate"] > 0 and row["adapter_rate"] > 0
        assert row["adapter_over_bare"] > 0
        assert row["rejected"] == sum(row["rejected_reasons"].values())
    assert orjson.loads((out_dir / "bench-quick.json").read_bytes())["command"] == report["command"]


def test_quick_bench_quality_sums_up_every_scenario_and_the_total(quick_run):
    _, result = quick_run
    quality = orjson.loads(result.stdout)["quality"]
    assert quality["seeds"] == [1] and quality["kth_failure"] == AlertConfig().min_failures
    runs, rows, total = quality["runs"], quality["rows"], quality["totals"]
    assert [(run["scenario"], run["seed"]) for run in runs] == [
        (name, 1) for name in QUALITY_SCENARIOS]
    for row in [*rows, total]:
        for detector in ("project", "naive"):
            score = row[detector]
            assert score["total_incidents"] == row["incidents"], row
            assert 0 <= score["detected"] <= score["total_incidents"], row
            assert score["false_alarm_count"] >= 0 and score["wrong_outcome_count"] >= 0, row
            if score["detected"]:
                assert 0 <= score["median_delay_s"] <= score["max_delay_s"], row
            else:
                assert score["median_delay_s"] is None and score["max_delay_s"] is None, row
        kth = row["median_kth_failure_s"]
        assert kth is None or kth >= 0, row
    for row in rows:
        with_incidents = row["scenario"] in ("seed-incident", "resolver-ramp")
        assert (row["incidents"] == 1) is with_incidents, row
        assert (row["median_kth_failure_s"] is not None) is with_incidents, row
    assert total["runs"] == len(runs) == sum(row["runs"] for row in rows)
    for detector in ("project", "naive"):
        for key in ("detected", "total_incidents", "false_alarm_count", "wrong_outcome_count"):
            assert total[detector][key] == sum(row[detector][key] for row in rows), key
        assert total[detector]["max_delay_s"] == max(
            (row[detector]["max_delay_s"] for row in rows if row[detector]["detected"]),
            default=None)


def test_quick_bench_table_has_every_row(quick_run):
    out_dir, _ = quick_run
    table = (out_dir / "bench-quick.txt").read_text()
    for row in ("command:  detector bench --quick", "machine:", "1. Replay throughput",
                "bare read: gzip + orjson.loads per line", "replay: the full pipeline",
                "naive per-record detector", "3. Memory", "1x (0.25 h)", "4x (1 h)",
                "10x (2.5 h)", "4. Detection quality", "5. Against the naive", "mixed (2.5 h)",
                "project / naive", "6. Log-format adapters", "adapter lines/s", *ADAPTERS):
        assert row in table, row
    quality = table[table.index("4. Detection quality"):table.index("6. Log-format adapters")]
    lines = quality.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    heads = [line.split() for line in lines if line.strip().startswith("scenario")]
    assert heads == [["scenario", "runs", "incidents", "detected", "false", "wrong", "median",
                      "max", f"{AlertConfig().min_failures}th", "fail"],
                     ["scenario", "detected", "false", "wrong", "median", "max"]]
    for name in [*QUALITY_SCENARIOS, "total"]:
        assert sum(line.strip().startswith(name) for line in lines) == 2, name


def test_the_quality_section_runs_every_scenario_by_default_and_quick_cuts_them_short():
    specs = quality_specs(False, [1, 2, 3])
    assert [(spec.scenario, spec.seed) for spec in specs] == [
        *((name, seed) for name in SCENARIOS if name != "mixed" for seed in (1, 2, 3)),
        ("mixed", 1)]
    assert all(spec.hours is None for spec in specs if spec.scenario != "mixed")
    quick = {spec.scenario: spec.hours for spec in quality_specs(True, [1])}
    assert list(quick) == list(SCENARIOS)
    assert quick["seed-incident"] == 3.25 and quick["ambiguous-joins"] == 5.25


def fake_run(scenario: str, seed: int, delays: list[float], incidents: int, false: int,
             kth: list[float]) -> dict:
    score = {"detected": len(delays), "total_incidents": incidents, "false_alarm_count": false,
             "wrong_outcome_count": seed, "delays_s": delays}
    return {"scenario": scenario, "seed": seed, "hours": 6.0, "incidents": incidents, "decoys": 0,
            "kth_failures_s": kth, "project": score, "naive": score}


def test_runs_are_summed_up_with_delays_pooled_over_seeds():
    summary = summarize([fake_run("x", 1, [10.0], 1, 0, [5.0]),
                         fake_run("x", 2, [20.0, 90.0], 3, 2, [6.0, 7.0]),
                         fake_run("x", 3, [], 1, 1, [])])
    assert summary["runs"] == 3 and summary["seeds"] == [1, 2, 3] and summary["incidents"] == 5
    assert summary["median_kth_failure_s"] == 6.0
    assert summary["project"] == {"detected": 3, "total_incidents": 5, "false_alarm_count": 3,
                                  "wrong_outcome_count": 6, "median_delay_s": 20.0,
                                  "max_delay_s": 90.0}
    empty = summarize([fake_run("y", 1, [], 0, 0, [])])
    assert empty["project"]["median_delay_s"] is None and empty["median_kth_failure_s"] is None


def test_a_rerun_reuses_the_generated_inputs(quick_run):
    out_dir, _ = quick_run
    def stamps() -> dict:
        return {path: path.stat().st_mtime_ns for pattern in ("*.gz", "*.log")
                for path in (out_dir / "data").rglob(pattern)}

    before = stamps()
    assert len([path for path in before if path.suffix == ".log"]) == len(ADAPTERS)
    result = CliRunner().invoke(bench, ["--quick", "--out-dir", str(out_dir), "--only", "memory",
                                        "--only", "formats"])
    assert result.exit_code == 0, result.output
    assert "3. Memory" in result.stdout and "6. Log-format adapters" in result.stdout
    assert stamps() == before


def test_a_run_stopped_part_way_keeps_the_sections_it_measured(quick_run):
    out_dir, _ = quick_run
    complete = (out_dir / "bench-quick.json").read_bytes()
    partial = out_dir / "bench-quick.partial.json"
    assert not partial.exists()                  # the complete run removed its own
    run = subprocess.Popen([*DETECTOR, "bench", "--quick", "--out-dir", str(out_dir),
                            "--only", "replay", "--only", "memory"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not partial.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)               # during the memory section
    _, stderr = run.communicate(timeout=60)
    assert run.returncode != 0, stderr.decode()
    kept = orjson.loads(partial.read_bytes())
    assert kept["partial"] is True and kept["replay"]["pipeline_rate"] > 0
    assert "memory" not in kept
    assert "1. Replay throughput" in (out_dir / "bench-quick.partial.txt").read_text()
    assert "the sections measured so far are in" in stderr.decode()
    assert (out_dir / "bench-quick.json").read_bytes() == complete


def test_format_inputs_keep_headers_once_and_move_on_in_time(tmp_path):
    for name, cls in ADAPTERS.items():
        path = tmp_path / f"{name}.log"
        written = build_input(name, 300, path)
        lines = path.read_bytes().splitlines()
        header, body = sample_lines(name)
        assert len(header) == SAMPLES[name].header
        assert len(lines) == written and 250 <= written <= 350, name
        # Zeek's "#" lines and the M365 CSV header: once, at the top
        assert lines[:len(header)] == [line.encode() for line in header], name
        assert not any(line.startswith(b"#") or line.startswith(b'"Received"')
                       for line in lines[len(header):]), name
        # every sample starts with a timed line: its second repetition is STEP_S later
        first, second = lines[len(header)], lines[len(header) + len(body)]
        assert first == body[0].encode() and second != first, name
        adapter = make_adapter(name, cls.stream)
        out, rest = adapter.feed(lines), adapter.flush()
        records = [orjson.loads(record) for record in out.records + rest.records]
        assert len(records) > written // 3, name
        assert "bad_ts" not in {reason for _, reason in out.rejected}, name
        assert len({record["ts"] for record in records}) > len(records) // 5, name
    unbound = (tmp_path / "unbound.log").read_text().splitlines()
    step = len(sample_lines("unbound")[1])
    assert int(unbound[step][1:11]) == int(unbound[0][1:11]) + STEP_S


@pytest.mark.kafka
def test_quick_bench_through_kafka_measures_loading_throughput_and_an_open_events_latency(
        tmp_path):
    result = CliRunner().invoke(bench, ["--quick", "--json", "--out-dir", str(tmp_path),
                                        "--only", "kafka"])
    assert result.exit_code == 0, result.output
    kafka = orjson.loads(result.stdout)["kafka"]
    throughput = kafka["throughput"]
    assert throughput["default_transport"] == "confluent"
    assert set(throughput["best_s"]) == {"bare", "bare_confluent", "replay", "confluent",
                                         "kafka-python"}
    assert all(seconds > 0 for seconds in throughput["best_s"].values())
    assert throughput["worker_over_confluent"] == (throughput["best_s"]["bare_confluent"]
                                                   / throughput["best_s"]["confluent"])
    assert throughput["produce_rate"] > 0
    loading = throughput["loading"]
    assert loading["rate"] > 0 and loading["kafka_python_rate"] > 0
    assert [c["transport"] for c in throughput["worker_detection"]] == ["confluent", "kafka-python"]
    assert all(c["false_alarms"] == 0 for c in throughput["worker_detection"])
    assert throughput["worker_over_consume_and_replay"] == throughput["best_s"]["confluent"] / (
        throughput["best_s"]["bare_confluent"] + throughput["best_s"]["replay"])
    for latency, transport in ((kafka["latency"], "confluent"),
                               (kafka["latency_kafka_python"], "kafka-python")):
        assert latency["transport"] == transport
        assert latency["n"] == 1 and latency["wall_s"]["p50"] > 0
        assert latency["runs"][0]["outcome"] == "SERVFAIL"
        assert latency["detection_delay_s"]["p50"] >= 0
    table = (tmp_path / "bench-quick.txt").read_text()
    for row in ("2. Through Kafka", "records produced at", "lines of each file, at most",
                "kafka-python's producer", "confluent-kafka bare consumer",
                "kafka-python bare consumer", "replay of the same files",
                "worker, transport confluent (the default)", "bare confluent consume + replay",
                "worker, transport kafka-python", "until its group has committed the end offsets",
                "Latency, transport confluent", "Latency, transport kafka-python",
                "wall clock, records produced at 10x real time", "real time: delay + lateness"):
        assert row in table, row

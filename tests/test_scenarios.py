"""End to end on the built-in scenarios: generate, replay, evaluate, as a user would.

Every incident is detected, no decoy (or anything else) raises a false alarm, and the median
detection delay is within a minute of event time, for several seeds. One scenario goes through the
command line; the others through the same functions the commands call. The 3-day scenario checks
that a replay is reproducible and that its memory does not follow the input's length.
"""

import statistics
import subprocess
import sys

import orjson
import pytest

from detector.evaluate import evaluate, load_events
from detector.io.files import JsonLinesSink
from detector.replay import replay
from detector.synth import SCENARIOS, generate

SEEDS = (1, 2)
SINGLE = [name for name in SCENARIOS if name != "mixed"]


def generate_and_replay(name, seed, directory, hours=None):
    generate(name, directory, seed=seed, hours=hours)
    out = JsonLinesSink(directory / "anomalies.jsonl")
    try:
        replay([str(directory / "mail.jsonl.gz")], [str(directory / "dns.jsonl.gz")], out)
    finally:
        out.close()
    truth = orjson.loads((directory / "truth.json").read_bytes())
    return evaluate(load_events(directory / "anomalies.jsonl"), truth)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    found = {}
    for seed in SEEDS:
        for name in SINGLE:
            found[name, seed] = generate_and_replay(name, seed, tmp_path_factory.mktemp(f"{name}-{seed}"))
    return found


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SINGLE)
def test_every_incident_is_detected_and_nothing_else_is_raised(reports, name, seed):
    report = reports[name, seed]
    missed = [i for i in report["incidents"] if not i["detected"]]
    assert missed == []
    assert report["false_alarms"] == []


@pytest.mark.parametrize("seed", SEEDS)
def test_median_detection_delay_is_at_most_a_minute(reports, seed):
    delays = [i["delay_s"] for name in SINGLE for i in reports[name, seed]["incidents"]]
    assert len(delays) == 4
    assert statistics.median(delays) <= 60
    assert max(delays) <= 120


def test_the_command_line_generates_replays_and_evaluates(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "detector.cli", *args],  # noqa: E731
                                       check=True, capture_output=True, text=True, timeout=300)
    run("generate", "nxdomain-deleted", str(tmp_path), "--seed", "5")
    replayed = run("replay", "--mail", str(tmp_path / "mail.jsonl.gz"),
                   "--dns", str(tmp_path / "dns.jsonl.gz"), "--out", str(tmp_path / "out.jsonl"),
                   "--dead-letter", str(tmp_path / "dead.jsonl"))
    assert "records/s" in replayed.stderr and "rejected (" in replayed.stderr
    dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert dead and all(d["reason"] and d["raw"] and d["line"] > 0 for d in dead)
    report = orjson.loads(run("evaluate", str(tmp_path / "out.jsonl"),
                              str(tmp_path / "truth.json"), "--json").stdout)
    assert report["recall"] == 1.0 and report["false_alarm_count"] == 0
    table = run("evaluate", str(tmp_path / "out.jsonl"), str(tmp_path / "truth.json")).stdout
    assert "NXDOMAIN" in table and "recall 100%" in table


def test_a_missing_file_or_a_bad_config_is_one_clear_line_and_a_non_zero_exit(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "detector.cli", "replay", "--mail",
                              str(tmp_path / "nope.jsonl"), "--dns", "-", "--out", "-"],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"detector: error: no such file: {tmp_path / 'nope.jsonl'}"]
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nbucket_seconds = 60\n")
    (tmp_path / "empty.jsonl").write_text("")
    bad = subprocess.run([sys.executable, "-m", "detector.cli", "replay", "--mail",
                          str(tmp_path / "empty.jsonl"), "--dns", str(tmp_path / "empty.jsonl"),
                          "--out", "-", "--config", str(config)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "model.bucket_seconds" in bad.stderr


PEAK_RSS = ("import resource, sys\nfrom detector.cli import main\nsys.argv = sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")


def replay_peak_rss_kib(directory, out) -> int:
    """``detector replay`` of a generated directory in a fresh process; its peak RSS in KiB."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, "detector", "replay",
                           "--mail", str(directory / "mail.jsonl.gz"),
                           "--dns", str(directory / "dns.jsonl.gz"), "--out", str(out)],
                          check=True, capture_output=True, text=True, timeout=900)
    return int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_3_day_replay_is_reproducible_and_its_memory_does_not_follow_the_input(tmp_path):
    generate("mixed", tmp_path, seed=1)
    peaks = [replay_peak_rss_kib(tmp_path, tmp_path / f"out{run}.jsonl") for run in range(2)]
    first, second = (tmp_path / "out0.jsonl").read_bytes(), (tmp_path / "out1.jsonl").read_bytes()
    assert first == second
    report = evaluate([orjson.loads(line) for line in first.splitlines()],
                      orjson.loads((tmp_path / "truth.json").read_bytes()))
    assert report["recall"] == 1.0 and report["false_alarm_count"] == 0
    # The first 6 hours of the same traffic: a twelfth of the input, about the same peak memory.
    short = tmp_path / "short"
    generate("mixed", short, seed=1, hours=6)
    assert max(peaks) <= 1.25 * replay_peak_rss_kib(short, short / "out.jsonl")

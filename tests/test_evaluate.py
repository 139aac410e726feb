"""Scoring anomaly events against truth.json, case by case as the contract states the rules.

Truth: a SERVFAIL incident 10:00-10:40, a TIMEOUT incident 20:00-20:45, a decoy 15:00-15:30.
An incident is detected by an ``open`` event of its outcome in [start, end + 5 min]; an ``open``
event outside every [start, end + 30 min] is a false alarm, attributed to a decoy when it falls in
[decoy start, decoy end + 30 min].
"""

import gzip
import json

import pytest

from detector.evaluate import evaluate, format_table, load_events

TRUTH = {
    "scenario": "table",
    "incidents": [
        {"outcome": "SERVFAIL", "start": "2026-11-27T10:00:00Z", "end": "2026-11-27T10:40:00Z", "desc": "zone"},
        {"outcome": "TIMEOUT", "start": "2026-11-27T20:00:00Z", "end": "2026-11-27T20:45:00Z", "desc": "resolver"},
    ],
    "decoys": [{"start": "2026-11-27T15:00:00Z", "end": "2026-11-27T15:30:00Z", "desc": "surge"}],
}


def event(id, outcome, detected_at, state="open"):
    return {"id": id, "state": state, "key": {"outcome": outcome}, "detected_at": detected_at,
            "window": {}, "observed": {}, "expected": {}, "score": 9.0, "severity": "critical", "evidence": {}}


# (case, events, SERVFAIL incident's delay or None when missed, false alarms as (id, decoy desc))
CASES = [
    ("detected_with_delay", [event("a", "SERVFAIL", "2026-11-27T10:02:30Z")], 150.0, []),
    ("at_start_is_detected", [event("a", "SERVFAIL", "2026-11-27T10:00:00Z")], 0.0, []),
    ("at_end_plus_5_min_is_detected", [event("a", "SERVFAIL", "2026-11-27T10:45:00Z")], 2700.0, []),
    ("after_end_plus_5_min_is_late_but_no_false_alarm",
     [event("a", "SERVFAIL", "2026-11-27T10:45:00.001Z")], None, []),
    ("before_start_is_a_false_alarm", [event("a", "SERVFAIL", "2026-11-27T09:59:59Z")], None, [("a", None)]),
    ("wrong_outcome_inside_the_window_is_neither", [event("a", "NXDOMAIN", "2026-11-27T10:10:00Z")], None, []),
    ("at_end_plus_30_min_is_no_false_alarm", [event("a", "ALL", "2026-11-27T11:10:00Z")], None, []),
    ("after_end_plus_30_min_is_a_false_alarm", [event("a", "ALL", "2026-11-27T11:10:01Z")], None, [("a", None)]),
    ("false_alarm_during_a_decoy", [event("d", "NOERROR", "2026-11-27T15:20:00Z")], None, [("d", "surge")]),
    ("false_alarm_lagging_a_decoy", [event("d", "NOERROR", "2026-11-27T15:59:00Z")], None, [("d", "surge")]),
    ("false_alarm_after_a_decoy", [event("d", "NOERROR", "2026-11-27T16:01:00Z")], None, [("d", None)]),
    ("update_and_resolved_do_not_detect",
     [event("a", "SERVFAIL", "2026-11-27T10:05:00Z", "update"),
      event("a", "SERVFAIL", "2026-11-27T10:50:00Z", "resolved")], None, []),
    ("outcome_any_case_and_time_with_offset", [event("a", "servfail", "2026-11-27T11:05:00+01:00")], 300.0, []),
    ("time_as_epoch_milliseconds", [event("a", "SERVFAIL", 1_795_773_900_000)], 300.0, []),
    ("earliest_open_counts",
     [event("late", "SERVFAIL", "2026-11-27T10:20:00Z"), event("early", "SERVFAIL", "2026-11-27T10:05:00Z")],
     300.0, []),
]


@pytest.mark.parametrize("events,delay,false_alarms", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_rules(events, delay, false_alarms):
    report = evaluate(events, TRUTH)
    servfail, timeout = report["incidents"]
    assert servfail["detected"] is (delay is not None)
    assert servfail["delay_s"] == delay
    assert timeout["detected"] is False and timeout["delay_s"] is None
    assert report["recall"] == (0.5 if delay is not None else 0.0)
    assert [(alarm["id"], alarm["decoy"]) for alarm in report["false_alarms"]] == false_alarms
    assert report["false_alarm_count"] == len(false_alarms)
    assert report["decoys"][0]["false_alarms"] == sum(1 for _, decoy in false_alarms if decoy == "surge")
    json.dumps(report)   # JSON-able


def test_anomaly_id_delays_and_counts_by_state():
    events = [
        event("early", "SERVFAIL", "2026-11-27T10:05:00Z"),
        event("early", "SERVFAIL", "2026-11-27T10:10:00Z", "update"),
        event("early", "SERVFAIL", "2026-11-27T10:50:00Z", "resolved"),
        event("t", "TIMEOUT", "2026-11-27T20:10:00Z"),
        event("x", "NXDOMAIN", "2026-11-27T03:00:00Z"),
    ]
    report = evaluate(events, TRUTH)
    assert [row["anomaly_id"] for row in report["incidents"]] == ["early", "t"]
    assert report["recall"] == 1.0 and report["detected"] == 2
    assert (report["median_delay_s"], report["max_delay_s"]) == (450.0, 600.0)
    assert report["events_by_state"] == {"open": 3, "update": 1, "resolved": 1}
    assert report["false_alarms"] == [
        {"id": "x", "outcome": "NXDOMAIN", "detected_at": "2026-11-27T03:00:00Z", "decoy": None}]


def test_no_incidents_gives_no_recall_and_every_open_is_a_false_alarm():
    truth = {"incidents": [], "decoys": TRUTH["decoys"]}
    report = evaluate([event("d", "SERVFAIL", "2026-11-27T15:10:00Z")], truth)
    assert report["recall"] is None and report["median_delay_s"] is None and report["max_delay_s"] is None
    assert report["false_alarms"][0]["decoy"] == "surge"
    table = format_table(report)
    assert "recall n/a" in table and "False alarms: 1" in table and "surge" in table


def test_table_shows_the_key_numbers():
    events = [event("anomaly-1", "SERVFAIL", "2026-11-27T10:02:30Z"), event("fa-9", "ALL", "2026-11-27T13:00:00Z")]
    table = format_table(evaluate(events, TRUTH))
    assert "1 of 2 detected, recall 50%" in table
    assert "anomaly-1" in table and "150 s" in table and "NO" in table
    assert "False alarms: 1" in table and "fa-9" in table
    assert "median 150 s, max 150 s" in table
    assert "open 2, update 0, resolved 0" in table


def test_a_bad_detected_at_names_the_event():
    with pytest.raises(ValueError, match="'e7'.*detected_at 'yesterday'"):
        evaluate([event("e7", "SERVFAIL", "yesterday")], TRUTH)


def test_load_events_skips_blank_lines_and_reads_gzip(tmp_path):
    lines = [json.dumps(event("a", "SERVFAIL", "2026-11-27T10:02:30Z")), "", "  ",
             json.dumps(event("a", "SERVFAIL", "2026-11-27T10:40:00Z", "resolved"))]
    text = "\n".join(lines) + "\n"
    (tmp_path / "events.jsonl").write_text(text)
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("events.jsonl", "events.jsonl.gz"):
        assert [e["state"] for e in load_events(tmp_path / name)] == ["open", "resolved"]

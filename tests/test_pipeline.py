"""The core end to end on small written-out traffic: given these log lines, these anomaly events."""

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from detector.settings import detector_config
from detector.core.pipeline import Detector
from detector.core.records import parse_ts
from detector.core.events import to_builtins
from traffic import T0, Traffic, feed_all

EVENT_SCHEMA = Draft202012Validator(json.loads(
    (Path(__file__).parent.parent / "schemas" / "anomaly-event.schema.json").read_text()))


def at(minute: float) -> float:
    return T0 + minute * 60


def servfail_spike() -> Traffic:
    """90 quiet minutes (0.7 % failures, DNS fine), 10 minutes where a quarter of the OTP mail's
    SPF lookups SERVFAIL and those mails are deferred, then 40 quiet minutes."""
    return (Traffic()
            .minutes(0, 90, 60, fail_every=150)
            .minutes(90, 10, 60, bad_every=4, rcode="SERVFAIL")
            .minutes(100, 40, 60, fail_every=150)
            .sorted())


def assert_valid_events(events):
    for event in events:
        EVENT_SCHEMA.validate(event)
        assert event["observed"]["failures"] <= event["observed"]["attempts"]
        assert parse_ts(event["window"]["start"]) <= parse_ts(event["window"]["end"])
        assert parse_ts(event["since"]) <= parse_ts(event["detected_at"])


def test_a_servfail_spike_opens_once_within_a_minute_and_resolves_after_it_ends():
    events = feed_all(Detector(), servfail_spike())
    assert_valid_events(events)
    states = [(e["state"], e["key"]["outcome"]) for e in events]
    assert states[0] == ("open", "SERVFAIL")
    assert states[-1] == ("resolved", "SERVFAIL")
    assert {outcome for _, outcome in states} == {"SERVFAIL"}     # no second page for ALL
    assert len({e["id"] for e in events}) == 1
    opened = parse_ts(events[0]["detected_at"])
    assert at(90) < opened <= at(91)
    resolved = parse_ts(events[-1]["detected_at"])
    assert at(100) < resolved <= at(100) + 7 * 60                # hold time 5 min
    evidence = events[0]["evidence"]
    assert evidence["resolvers"][0]["value"] == "res-a"
    assert evidence["sender_domains"][0]["value"] == "auth.bank.example"
    assert evidence["status_codes"][0]["value"] == "4.4.3"
    assert len(evidence["sample_message_ids"]) == 5
    assert events[-1]["observed"]["failures"] == 150               # every SERVFAIL'd delivery


def test_updates_come_at_most_once_per_bucket():
    events = [e for e in feed_all(Detector(), servfail_spike()) if e["state"] == "update"]
    times = [parse_ts(e["detected_at"]) for e in events]
    assert all(later - earlier >= 60 for earlier, later in zip(times, times[1:]))


def test_an_otp_volume_surge_with_unchanged_failure_rates_raises_nothing():
    traffic = (Traffic().minutes(0, 90, 60, fail_every=150)
               .minutes(90, 30, 300, fail_every=150)          # five times the volume
               .minutes(120, 30, 60, fail_every=150).sorted())
    assert feed_all(Detector(), traffic) == []


def test_one_failure_of_two_at_night_is_not_an_incident():
    traffic = (Traffic().minutes(0, 90, 20, fail_every=200)
               .minutes(90, 30, 2, fail_every=10**6)          # the night's trickle
               .minutes(120, 1, 2, fail_every=2)              # one of its two mails fails
               .minutes(121, 30, 2, fail_every=10**6)
               .sorted())
    assert feed_all(Detector(), traffic) == []


def test_nothing_is_raised_during_warm_up():
    traffic = Traffic().minutes(0, 10, 60, bad_every=2, rcode="SERVFAIL").sorted()
    assert feed_all(Detector(), traffic) == []


def test_a_small_sustained_rise_is_caught_by_the_sequential_test_before_the_long_window():
    traffic = (Traffic().minutes(0, 120, 300, fail_every=100)     # 1 % failures
               .minutes(120, 30, 300, fail_every=40)              # 2.5 %: no minute shows it
               .sorted())
    events = feed_all(Detector(), traffic)
    opens = [e for e in events if e["state"] == "open"]
    # One page, from the CUSUM, sooner than the 15-minute window could; it stays open while
    # the rise goes on (no flapping), with its slices referenced, not paged.
    assert [(e["key"], e["rule"]) for e in opens] == [({"outcome": "NOERROR"}, "cusum")]
    assert at(120) < parse_ts(opens[0]["detected_at"]) <= at(130)
    assert parse_ts(opens[0]["since"]) <= at(120)
    assert [e["state"] for e in events] == ["open"]
    assert all(r.startswith("noerror-") for r in opens[0].get("related", []))


def test_non_otp_mail_failures_are_not_counted():
    traffic = (Traffic().minutes(0, 90, 60, fail_every=150)
               .minutes(90, 20, 60, bad_every=2, rcode="SERVFAIL", category="newsletter")
               .sorted())
    detector = Detector()
    assert feed_all(detector, traffic) == []
    assert detector.stats()["not_otp"] == 20 * 60


def test_a_logged_dns_outcome_is_used_without_a_join():
    detector = Detector()
    line = orjson.dumps({"ts": at(1), "message_id": "m", "status": "deferred", "category": "otp",
                         "sender": "verify@bank.example", "dns_outcome": "timeout"})
    detector.feed("mail", [line])
    detector.close()
    assert detector.stats()["otp_outcome:TIMEOUT"] == 1


@pytest.mark.parametrize("batch", [1, 37, 5000])
def test_the_same_input_gives_the_same_events_whatever_the_batching(batch):
    reference = feed_all(Detector(), servfail_spike(), batch=500)
    assert feed_all(Detector(), servfail_spike(), batch=batch) == reference


def test_a_restored_snapshot_continues_exactly_where_it_stopped():
    traffic = servfail_spike()
    reference = feed_all(Detector(), traffic)
    first = Detector()
    first.add_source("mail")
    first.add_source("dns")
    half_mail, half_dns = len(traffic.mail) * 92 // 140, len(traffic.dns) * 92 // 140
    events = first.feed("dns", traffic.dns[:half_dns], source="dns").events
    events += first.feed("mail", traffic.mail[:half_mail], source="mail").events
    state = orjson.loads(orjson.dumps(first.snapshot()))      # through JSON, as a checkpoint is
    second = Detector(state=state)
    rest = Traffic(mail=traffic.mail[half_mail:], dns=traffic.dns[half_dns:])
    events += feed_all(second, rest)
    assert [to_builtins(e) for e in events] == reference


def test_late_records_are_rejected_as_late_and_duplicates_are_counted():
    detector = Detector()
    detector.add_source("mail")
    mail = [orjson.dumps({"ts": at(10), "message_id": "a", "status": "delivered", "category": "otp"})]
    detector.feed("mail", mail, source="mail")
    old = orjson.dumps({"ts": at(9), "message_id": "b", "status": "delivered", "category": "otp"})
    result = detector.feed("mail", [mail[0], old], source="mail")
    assert result.rejected == [(1, "late")]
    assert detector.stats()["duplicates"] == 1


def test_a_clock_far_in_the_future_is_rejected_and_does_not_move_the_watermark():
    detector = Detector()
    lines = [orjson.dumps({"ts": at(1) + i, "message_id": f"m{i}", "status": "delivered",
                           "category": "otp"}) for i in range(20)]
    lines.append(orjson.dumps({"ts": "9999-01-01T00:00:00Z", "message_id": "x",
                               "status": "delivered", "category": "otp"}))
    result = detector.feed("mail", lines)
    assert result.rejected == [(20, "future_ts")]
    assert detector.watermark < at(2)


def test_bad_lines_are_rejected_with_reasons_and_the_rest_goes_on():
    detector = Detector()
    lines = [b"{not json", b"[1]", b'{"ts": "yesterday", "message_id": "m", "status": "failed"}',
             orjson.dumps({"ts": at(1), "message_id": "ok", "status": "failed", "category": "otp"})]
    result = detector.feed("mail", lines)
    assert result.rejected == [(0, "not_json"), (1, "not_object"), (2, "bad_ts")]
    detector.close()
    assert detector.stats()["otp_attempts"] == 1


def test_config_parameters_change_the_decision():
    strict = detector_config({"alerts": {"min_failures": 1000}})
    assert feed_all(Detector(strict), servfail_spike()) == []


def test_replay_with_state_continues_where_the_last_replay_stopped(tmp_path):
    import subprocess
    import sys

    traffic = servfail_spike()
    whole_mail, whole_dns = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    whole_mail.write_bytes(b"\n".join(traffic.mail) + b"\n")
    whole_dns.write_bytes(b"\n".join(traffic.dns) + b"\n")
    # The same logs cut in two at minute 95, in the middle of the incident.
    cut = T0 + 95 * 60
    halves = {}
    for name, lines in (("mail", traffic.mail), ("dns", traffic.dns)):
        first = [line for line in lines if orjson.loads(line)["ts"] < cut]
        second = [line for line in lines if orjson.loads(line)["ts"] >= cut]
        for part, chunk in (("1", first), ("2", second)):
            path = tmp_path / f"{name}{part}.jsonl"
            path.write_bytes(b"\n".join(chunk) + b"\n")
            halves[name, part] = path

    def replay(mail, dns, out, state):
        subprocess.run([sys.executable, "-m", "detector.cli", "replay", "--mail", str(mail),
                        "--dns", str(dns), "--out", str(out), "--state", str(state)],
                       check=True, capture_output=True, timeout=120)
        return out.read_bytes().splitlines()

    whole = replay(whole_mail, whole_dns, tmp_path / "whole.jsonl", tmp_path / "whole.state")
    first = replay(halves["mail", "1"], halves["dns", "1"], tmp_path / "a.jsonl", tmp_path / "s")
    second = replay(halves["mail", "2"], halves["dns", "2"], tmp_path / "b.jsonl", tmp_path / "s")
    assert first and second                 # the incident opened in one run, went on in the next
    assert first + second == whole


def test_after_close_records_for_judged_steps_are_late_even_after_a_restore():
    detector = Detector()
    lines = [orjson.dumps({"ts": at(1) + i, "message_id": f"m{i}", "status": "delivered",
                           "category": "otp"}) for i in range(5)]
    detector.feed("mail", lines, source="mail")
    detector.close()
    restored = Detector(state=orjson.loads(orjson.dumps(detector.snapshot())))
    again = orjson.dumps({"ts": at(1) + 0.5, "message_id": "late", "status": "delivered",
                          "category": "otp"})
    assert restored.feed("mail", [again], source="mail").rejected == [(0, "late")]


def test_the_first_record_time_is_the_oldest_seen_whatever_the_batch():
    detector = Detector()
    detector.add_source("mail")
    make = lambda ts, mid: orjson.dumps({"ts": ts, "message_id": mid, "status": "delivered",  # noqa: E731
                                         "category": "otp"})
    detector.feed("mail", [make(at(10), "a")], source="mail")
    detector.feed("mail", [make(at(10) - 5, "b"), make(at(12), "c")], source="mail")
    assert detector.first_ts == at(10) - 5


def test_a_delivery_is_joined_to_the_answer_its_own_status_agrees_with():
    # One server asks for the same name twice a second before each delivery: a healthy answer and
    # a SERVFAIL. The deferred delivery whose status says DNS (4.4.3) took the failing answer; the
    # delivered one the healthy answer; one whose status says nothing of DNS the nearest.
    def answer(ts, rcode):
        return orjson.dumps({"ts": ts, "qname": "bank.example", "rcode": rcode, "answers": 1,
                             "resolver": "r1", "client": "mx1"})

    def mail(ts, message_id, status, **fields):
        return orjson.dumps({"ts": ts, "message_id": message_id, "status": status,
                             "category": "otp", "sender": "otp@bank.example", "server": "mx1",
                             **fields})

    detector = Detector()
    detector.add_source("mail")
    detector.add_source("dns")
    detector.feed("dns", [answer(at(1), "SERVFAIL"), answer(at(1) + 0.5, "NOERROR"),
                          answer(at(2), "NOERROR"), answer(at(2) + 0.5, "SERVFAIL"),
                          answer(at(3), "NOERROR"), answer(at(3) + 0.5, "SERVFAIL")])
    detector.feed("mail", [
        mail(at(1) + 1, "deferred-dns", "deferred", status_code="4.4.3",
             detail="Temporary DNS failure looking up SPF record"),
        mail(at(2) + 1, "delivered", "delivered"),
        mail(at(3) + 1, "full", "failed", status_code="5.2.2", detail="Mailbox full"),
    ])
    detector.close()
    stats = detector.stats()
    assert stats["otp_outcome:SERVFAIL"] == 2          # the deferred one, and the mailbox full
    assert stats["otp_outcome:NOERROR"] == 1           # the delivered one
    assert stats["ambiguous_joins"] == 2               # the status chose other than the nearest

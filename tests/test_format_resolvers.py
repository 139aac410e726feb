"""Resolver logs (Unbound, BIND, CoreDNS): given these lines, these contract records.

Every record an adapter emits goes through the project's own parser (``parse_dns``, in
``formats_helpers.feed_and_flush``), so "the adapter produced it" always means "the core accepts
it"."""

from __future__ import annotations

import orjson
import pytest
from formats_helpers import (ALL_ADAPTERS, CONTRACT_LINES, feed_and_flush, fixture_lines,
                             sniff_scores)
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core.records import parse_dns
from detector.formats.bind import Bind
from detector.formats.coredns import CoreDns, go_duration
from detector.formats.logtime import LogTime
from detector.formats.unbound import Unbound

T0 = 1795774502.0            # 2026-11-27T10:15:02Z


def summary(records: list[dict]) -> list[tuple]:
    """(qname, qtype, outcome as the core reads it, client) per record."""
    return [(r["qname"].rstrip("."), r.get("qtype"), parse_dns(orjson.dumps(r)).outcome,
             r.get("client")) for r in records]


# -- Unbound ----------------------------------------------------------------------------------------

def test_unbound_replies_and_servfail_reasons_give_every_outcome_unbound_can_express():
    records, out = feed_and_flush(Unbound(year=2026), fixture_lines("unbound.log"))
    assert out.rejected == []
    assert summary(records) == [
        ("bank.example", "TXT", "NOERROR", "10.0.0.5"),
        ("mx1.bank.example", "A", "NOERROR", "10.0.0.5"),
        ("shop.example", "MX", "NOERROR", "10.0.0.5"),          # NODATA is not visible here
        ("_dmarc.gone.example", "TXT", "NXDOMAIN", "10.0.0.6"),
        # the servfail reason names a timeout: it and the replies it explains are TIMEOUT
        ("sel1._domainkey.bank.example", "TXT", "TIMEOUT", None),
        ("sel1._domainkey.bank.example", "TXT", "TIMEOUT", "10.0.0.6"),
        ("sel1._domainkey.bank.example", "TXT", "TIMEOUT", "10.0.0.8"),
        ("dnssec-failed.example", "TXT", "SERVFAIL", None),
        ("dnssec-failed.example", "TXT", "SERVFAIL", "10.0.0.6"),
        ("bank.example", "TXT", "REFUSED", "10.0.0.7"),
        ("bank.example", "TYPE65534", "NOTIMP", "10.0.0.7"),   # Unbound says NOTIMPL
        ("otp.bank.example", "TXT", "NOERROR", "10.0.0.5"),
        ("otp.bank.example", "MX", "SERVFAIL", None),
        ("otp.bank.example", "A", "NOERROR", "10.0.0.5"),
    ]
    # two start-up lines, the log-queries line and the FORMERR reply without a question
    assert out.skipped == 4
    assert all("answers" not in r for r in records)
    assert records[0]["ts"] == T0 and records[0]["latency_ms"] == 12.0
    assert records[-1]["ts"] == T0 + 6.25                    # the ISO syslog time
    assert [r.get("resolver") for r in records[-3:]] == ["res2", "res2", "res2"]


def test_the_resolver_argument_wins_over_the_syslog_host():
    records, _ = feed_and_flush(Unbound(resolver="unbound-a", year=2026),
                                fixture_lines("unbound.log")[-3:])
    assert {r["resolver"] for r in records} == {"unbound-a"}


def test_a_servfail_reason_only_explains_replies_for_the_same_question_soon_after():
    lines = [b"[1795774502] unbound[811:0] error: SERVFAIL <bank.example. TXT IN>: upstream server timeout",
             b"[1795774502] unbound[811:0] reply: 10.0.0.5 bank.example. MX IN SERVFAIL 1.000000 0 41",
             b"[1795774510] unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN SERVFAIL 1.000000 0 41"]
    records, _ = feed_and_flush(Unbound(), lines)
    assert [o for _, _, o, _ in summary(records)] == ["TIMEOUT", "SERVFAIL", "SERVFAIL"]


def test_unbound_keeps_recent_reasons_across_batches_and_a_restore():
    first = Unbound()
    first.feed([b"[1795774502] unbound[811:0] error: SERVFAIL <bank.example. TXT IN>: "
                b"all servers for this domain failed, at zone bank.example. upstream server timeout"])
    second = Unbound()
    second.restore(orjson.loads(orjson.dumps(first.snapshot())))
    records, _ = feed_and_flush(second, [b"[1795774503] unbound[811:0] reply: 10.0.0.5 "
                                         b"bank.example. TXT IN SERVFAIL 1.000000 0 41"])
    assert summary(records) == [("bank.example", "TXT", "TIMEOUT", "10.0.0.5")]


def test_unbound_time_forms_log_time_ascii_and_the_year_rollover():
    adapter = Unbound(year=2026)
    records, out = feed_and_flush(adapter, [
        b"Dec 31 23:59:59 unbound[811:0] info: 10.0.0.5 bank.example. TXT IN NOERROR 0.001000 0 98",
        b"Jan  1 00:00:01 unbound[811:0] info: 10.0.0.5 bank.example. TXT IN NOERROR 0.001000 0 98",
    ])
    assert out.rejected == []
    assert [r["ts"] for r in records] == [1798761599.0, 1798761601.0]
    assert adapter.snapshot()["clock"]["year"] == 2027


@pytest.mark.parametrize("line,reason", [
    (b"[1795774502] unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN NOERR", "truncated"),
    (b"[1795774502] unbound[811:0] error: SERVFAIL <bank.example. TXT", "truncated"),
    (b"unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN NOERROR 0.001000 0 98", "bad_ts"),
    (b"[99999999999999] unbound[811:0] reply: 10.0.0.5 a.example. A IN NOERROR 0.1 0 9", "bad_ts"),
    (b"Nov 31 10:15:02 unbound[811:0] info: 10.0.0.5 a.example. A IN NOERROR 0.001000 0 98", "bad_ts"),
    (b"Nov 27 10:15:02 res1 named[811]: client 10.0.0.5#1 (a): query failed (SERVFAIL)", "not_unbound"),
    (b'{"ts": 1795774502, "qname": "bank.example", "rcode": "SERVFAIL"}', "not_unbound"),
    (b"x" * 70_000, "too_large"),
])
def test_malformed_unbound_lines_are_rejected_with_a_reason(line, reason):
    _, out = feed_and_flush(Unbound(year=2026), [line])
    assert out.rejected == [(0, reason)]


# -- BIND -------------------------------------------------------------------------------------------

def test_bind_query_errors_and_denials_give_every_outcome_bind_logs():
    adapter = Bind(year=2026)
    records, out = feed_and_flush(adapter, fixture_lines("bind.log"))
    assert out.rejected == []
    assert summary(records) == [
        ("sel1._domainkey.bank.example", "TXT", "TIMEOUT", "10.0.0.6"),   # (timed out)
        ("dnssec-failed.example", "TXT", "SERVFAIL", "10.0.0.8"),         # (no valid RRSIG)
        ("bank.example", "MX", "SERVFAIL", "10.0.0.8"),
        ("bank.example", "TXT", "REFUSED", "203.0.113.9"),                # security: denied
        ("gone.example", "A", "NXDOMAIN", "10.0.0.5"),                    # behind "view internal:"
        ("bank.example", "A", "SERVFAIL", "10.0.0.5"),                    # through syslog
        ("bank.example", "A", "REFUSED", "10.0.0.7"),
    ]
    assert records[0]["ts"] == pytest.approx(T0 + 6.802)
    assert [r.get("resolver") for r in records[-2:]] == ["ns1", "ns1"]
    # Visible and honest: what was skipped, and why.
    assert dict(adapter.skipped_by_kind) == {"other": 1, "query_log": 2, "fetch_completed": 1,
                                             "refused_after_denied": 1}
    assert out.skipped == 5


def test_a_query_log_alone_says_nothing_about_outcomes_and_gives_no_records():
    adapter = Bind()
    query_log = [line for line in fixture_lines("bind.log") if b" query: " in line]
    records, out = feed_and_flush(adapter, query_log)
    assert records == [] and out.skipped == len(query_log) == 2
    assert adapter.skipped_by_kind["query_log"] == 2


def test_bind_local_times_follow_tz_and_iso_times_their_offset():
    line = (b"27-Nov-2026 11:15:02.000 query-errors: info: client @0x7f 10.0.0.5#1 (bank.example): "
            b"query failed (SERVFAIL) for bank.example/IN/TXT at query.c:7742")
    records, _ = feed_and_flush(Bind(tz="Europe/Berlin"), [line])
    assert records[0]["ts"] == T0                               # CET is UTC+1 in November
    iso = (b"2026-11-27T10:15:02.000Z client 10.0.0.5#1: query failed (SERVFAIL) for "
           b"bank.example/IN/TXT at query.c:7742")
    records, _ = feed_and_flush(Bind(tz="Europe/Berlin"), [iso])
    assert records[0]["ts"] == T0 and records[0]["client"] == "10.0.0.5"


@pytest.mark.parametrize("line,reason", [
    (b"27-Nov-2026 10:15:02.000 query-errors: info: client @0x7f 10.0.0.5#1 (bank.example): "
     b"query failed (SERVFA", "truncated"),
    (b"27-Nov-2026 10:15:02.000 query-errors: info: client @0x7f 10.0.0.5#1 (bank.example): "
     b"query failed (SERVFAIL) for ", "truncated"),
    (b"client @0x7f 10.0.0.5#1 (bank.example): query failed (SERVFAIL) for bank.example/IN/A at q.c:1",
     "bad_ts"),
    (b"31-Feb-2026 10:15:02.000 client 10.0.0.5#1: query failed (SERVFAIL) for a.example/IN/A at q.c:1",
     "bad_ts"),
    (b"[1795774502] unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN NOERROR 0.1 0 98",
     "not_bind"),
    (b'{"ts": 1795774502, "qname": "bank.example", "rcode": "SERVFAIL"}', "not_bind"),
    (b"\xff\xfe\x00garbage", "not_bind"),
])
def test_malformed_bind_lines_are_rejected_with_a_reason(line, reason):
    _, out = feed_and_flush(Bind(year=2026), [line])
    assert out.rejected == [(0, reason)]


# -- CoreDNS ----------------------------------------------------------------------------------------

def test_coredns_log_and_errors_plugins_give_one_record_per_failure():
    records, out = feed_and_flush(CoreDns(), fixture_lines("coredns.log"))
    assert out.rejected == []
    assert summary(records) == [
        ("bank.example", "TXT", "NOERROR", "10.0.0.5"),
        ("shop.example", "MX", "NOERROR", "10.0.0.5"),           # NODATA is not visible here
        ("_dmarc.gone.example", "TXT", "NXDOMAIN", "10.0.0.6"),
        ("bank.example", "TXT", "REFUSED", "2001:db8::7"),
        # no response written, then the errors line: one record, the client and the cause
        ("sel1._domainkey.bank.example", "TXT", "TIMEOUT", "10.0.0.6"),
        ("bank.example", "MX", "SERVFAIL", "10.0.0.8"),
        ("otp.bank.example", "TXT", "SERVFAIL", None),           # errors line on its own
        ("otp.bank.example", "A", "SERVFAIL", "10.0.0.5"),       # CoreDNS < 1.8.5: "NOERROR - 0"
    ]
    assert out.skipped == 4                                      # the start-up banner
    assert records[4]["latency_ms"] == pytest.approx(4800.318)
    assert all("answers" not in r for r in records)


def test_the_2017_log_format():
    records, out = feed_and_flush(CoreDns(), fixture_lines("coredns_2017.log"))
    assert out.rejected == []
    assert summary(records) == [("bank.example", "TXT", "NOERROR", "10.0.0.5"),
                                ("bank.example", "TXT", "SERVFAIL", "10.0.0.6"),
                                ("gone.example", "A", "NXDOMAIN", "10.0.0.7")]
    assert [r["ts"] for r in records] == [T0 + 28, T0 + 29, T0 + 30]
    assert records[0]["latency_ms"] == 0.084                  # 84.497µs, to the microsecond


def test_a_query_without_a_response_waits_two_seconds_of_event_time_for_its_cause():
    no_response = (b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:41238 - 7 "TXT IN bank.example. udp 41 '
                   b'false 1232" - - 0 5.0s')
    later = (b'2026-11-27T10:15:05Z [INFO] 10.0.0.5:41239 - 8 "A IN other.example. udp 41 false '
             b'1232" NOERROR qr,rd,ra 57 0.001s')
    adapter = CoreDns()
    first = adapter.feed([no_response])
    assert first.records == [] and adapter.snapshot()["pending"]
    second = adapter.feed([later])          # three seconds on: no cause came, it goes as it is
    assert [o for _, _, o, _ in summary([orjson.loads(r) for r in second.records])] == [
        "SERVFAIL", "NOERROR"]


def test_a_pending_query_survives_snapshot_and_restore_and_flush_releases_it():
    adapter = CoreDns()
    adapter.feed([b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:41238 - 7 "TXT IN bank.example. udp 41 '
                  b'false 1232" SERVFAIL - 0 5.0s'])
    restored = CoreDns()
    restored.restore(orjson.loads(orjson.dumps(adapter.snapshot())))
    out = restored.feed([b"2026-11-27T10:15:03Z [ERROR] plugin/errors: 2 bank.example. TXT: "
                         b"read udp 10.0.0.53:52011->192.0.2.1:53: i/o timeout"])
    assert summary([orjson.loads(r) for r in out.records]) == [
        ("bank.example", "TXT", "TIMEOUT", "10.0.0.5")]
    assert restored.flush().records == []
    adapter.feed([])
    assert len(adapter.flush().records) == 1


def test_queries_waiting_for_a_cause_are_bounded_by_max_pending():
    adapter = CoreDns()
    adapter.max_pending = 2
    lines = [b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:1 - 1 "TXT IN %s.example. udp 41 false 1232" '
             b"- - 0 5.0s" % name for name in (b"a", b"b", b"c")]
    out = adapter.feed(lines)
    assert [orjson.loads(r)["qname"] for r in out.records] == ["a.example."]
    assert len(adapter.snapshot()["pending"]) == 2


def test_coredns_wrappers_docker_json_go_log_and_syslog():
    lines = [
        b'{"log":"[INFO] 10.0.0.5:1 - 7 \\"TXT IN bank.example. udp 41 false 1232\\" NOERROR '
        b'qr,rd,ra 131 0.001s\\n","stream":"stdout","time":"2026-11-27T10:15:02.5Z"}',
        b'2026/11/27 10:15:03 [INFO] 10.0.0.5:1 - 8 "TXT IN bank.example. udp 41 false 1232" '
        b'NXDOMAIN qr,rd,ra 99 0.001s',
        b'Nov 27 10:15:04 dns-1 coredns[811]: [INFO] 10.0.0.5:1 - 9 "TXT IN bank.example. udp 41 '
        b'false 1232" REFUSED qr,rd 41 0.001s',
    ]
    records, out = feed_and_flush(CoreDns(year=2026), lines)
    assert out.rejected == []
    assert [(r["ts"], r["rcode"], r.get("resolver")) for r in records] == [
        (T0 + 0.5, "NOERROR", None), (T0 + 1, "NXDOMAIN", None), (T0 + 2, "REFUSED", "dns-1")]


def test_a_line_without_a_time_is_bad_ts_unless_a_clock_is_given_for_live_tailing():
    bare = (b'[INFO] 10.0.0.5:41234 - 1001 "TXT IN bank.example. udp 41 false 1232" NOERROR '
            b'qr,rd,ra 131 0.012s')
    _, out = feed_and_flush(CoreDns(), [bare])
    assert out.rejected == [(0, "bad_ts")]
    records, _ = feed_and_flush(CoreDns(clock=lambda: T0), [bare])
    assert records[0]["ts"] == T0


@pytest.mark.parametrize("line,reason", [
    (b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:41234 - 1001 "TXT IN bank.exa', "truncated"),
    (b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:41234 - 1001 "TXT IN bank.example. udp 41 false 1232" '
     b'NOERROR qr,rd', "truncated"),
    (b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:41234 - 1001 "TXT IN bank.example. udp 41 false 1232" '
     b'NOERROR qr,rd 131 soon', "truncated"),
    (b"2026-11-27T10:15:02Z [ERROR] plugin/errors: 2 bank.example.", "truncated"),
    (b'2026-13-27T10:15:02Z [INFO] 10.0.0.5:1 - 1 "A IN a.example. udp 41 false 1232" NOERROR '
     b'qr 41 0.1s', "bad_ts"),
    (b'{"log": "[INFO] 10.0.0.5:1 - 1 \\"A IN a.exa', "truncated"),
    (b"Nov 27 10:15:12 ns1 named[811]: client 10.0.0.5#41401: query failed (SERVFAIL)", "not_coredns"),
    (b'{"ts": 1795774502, "qname": "bank.example", "rcode": "SERVFAIL"}', "not_coredns"),
])
def test_malformed_coredns_lines_are_rejected_with_a_reason(line, reason):
    _, out = feed_and_flush(CoreDns(), [line])
    assert out.rejected == [(0, reason)]


@pytest.mark.parametrize("text,seconds", [
    ("0.000123s", 0.000123), ("84.497µs", 84.497e-6), ("84.497us", 84.497e-6), ("1.2ms", 0.0012),
    ("2m3.5s", 123.5), ("1h", 3600.0), ("", None), ("5", None), ("5s ", None), ("s", None),
])
def test_go_durations(text, seconds):
    assert go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


# -- shared: time, sniffing, robustness -------------------------------------------------------------

def test_log_time_without_a_year_uses_the_given_one_and_rejects_impossible_dates():
    clock = LogTime(year=2026)
    assert clock.bsd("Nov", "27", "10:15:02.250") == T0 + 0.25
    assert clock.bsd("Feb", "30", "10:15:02") is None
    assert clock.iso("2026-11-27T10:15:02+0000") == T0         # journald's short-iso offset
    assert clock.iso("2026-11-27T10:15:02.123456789Z") == pytest.approx(T0 + 0.123456789)
    assert clock.iso("1969-12-31T23:59:59Z") is None            # before the epoch


def test_without_a_year_a_month_still_to_come_is_last_years():
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    this_month = LogTime()
    this_month.bsd(months[now.month - 1], "1", "00:00:00")
    assert this_month.year == now.year
    if now.month < 12:
        later = LogTime()
        later.bsd("Dec", "1", "00:00:00")
        assert later.year == now.year - 1


@pytest.mark.parametrize("fixture,expected", [
    ("unbound.log", "unbound"), ("bind.log", "bind"), ("coredns.log", "coredns"),
    ("coredns_2017.log", "coredns"),
])
def test_sniff_picks_the_resolver_log_it_is(fixture, expected):
    scores = sniff_scores(fixture)
    assert max(scores, key=scores.get) == expected
    assert scores[expected] >= 0.7
    assert sorted(scores.values())[-2] <= 0.1


def test_contract_json_and_other_resolvers_lines_score_low():
    assert all(cls.sniff(CONTRACT_LINES) <= 0.1 for cls in ALL_ADAPTERS)
    assert all(cls.sniff([]) == 0.0 for cls in ALL_ADAPTERS)


PREFIXES = [b"[1795774502] unbound[811:0] reply: ", b"[1795774502] unbound[811:0] error: SERVFAIL <",
            b"27-Nov-2026 10:15:02.000 query-errors: info: client @0x7f 10.0.0.5#1 (a): query failed (",
            b"Nov 27 10:15:12 ns1 named[811]: client 10.0.0.5#1: query (cache) '",
            b'2026-11-27T10:15:02Z [INFO] 10.0.0.5:1 - 1 "', b"2026-11-27T10:15:02Z [ERROR] plugin/errors: ",
            b'{"log":"[INFO] ', b"10.0.0.5 - [27/Nov/2026:10:15:02 +0000] \""]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.builds(lambda prefix, tail: prefix + tail.encode("utf-8", "surrogatepass"),
              st.sampled_from(PREFIXES), st.text(max_size=200)),
    st.sampled_from(fixture_lines("unbound.log") + fixture_lines("bind.log")
                    + fixture_lines("coredns.log")),
), max_size=30))
def test_no_input_makes_a_resolver_adapter_raise_and_every_record_parses(lines):
    for adapter in (Unbound(year=2026), Bind(year=2026), CoreDns(year=2026)):
        out = adapter.feed(lines)
        assert len(out.rejected) + out.skipped <= len(lines)
        adapter.restore(orjson.loads(orjson.dumps(adapter.snapshot())))
        for raw in out.records + adapter.flush().records:
            parse_dns(raw)

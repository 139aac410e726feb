"""Zeek dns.log and smtp.log, TSV and JSON: given these lines, these contract records.

Every record an adapter emits goes through the project's own parser (``parse_dns``/``parse_mail``,
in ``formats_helpers.feed_and_flush``), so "the adapter produced it" always means "the core accepts
it"."""

from __future__ import annotations

import orjson
import pytest
from formats_helpers import (ALL_ADAPTERS, CONTRACT_LINES, feed_and_flush, fixture_lines,
                             sniff_scores)
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core.records import parse_dns, parse_mail
from detector.formats.zeek import DNS_DEFAULT_FIELDS, ZeekDns, ZeekSmtp, status_of_reply

T = "\t"
DNS_HEADER = [
    "#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
    "#path\tdns", "#open\t2026-11-27-10-00-00", "#fields\t" + T.join(DNS_DEFAULT_FIELDS),
]


def encode(lines: list[str]) -> list[bytes]:
    return [line.encode() for line in lines]


def dns_row(ts="1795774502.000000", query="bank.example", qtype="TXT", rcode="0",
            rcode_name="NOERROR", answers="192.0.2.1", rtt="0.010000", rejected="F",
            orig="10.0.0.5", resp="10.0.0.53", resp_p="53") -> str:
    return T.join([ts, "CxT9z", orig, "41234", resp, resp_p, "udp", "1001", rtt, query, "1",
                   "C_INTERNET", "16", qtype, rcode, rcode_name, "F", "F", "T", "T", "0", answers,
                   "-", rejected])


def outcomes(records: list[dict]) -> list[str]:
    return [parse_dns(orjson.dumps(r)).outcome for r in records]


# -- dns.log ----------------------------------------------------------------------------------------

def test_dns_tsv_gives_every_outcome_the_log_can_express():
    records, out = feed_and_flush(ZeekDns(), fixture_lines("zeek_dns.log"))
    assert outcomes(records) == ["NOERROR", "NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED",
                                 "TIMEOUT", "NOERROR", "SERVFAIL"]
    assert out.rejected == []
    # 8 + 9 header lines, one #close between them, and the mDNS query
    assert out.skipped == 19
    assert {r["client"] for r in records} == {"10.0.0.5", "10.0.0.6", "10.0.0.7"}
    assert records[1]["answers"] == ["192.0.2.10", "192.0.2.11"]


def test_dns_json_gives_the_same_records_with_epoch_or_iso_times_and_nested_ids():
    records, out = feed_and_flush(ZeekDns(), fixture_lines("zeek_dns.json"))
    assert out.rejected == []
    assert outcomes(records) == ["NOERROR", "NODATA", "SERVFAIL", "TIMEOUT", "NXDOMAIN"]
    assert records[1]["ts"] == pytest.approx(1795774503.0205)   # ISO ts + rtt
    assert records[4]["client"] == "10.0.0.7" and records[4]["resolver"] == "10.0.0.54"


def test_the_answer_time_is_the_query_time_plus_rtt_and_an_unanswered_query_keeps_its_time():
    records, _ = feed_and_flush(ZeekDns(), encode(DNS_HEADER + [
        dns_row(rtt="0.250000"), dns_row(rtt="-", rcode="-", rcode_name="-", answers="-")]))
    assert records[0]["ts"] == pytest.approx(1795774502.25)
    assert records[0]["latency_ms"] == 250.0
    assert records[1] == {"ts": 1795774502.0, "qname": "bank.example", "rcode": "TIMEOUT",
                          "qtype": "TXT", "client": "10.0.0.5", "resolver": "10.0.0.53"}


def test_zeeks_rejected_flag_never_overrides_the_logged_rcode():
    # Zeek sets rejected=T for any reply without records: a SERVFAIL, or a NODATA without SOA.
    records, _ = feed_and_flush(ZeekDns(), encode(DNS_HEADER + [
        dns_row(rcode="2", rcode_name="SERVFAIL", answers="-", rejected="T"),
        dns_row(rcode="0", rcode_name="NOERROR", answers="-", rejected="T"),
        dns_row(rcode="5", rcode_name="-", answers="-", rejected="T"),  # only the number: REFUSED
        dns_row(rcode="-", rcode_name="-", answers="-", rejected="T"),  # no rcode at all: REFUSED
    ]))
    assert outcomes(records) == ["SERVFAIL", "NODATA", "REFUSED", "REFUSED"]


def test_multicast_and_netbios_name_queries_are_skipped_not_read_as_timeouts():
    records, out = feed_and_flush(ZeekDns(), encode(DNS_HEADER + [
        dns_row(rcode="-", rcode_name="-", answers="-", resp="224.0.0.251", resp_p="5353"),
        dns_row(rcode="-", rcode_name="-", answers="-", resp="224.0.0.252", resp_p="5355"),
        dns_row(rcode="-", rcode_name="-", answers="-", resp="10.0.0.255", resp_p="137"),
    ]))
    assert records == [] and out.skipped == len(DNS_HEADER) + 3
    kept, _ = feed_and_flush(ZeekDns(skip_ports=frozenset()), encode(DNS_HEADER + [
        dns_row(rcode="-", rcode_name="-", answers="-", resp="224.0.0.251", resp_p="5353")]))
    assert outcomes(kept) == ["TIMEOUT"]


def test_a_new_header_mid_file_remaps_the_columns():
    moved = ["query", "ts", "rcode_name", "id.orig_h"]
    lines = DNS_HEADER + [dns_row(query="first.example"), "#close\t2026-11-27-11-00-00",
                          "#separator \\x09", "#fields\t" + T.join(moved),
                          T.join(["second.example", "1795778102.0", "NXDOMAIN", "10.0.0.9"])]
    records, out = feed_and_flush(ZeekDns(), encode(lines))
    assert [(r["qname"], r.get("client")) for r in records] == [("first.example", "10.0.0.5"),
                                                                 ("second.example", "10.0.0.9")]
    assert outcomes(records) == ["NOERROR", "NXDOMAIN"]


def test_the_header_survives_between_batches_and_through_snapshot_and_restore():
    moved = ["query", "ts", "rcode_name"]
    first = ZeekDns()
    first.feed(encode(["#separator \\x09", "#unset_field\t-", "#fields\t" + T.join(moved)]))
    second = ZeekDns()
    second.restore(orjson.loads(orjson.dumps(first.snapshot())))
    for adapter in (first, second):
        records, _ = feed_and_flush(
            adapter, encode([T.join(["bank.example", "1795774502.0", "SERVFAIL"])]))
        assert outcomes(records) == ["SERVFAIL"]


def test_rows_before_any_header_are_read_in_zeeks_default_order_only_when_they_fit_it():
    records, out = feed_and_flush(
        ZeekDns(), encode([dns_row(), T.join(["bank.example", "1795774502.0"])]))
    assert outcomes(records) == ["NOERROR"]
    assert out.rejected == [(1, "no_header")]


def test_separators_and_escapes_follow_the_header():
    lines = ["#separator \\x7c", "#set_separator|;", "#empty_field|(empty)", "#unset_field|-",
             "#fields|ts|query|rcode_name|answers",
             "1795774502.0|tab\\x09name.example|NOERROR|v=spf1 a\\x3bb;192.0.2.1",
             "1795774503.0|empty.example|NOERROR|(empty)"]
    records, out = feed_and_flush(ZeekDns(), encode(lines))
    assert out.rejected == []
    assert records[0]["qname"] == "tab\tname.example"
    assert records[0]["answers"] == ["v=spf1 a;b", "192.0.2.1"]
    assert outcomes(records) == ["NOERROR", "NODATA"]


@pytest.mark.parametrize("line,reason", [
    (dns_row()[:60], "truncated"),                                       # cut mid-row
    (dns_row() + "\textra", "bad_columns"),
    (dns_row(ts="yesterday"), "bad_ts"),
    (dns_row(ts="-5.0"), "bad_ts"),
    (dns_row(ts="1e12"), "bad_ts"),                                       # ms, not seconds
    ('{"ts": 1795774502.0, "uid": "Cx", "query": "bank.exa', "truncated"),
    ('{"ts": 1795774502.0, "qname": "bank.example", "rcode": "SERVFAIL"}', "not_zeek_dns"),
    ('{"ts": 1795774502.0, "uid": "Cx", "id.orig_h": "10.0.0.5", "query": "x", "rcode_name": 5',
     "truncated"),
    ('{"ts": [], "uid": "Cx", "query": "bank.example"}', "bad_ts"),
    ("[1, 2, 3]", "not_zeek_dns"),
])
def test_malformed_dns_lines_are_rejected_with_a_reason(line, reason):
    _, out = feed_and_flush(ZeekDns(), encode(DNS_HEADER + [line]))
    assert out.rejected == [(len(DNS_HEADER), reason)]


def test_an_smtp_log_fed_as_dns_is_not_zeek_dns_and_a_huge_line_is_too_large():
    _, out = feed_and_flush(ZeekDns(), fixture_lines("zeek_smtp.log") + [b"x" * 70_000])
    reasons = {reason for _, reason in out.rejected}
    assert reasons == {"not_zeek_dns", "too_large"}


def test_invalid_utf8_in_a_name_still_gives_a_record_the_core_accepts():
    raw = DNS_HEADER + [dns_row(query="b\udcffank.example")]
    lines = [line.encode("utf-8", "surrogateescape") for line in raw]
    records, out = feed_and_flush(ZeekDns(), lines)
    assert out.rejected == [] and records[0]["qname"] == "b\ufffdank.example"


# -- smtp.log ---------------------------------------------------------------------------------------

def test_smtp_tsv_one_record_per_recipient_with_the_status_of_the_last_reply():
    records, out = feed_and_flush(ZeekSmtp(), fixture_lines("zeek_smtp.log"))
    assert out.rejected == []
    assert [(r["recipient"], r["status"], r.get("status_code")) for r in records] == [
        ("alice@corp.example", "delivered", "2.0.0"),
        ("bob@corp.example", "deferred", "4.4.3"),
        ("carol@corp.example", "failed", "5.7.26"),
        ("dave@corp.example", "failed", "5.7.26"),
        ("erin@corp.example", "pending", "2.0.0"),      # 221 is the QUIT reply: not a verdict
    ]
    assert [r["message_id"] for r in records[2:4]] == ["<c3@bank.example>/carol@corp.example",
                                                       "<c3@bank.example>/dave@corp.example"]
    assert records[3]["message_id"] != records[2]["message_id"]
    assert {r["server"] for r in records} == {"10.0.0.5"}     # the receiving host, not the HELO
    assert records[0]["sender"] == "otp@bank.example"
    assert records[0]["subject"] == "Your one-time code"
    # the STARTTLS session (no sender, no recipient) and the header lines are skipped
    assert out.skipped == 8 + 1 + 1


def test_smtp_json_falls_back_to_the_connection_and_transaction_for_the_message_id():
    records, out = feed_and_flush(ZeekSmtp(), fixture_lines("zeek_smtp.json"))
    assert out.rejected == []
    assert [r["message_id"] for r in records] == ["<a1@bank.example>/alice@corp.example",
                                                  "CjM1b-1/bob@corp.example",
                                                  "CjM1b-1/carol@corp.example"]
    assert records[1]["ts"] == pytest.approx(1795774504.1)


def test_a_transaction_without_a_reply_is_pending_and_without_recipients_keeps_the_base_id():
    line = orjson.dumps({"ts": 1795774502.0, "uid": "CjM9", "trans_depth": 3,
                         "id.resp_h": "10.0.0.5", "mailfrom": "otp@bank.example"})
    records, _ = feed_and_flush(ZeekSmtp(), [line])
    assert records == [{"ts": 1795774502.0, "status": "pending", "sender": "otp@bank.example",
                        "server": "10.0.0.5", "message_id": "CjM9-3"}]


@pytest.mark.parametrize("reply,status", [
    ("250 2.0.0 Ok: queued as 4F1A2B3C", "delivered"),
    ("251 2.1.5 User not local; will forward", "delivered"),
    ("421 4.4.2 Connection dropped", "deferred"),
    ("450 4.7.25 Client host rejected: cannot find your hostname", "deferred"),
    ("554 5.7.1 Service unavailable", "failed"),
    ("354 End data with <CR><LF>.<CR><LF>", "pending"),   # cut off during DATA
    ("221 2.0.0 Bye", "pending"),
    ("", "pending"),
    ("OK", "pending"),
])
def test_reply_classes(reply, status):
    assert status_of_reply(reply) == status


# -- sniffing and robustness ------------------------------------------------------------------------

@pytest.mark.parametrize("fixture,expected", [
    ("zeek_dns.log", "zeek-dns"), ("zeek_dns.json", "zeek-dns"),
    ("zeek_smtp.log", "zeek-smtp"), ("zeek_smtp.json", "zeek-smtp"),
])
def test_sniff_picks_the_zeek_log_it_is(fixture, expected):
    scores = sniff_scores(fixture)
    assert max(scores, key=scores.get) == expected
    assert scores[expected] >= 0.8
    assert sorted(scores.values())[-2] <= 0.1


def test_contract_json_lines_are_not_mistaken_for_zeek():
    assert all(cls.sniff(CONTRACT_LINES) <= 0.1 for cls in ALL_ADAPTERS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.builds(lambda tail: ("1795774502.0\t" + tail).encode(), st.text(max_size=200)),
    st.builds(lambda tail: ('{"ts": 1795774502, "uid": "C", "query": ' + tail).encode(),
              st.text(max_size=100)),
    st.sampled_from(encode(DNS_HEADER) + fixture_lines("zeek_smtp.log")[:8]),
), max_size=30))
def test_no_input_makes_a_zeek_adapter_raise_and_every_record_parses(lines):
    for adapter in (ZeekDns(), ZeekSmtp()):
        out = adapter.feed(lines)
        assert len(out.rejected) + out.skipped <= len(lines)
        parse = parse_dns if adapter.stream == "dns" else parse_mail
        for raw in out.records:
            parse(raw)
        adapter.restore(orjson.loads(orjson.dumps(adapter.snapshot())))

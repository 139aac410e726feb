"""The Microsoft 365 message trace adapter: given these trace rows, these contract records.

``convert`` (``formats_helpers``) checks every record against the parser and the schema.
"""

import json

import orjson
import pytest
from formats_helpers import convert, fixture_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.formats.m365 import M365Adapter, dns_outcome_of_exchange
from detector.formats.postfix import PostfixAdapter

HEADER = (b"Received,SenderAddress,RecipientAddress,Subject,Status,ToIP,FromIP,Size,MessageId,"
          b"MessageTraceId")


def test_a_summary_csv_export_with_bom_type_line_and_every_status():
    records, rejected, skipped = convert(M365Adapter(), fixture_lines("m365_trace_summary.csv"))
    assert skipped == 2                                   # the #TYPE line and the header
    assert [(r["recipient"], r["status"]) for r in records] == [
        ("ann@contoso.example", "delivered"), ("bob@contoso.example", "failed"),
        ("cat@contoso.example", "pending"), ("dan@contoso.example", "pending"),
        ("eve@contoso.example", "filtered"), ("fay@contoso.example", "quarantined"),
        ("list@contoso.example", "expanded"), ("gus@contoso.example", "getting_status")]
    assert rejected == [(10, "bad_value:status"), (11, "truncated")]   # "None"; a cut-off last row


def test_a_summary_row_becomes_this_record():
    records, _, _ = convert(M365Adapter(), fixture_lines("m365_trace_summary.csv"))
    assert records[1] == {
        "ts": "2026-11-27T10:15:03Z",
        "message_id": "<otp-2002@bank.example>/bob@contoso.example",
        "status": "failed",
        "sender": "otp@bank.example",
        "recipient": "bob@contoso.example",
        "subject": "Your sign-in code",
    }
    assert records[2]["subject"] == 'Your sign-in code, "urgent"'


def test_recipients_of_one_message_are_distinct_records_for_de_duplication():
    records, _, _ = convert(M365Adapter(), fixture_lines("m365_trace_summary.csv"))
    same = [r for r in records if r["message_id"].startswith("<otp-2003@bank.example>/")]
    assert len({(r["message_id"], r["status"]) for r in same}) == 2


def test_columns_are_mapped_by_name_in_any_order_with_iso_times_and_the_trace_id_fallback():
    records, rejected, _ = convert(M365Adapter(), fixture_lines("m365_trace_reordered.csv"))
    assert rejected == []
    assert [(r["ts"], r["message_id"], r["tenant"]) for r in records] == [
        ("2026-11-27T10:15:02.123Z", "<otp-3001@bank.example>/ann@fabrikam.example",
         "fabrikam.onmicrosoft.com"),
        ("2026-11-27T10:15:03.500Z", "<otp-3002@bank.example>/bob@fabrikam.example",
         "fabrikam.onmicrosoft.com"),
        ("2026-11-27T10:15:04Z", "8a1b2c3d-0000-4000-8000-000000000003/cat@fabrikam.example",
         "fabrikam.onmicrosoft.com")]


def test_detail_events_give_the_dns_verdict_and_the_status_code():
    records, rejected, skipped = convert(M365Adapter(), fixture_lines("m365_trace_detail.jsonl"))
    assert (rejected, skipped) == ([], 1)                   # the Receive step
    assert [(r["recipient"], r["status"], r.get("status_code"), r.get("dns_outcome"))
            for r in records] == [
        ("bob@contoso.example", "deferred", "4.4.312", "SERVFAIL"),
        ("bob@contoso.example", "failed", "5.4.310", "NXDOMAIN"),
        ("kim@contoso.example", "deferred", "4.4.312", "TIMEOUT"),
        ("lee@contoso.example", "deferred", "4.4.312", "NODATA"),
        ("max@contoso.example", "deferred", "4.4.0", "NXDOMAIN"),
        ("ned@contoso.example", "deferred", "4.4.316", None),
        ("oli@contoso.example", "deferred", "4.7.24", "SERVFAIL"),
        ("pat@contoso.example", "delivered", None, None),
        ("quinn@contoso.example", "deferred", "4.4.0", "SERVFAIL")]
    fail = records[1]
    assert fail["ts"] == "2026-11-27T10:15:03Z"
    assert fail["tenant"] == "contoso.onmicrosoft.com"
    assert fail["message_id"] == "<otp-2002@bank.example>/bob@contoso.example"


def test_a_summary_failure_and_its_fail_event_share_the_de_duplication_key():
    summary, _, _ = convert(M365Adapter(), fixture_lines("m365_trace_summary.csv"))
    detail, _, _ = convert(M365Adapter(), fixture_lines("m365_trace_detail.jsonl"))
    key = ("<otp-2002@bank.example>/bob@contoso.example", "failed")
    assert key in {(r["message_id"], r["status"]) for r in summary}
    assert key in {(r["message_id"], r["status"]) for r in detail}


def test_json_lines_and_json_arrays_give_the_same_records_as_csv():
    row = {"Received": "2026-11-27T10:15:02.1234567", "SenderAddress": "otp@bank.example",
           "RecipientAddress": "ann@contoso.example", "Subject": "Your code", "Status": "Delivered",
           "Size": 8123, "MessageId": "<j1@bank.example>", "MessageTraceId": "t1"}
    other = dict(row, RecipientAddress="bob@contoso.example", Status="Failed")
    one_per_line, _, _ = convert(M365Adapter(), [orjson.dumps(row), orjson.dumps(other)])
    whole_array, _, _ = convert(M365Adapter(), [orjson.dumps([row, other])])
    element_per_line, rejected, skipped = convert(M365Adapter(), [
        b"[", orjson.dumps(row) + b",", orjson.dumps(other), b"]"])
    assert one_per_line == whole_array == element_per_line
    assert (rejected, skipped) == ([], 2)
    csv_records, _, _ = convert(M365Adapter(), [
        HEADER, b'2026-11-27T10:15:02.1234567,otp@bank.example,ann@contoso.example,Your code,'
                b'Delivered,,,8123,<j1@bank.example>,t1'])
    assert csv_records == one_per_line[:1]
    lower, _, _ = convert(M365Adapter(), [orjson.dumps({k.lower(): v for k, v in row.items()})])
    assert lower == one_per_line[:1]


def test_powershell_5_json_dates_are_read():
    row = {"Received": "/Date(1795774502123)/", "Status": "Delivered", "MessageId": "<d@x>",
           "RecipientAddress": "a@b.example"}
    records, _, _ = convert(M365Adapter(), [orjson.dumps(row)])
    assert records[0]["ts"] == "2026-11-27T10:15:02.123Z"


@pytest.mark.parametrize("received,expected", [
    ("11/27/2026 10:15:02 AM", "2026-11-27T10:15:02Z"),
    ("11/27/2026 10:15:02 PM", "2026-11-27T22:15:02Z"),
    ("11/27/2026 12:05:02 AM", "2026-11-27T00:05:02Z"),
    ("11/27/2026 12:05:02 PM", "2026-11-27T12:05:02Z"),
    ("11/27/2026 22:15:02", "2026-11-27T22:15:02Z"),
    ("2026-11-27T10:15:02.1234567", "2026-11-27T10:15:02.123Z"),
    ("2026-11-27T11:15:02+01:00", "2026-11-27T10:15:02Z"),
])
def test_received_times_in_every_export_form(received, expected):
    records, _, _ = convert(M365Adapter(), [HEADER, f'"{received}",a@b,c@d,s,Delivered,,,1,<m>,t'
                                            .encode()])
    assert records[0]["ts"] == expected


def test_the_header_is_kept_across_batches_through_snapshot_and_restore():
    first = M365Adapter()
    assert convert(first, [HEADER]) == ([], [], 1)
    second = M365Adapter()
    second.restore(json.loads(json.dumps(first.snapshot())))
    records, rejected, _ = convert(second, [b"2026-11-27T10:15:02,a@b,c@d,s,Failed,,,1,<m>,t"])
    assert (rejected, [r["status"] for r in records]) == ([], ["failed"])
    assert convert(M365Adapter(), [b"2026-11-27T10:15:02,a@b,c@d,s,Failed,,,1,<m>,t"])[1] == [
        (0, "no_header")]


@pytest.mark.parametrize("line,reason", [
    (b"13/45/2026 10:15:02 AM,a@b,c@d,s,Failed,,,1,<m>,t", "bad_ts"),
    (b"11/27/2026 13:15:02 PM,a@b,c@d,s,Failed,,,1,<m>,t", "bad_ts"),
    (b"yesterday,a@b,c@d,s,Failed,,,1,<m>,t", "bad_ts"),
    (b",a@b,c@d,s,Failed,,,1,<m>,t", "missing_field:Received"),
    (b"2026-11-27T10:15:02,a@b,c@d,s,,,,1,<m>,t", "missing_field:Status"),
    (b"2026-11-27T10:15:02,a@b,c@d,s,Bounced,,,1,<m>,t", "bad_value:status"),
    (b"2026-11-27T10:15:02,a@b,c@d,s,Failed,,,1,,", "missing_field:MessageId"),
    (b"2026-11-27T10:15:02,a@b,c@d,s,Failed", "truncated"),
    (b'2026-11-27T10:15:02,a@b,c@d,"Your code', "truncated"),
    (b"2026-11-27T10:15:02,a@b,c@d,s,Failed,,,1,<m>,t,extra", "bad_value:columns"),
    (b'{"Received": "2026-11-27T10:15:02", "Status": "Fai', "truncated"),
    (b'{"Received": 1795774502, "Status": 7, "MessageId": "m"}', "wrong_type:Status"),
    (b'{"Received": ["x"], "Status": "Failed", "MessageId": "m"}', "wrong_type:Received"),
    (b'{"Received": "2026-11-27T10:15:02Z", "Status": "Failed", "MessageId": 5}',
     "wrong_type:MessageId"),
    (b'{"ts": "2026-11-27T10:15:02Z", "message_id": "m", "status": "failed"}',
     "missing_field:Received"),                                  # a contract record is not a trace
    (b"[1, 2]", "not_object"),
    (b"{oops}", "not_json"),
])
def test_malformed_and_truncated_rows_are_rejected_with_a_reason(line, reason):
    records, rejected, _ = convert(M365Adapter(), [HEADER, line])
    assert records == []
    assert rejected[0] == (1, reason)


def test_a_line_larger_than_the_bound_is_too_large():
    records, rejected, _ = convert(M365Adapter(max_line_bytes=100), [b"{" + b" " * 200 + b"}"])
    assert (records, rejected) == ([], [(0, "too_large")])


@pytest.mark.parametrize("detail,outcome", [
    ("450 4.4.312 DNS query failed(ServerFailure)", "SERVFAIL"),
    ("451 4.4.0 DNS query failed. The error was: DNS query failed with error ErrorRetry",
     "SERVFAIL"),
    ("450 4.4.312 DNS query failed(ErrorTimeout)", "TIMEOUT"),
    ("550 5.4.310 DNS domain x.example does not exist [Message=InfoDomainNonexistent]", "NXDOMAIN"),
    ("451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent "
     "domain", "NXDOMAIN"),
    ("450 4.4.312 DNS query failed(InfoNoRecords)", "NODATA"),
    ("450 4.4.315 Connection timed out [LastAttemptedServerName=mx.dns-host.example]", None),
    ("450 4.4.316 Connection refused [Message=Socket error code 10061]", None),
    ("450 4.4.317 Cannot connect to remote server", None),
    ("450 4.4.318 Connection was closed abruptly", None),
    ("451 4.7.24 SPF validation error: temperror", "SERVFAIL"),
    ("Remote server returned '451 4.7.1 SPF Temporary Error: DNS Timeout'", "TIMEOUT"),
    ("550 5.7.509 Access denied, sending domain x.example does not pass DMARC verification", None),
    ("The message was successfully delivered.", None),
])
def test_dns_verdicts_in_exchange_detail_texts(detail, outcome):
    assert dns_outcome_of_exchange(detail) == outcome


def test_sniff_picks_m365_and_scores_other_formats_low():
    assert M365Adapter.sniff(fixture_lines("m365_trace_summary.csv")) >= 0.9
    assert M365Adapter.sniff(fixture_lines("m365_trace_reordered.csv")) >= 0.9
    assert M365Adapter.sniff(fixture_lines("m365_trace_detail.jsonl")) >= 0.9
    row = b'{"Received": "x", "Status": "Failed", "MessageId": "m"}'
    assert M365Adapter.sniff([b"[", row + b","]) >= 0.9
    assert M365Adapter.sniff([b"[" + row + b"," + row + b"]"]) >= 0.9
    contract = [b'{"ts": "2026-11-27T10:15:02Z", "message_id": "m1", "status": "failed"}'] * 5
    assert M365Adapter.sniff(contract) == 0.0
    assert M365Adapter.sniff(fixture_lines("postfix_dns_failures.log")) == 0.0
    assert PostfixAdapter.sniff(fixture_lines("m365_trace_summary.csv")) == 0.0
    assert M365Adapter.sniff([b"a,b,c", b"1,2,3"]) == 0.0
    assert M365Adapter.sniff([]) == 0.0


REAL_LINES = (fixture_lines("m365_trace_summary.csv") + fixture_lines("m365_trace_reordered.csv")
              + fixture_lines("m365_trace_detail.jsonl"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), max_size=20))
def test_never_raises_on_random_bytes(lines):
    adapter = M365Adapter()
    convert(adapter, [HEADER] + lines)
    M365Adapter.sniff(lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(REAL_LINES), st.integers(0, 400),
                          st.binary(max_size=8)), max_size=20))
def test_never_raises_on_real_rows_cut_anywhere_and_spliced_with_junk(cuts):
    lines = [line[:cut] + junk for line, cut, junk in cuts]
    adapter = M365Adapter()
    convert(adapter, lines)
    M365Adapter.sniff(lines)
    restored = M365Adapter()
    restored.restore(json.loads(json.dumps(adapter.snapshot())))
    convert(restored, lines)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["Received", "Status", "MessageId", "RecipientAddress",
                                        "SenderAddress", "Subject", "Event", "Detail", "Date",
                                        "Organization", "Directionality"]),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text()
                       | st.lists(st.integers(), max_size=2)))
def test_never_raises_on_json_objects_of_any_field_types(row):
    convert(M365Adapter(), [json.dumps(row).encode()])

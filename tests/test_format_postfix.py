"""The Postfix maillog adapter: given these maillog lines, these contract records.

Every record an adapter emits must pass the project's own parser and the contract's schema, so
each test converts through ``convert`` (``formats_helpers``) which checks both.
"""

import json
from datetime import datetime, timezone

import pytest
from formats_helpers import convert, fixture_lines
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.formats.m365 import M365Adapter
from detector.formats.postfix import PostfixAdapter, dns_outcome_of_detail


def by_recipient(records):
    return {record.get("recipient"): record for record in records}


def test_a_maillog_with_every_dns_outcome_postfix_can_log():
    records, rejected, skipped = convert(PostfixAdapter(year=2026),
                                         fixture_lines("postfix_dns_failures.log"))
    assert rejected == []
    assert skipped == 23 - len(records)
    seen = {rcpt: (r["status"], r.get("dns_outcome"), r.get("status_code"))
            for rcpt, r in by_recipient(records).items()}
    assert seen == {
        "ann@mail.example": ("delivered", None, "2.0.0"),
        "bob@slow.example": ("deferred", "SERVFAIL", "4.4.3"),
        "cat@gone.example": ("failed", "NXDOMAIN", "5.4.4"),
        "dan@nomx.example": ("failed", "NODATA", "5.4.4"),
        "eve@strict.example": ("deferred", "TIMEOUT", "4.7.24"),
        "fay@lame.example": ("deferred", "REFUSED", "4.4.3"),
        "gus@void.example": ("failed", "NOERROR", "5.1.0"),
        "hal@down.example": ("deferred", None, "4.4.1"),
        "ivy@bank.example": ("failed", "NXDOMAIN", "5.1.8"),
    }


def test_a_delivery_record_carries_the_queue_ids_sender_message_id_server_and_time():
    records, _, _ = convert(PostfixAdapter(year=2026), fixture_lines("postfix_dns_failures.log"))
    bob = by_recipient(records)["bob@slow.example"]
    assert bob == {
        "ts": "2026-11-27T10:15:02Z",
        "message_id": "<otp-1002@bank.example>/bob@slow.example",
        "status": "deferred",
        "recipient": "bob@slow.example",
        "sender": "otp@bank.example",
        "server": "mx1",
        "direction": "outbound",
        "status_code": "4.4.3",
        "detail": "Host or domain name not found. Name service error for name=slow.example "
                  "type=MX: Host not found, try again",
        "dns_outcome": "SERVFAIL",
    }


def test_each_recipient_of_one_message_is_its_own_record_for_de_duplication():
    records, _, _ = convert(PostfixAdapter(year=2026), fixture_lines("postfix_dns_failures.log"))
    one_message = [r for r in records if r["message_id"].startswith("<otp-1002@bank.example>/")]
    assert len(one_message) == 3
    assert len({(r["message_id"], r["status"]) for r in one_message}) == 3


def test_a_delivery_whose_from_line_was_never_seen_has_no_sender_and_a_queue_id_message_id():
    records, _, _ = convert(PostfixAdapter(year=2026), fixture_lines("postfix_dns_failures.log"))
    fay = by_recipient(records)["fay@lame.example"]
    assert "sender" not in fay
    assert fay["message_id"] == "8A40B5C6D7@mx1/fay@lame.example"


def test_a_noqueue_reject_is_a_failed_inbound_attempt_with_a_replayable_id():
    records, _, _ = convert(PostfixAdapter(year=2026), fixture_lines("postfix_dns_failures.log"))
    ivy = by_recipient(records)["ivy@bank.example"]
    assert ivy["sender"] == "code@broken.example"
    assert ivy["message_id"] == ("NOQUEUE@mx1/2026-11-27T10:15:07Z/code@broken.example/"
                                 "ivy@bank.example")
    assert ivy["detail"].startswith("550 5.1.8 <code@broken.example>: Sender address rejected")
    again, _, _ = convert(PostfixAdapter(year=2026), fixture_lines("postfix_dns_failures.log"))
    assert by_recipient(again)["ivy@bank.example"] == ivy


@pytest.mark.parametrize("line,expected_ts", [
    ("Nov 27 10:15:02 mx1 postfix/smtp[1]: ", "2026-11-27T10:15:02Z"),
    ("<22>Nov  7 10:15:02 mx1 postfix/smtp[1]: ", "2026-11-07T10:15:02Z"),
    ("<22>1 2026-11-27T10:15:02.123+00:00 mx1 postfix/smtp 1 - - ", "2026-11-27T10:15:02.123Z"),
    ("<22>1 2026-11-27T11:15:02.123+01:00 mx1 postfix/smtp 1 - [a b=\"c\\]\"][d e=\"f\"] ",
     "2026-11-27T10:15:02.123Z"),
    ("2026-11-27T10:15:02.123456+00:00 mx1 postfix/smtp[1]: ", "2026-11-27T10:15:02.123Z"),
    ("2026-11-27T11:15:02+0100 mx1 postfix/smtp[1]: ", "2026-11-27T10:15:02Z"),
    ("Nov 27 10:15:02 mx1 postfix/smtp[1]: [ID 197553 mail.info] ", "2026-11-27T10:15:02Z"),
    ("Nov 27 10:15:02 mx1 postfix-out/smtp[1]: ", "2026-11-27T10:15:02Z"),
    ("Nov 27 10:15:02 mx1 postfix/submission/smtp[1]: ", "2026-11-27T10:15:02Z"),
    ("Nov 27 10:15:02 postfix/smtp[1]: ", "2026-11-27T10:15:02Z"),       # no host in the header
])
def test_every_syslog_header_variant_gives_the_same_delivery(line, expected_ts):
    delivery = ("0A1B2C3D4E: to=<a@one.example>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.3, "
                "status=deferred (Host or domain name not found. Name service error for "
                "name=one.example type=MX: Host not found, try again)")
    records, rejected, _ = convert(PostfixAdapter(year=2026), [(line + delivery).encode()])
    assert rejected == []
    assert [(r["ts"], r["status"], r["dns_outcome"]) for r in records] == [
        (expected_ts, "deferred", "SERVFAIL")]


def test_the_header_variants_fixture_converts_line_for_line():
    records, rejected, skipped = convert(PostfixAdapter(year=2026),
                                         fixture_lines("postfix_header_variants.log"))
    assert (len(records), rejected, skipped) == (8, [], 0)
    assert {r.get("server") for r in records} == {"mx1"}
    reject = records[-1]
    assert (reject["status"], reject["status_code"], reject.get("dns_outcome")) == (
        "deferred", "4.1.8", None)   # a 450 "Domain not found" is missing or temporary: join


def test_classic_headers_roll_into_the_new_year_and_keep_late_lines_in_the_old_one():
    def line(stamp, n):
        return (f"{stamp} mx1 postfix/smtp[1]: 0A1B2C3D{n:02d}: to=<a@x.example>, relay=none, "
                f"delay=1, dsn=2.0.0, status=sent (250 ok)").encode()

    adapter = PostfixAdapter(year=2026)
    records, _, _ = convert(adapter, [line("Dec 31 23:59:59", 1), line("Jan  1 00:00:01", 2),
                                      line("Dec 31 23:59:58", 3), line("Jan  1 00:00:02", 4)])
    assert [r["ts"] for r in records] == ["2026-12-31T23:59:59Z", "2027-01-01T00:00:01Z",
                                          "2026-12-31T23:59:58Z", "2027-01-01T00:00:02Z"]
    restored = PostfixAdapter()
    restored.restore(json.loads(json.dumps(adapter.snapshot())))
    records, _, _ = convert(restored, [line("Feb  3 08:00:00", 5)])
    assert records[0]["ts"] == "2027-02-03T08:00:00Z"


def test_without_a_year_classic_headers_take_the_current_utc_year():
    now = datetime.now(timezone.utc)
    line = (f"{now:%b} {now.day:2d} 00:00:00 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, "
            f"relay=none, delay=1, dsn=2.0.0, status=sent (250 ok)").encode()
    records, _, _ = convert(PostfixAdapter(), [line])
    assert records[0]["ts"].startswith(f"{now.year}-")


def test_classic_headers_in_a_local_zone_become_utc():
    line = (b"Nov 27 11:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=none, "
            b"delay=1, dsn=2.0.0, status=sent (250 ok)")
    records, _, _ = convert(PostfixAdapter(year=2026, tz="Europe/Berlin"), [line])
    assert records[0]["ts"] == "2026-11-27T10:15:02Z"


def test_a_queue_continues_across_two_batches_through_snapshot_and_restore():
    first = PostfixAdapter(year=2026)
    records, _, skipped = convert(first, [
        b"Nov 27 10:15:00 mx1 postfix/cleanup[9]: 9C8B7A6F5E: message-id=<otp-9@bank.example>",
        b"Nov 27 10:15:00 mx1 postfix/qmgr[8]: 9C8B7A6F5E: from=<otp@bank.example>, size=900, "
        b"nrcpt=2 (queue active)"])
    assert (records, skipped) == ([], 2)
    state = json.loads(json.dumps(first.snapshot()))     # the state must survive JSON
    second = PostfixAdapter()
    second.restore(state)
    records, _, _ = convert(second, [
        b"Nov 27 10:15:02 mx1 postfix/smtp[7]: 9C8B7A6F5E: to=<ann@a.example>, relay=none, "
        b"delay=2, dsn=4.4.3, status=deferred (Host or domain name not found. Name service "
        b"error for name=a.example type=MX: Host not found, try again)",
        b"Nov 27 10:15:03 mx1 postfix/smtp[7]: 9C8B7A6F5E: to=<bob@b.example>, "
        b"relay=mx.b.example[192.0.2.4]:25, delay=3, dsn=2.0.0, status=sent (250 2.0.0 Ok)"])
    assert [(r["message_id"], r["sender"], r["ts"][:4]) for r in records] == [
        ("<otp-9@bank.example>/ann@a.example", "otp@bank.example", "2026"),
        ("<otp-9@bank.example>/bob@b.example", "otp@bank.example", "2026")]
    assert second.flush().records == []


def test_queue_state_is_bounded_oldest_first_and_forgotten_at_removed():
    adapter = PostfixAdapter(year=2026, max_queue_ids=2)
    assert adapter.max_pending == 2
    lines = [f"Nov 27 10:15:0{n} mx1 postfix/qmgr[8]: 0A1B2C3D4{n}: from=<s{n}@x.example>, "
             f"size=1, nrcpt=1 (queue active)".encode() for n in range(3)]
    convert(adapter, lines)
    assert adapter.evicted == 1
    assert [entry[0] for entry in adapter.snapshot()["queue"]] == ["0A1B2C3D41", "0A1B2C3D42"]
    convert(adapter, [b"Nov 27 10:15:05 mx1 postfix/qmgr[8]: 0A1B2C3D41: removed"])
    assert [entry[0] for entry in adapter.snapshot()["queue"]] == ["0A1B2C3D42"]
    records, _, _ = convert(adapter, [
        b"Nov 27 10:15:06 mx1 postfix/smtp[7]: 0A1B2C3D40: to=<a@x.example>, relay=none, "
        b"delay=1, dsn=2.0.0, status=sent (250 ok)"])
    assert "sender" not in records[0]       # evicted: as if its from= line was never seen


@pytest.mark.parametrize("body,status,outcome", [
    ("550 5.7.1 <a@b.example>: Recipient address rejected: Access denied", "failed", None),
    ("450 4.7.24 <a@b.example>: Recipient address rejected: SPF Temporary Error: DNS Timeout",
     "deferred", "TIMEOUT"),
    ("451 4.7.24 <a@b.example>: Sender address rejected: SPF temperror", "deferred", "SERVFAIL"),
    ("550 5.7.27 <a@b.example>: Sender address rejected: Domain b.example does not accept mail "
     "(nullMX)", "failed", "NOERROR"),
    ("450 4.7.1 <a@b.example>: Sender address rejected: Malformed DNS server reply", "deferred",
     "OTHER"),
])
def test_noqueue_rejects_take_status_from_the_reply_class_and_the_verdict_from_its_text(
        body, status, outcome):
    line = (f"Nov 27 10:15:07 mx1 postfix/smtpd[4]: NOQUEUE: reject: RCPT from x[192.0.2.9]: "
            f"{body}; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>").encode()
    records, _, _ = convert(PostfixAdapter(year=2026), [line])
    assert [(r["status"], r.get("dns_outcome")) for r in records] == [(status, outcome)]


def test_a_milter_reject_with_a_queue_id_uses_the_message_id_and_ends_the_queue_id():
    adapter = PostfixAdapter(year=2026)
    records, _, _ = convert(adapter, [
        b"Nov 27 10:15:00 mx1 postfix/cleanup[9]: 1D2E3F4A5B: message-id=<m1@otp.example>",
        b"Nov 27 10:15:01 mx1 postfix/cleanup[9]: 1D2E3F4A5B: milter-reject: END-OF-MESSAGE from "
        b"x[192.0.2.9]: 4.7.1 DMARC temperror for otp.example; from=<a@otp.example> "
        b"to=<c@d.example> proto=ESMTP helo=<x>"])
    assert [(r["message_id"], r["status"], r["dns_outcome"]) for r in records] == [
        ("<m1@otp.example>/c@d.example", "deferred", "SERVFAIL")]
    assert adapter.snapshot()["queue"] == []


def test_an_expired_message_is_one_failed_record():
    records, _, _ = convert(PostfixAdapter(year=2026), [
        b"Nov 27 10:15:00 mx1 postfix/qmgr[8]: 2E3F4A5B6C: from=<otp@bank.example>, "
        b"status=expired, returned to sender"])
    assert [(r["message_id"], r["status"], r["sender"]) for r in records] == [
        ("2E3F4A5B6C@mx1", "failed", "otp@bank.example")]


@pytest.mark.parametrize("line", [
    "Nov 27 10:15:00 mx1 postfix/smtpd[1]: connect from x[192.0.2.9]",
    "Nov 27 10:15:00 mx1 postfix/smtpd[1]: disconnect from x[192.0.2.9] ehlo=1 commands=1",
    "Nov 27 10:15:00 mx1 postfix/anvil[1]: statistics: max cache size 2 at Nov 27 10:15:00",
    "Nov 27 10:15:00 mx1 postfix/smtp[1]: warning: no MX host for x.example has a valid address "
    "record",
    "Nov 27 10:15:00 mx1 postfix/pickup[1]: 0A1B2C3D4E: uid=33 from=<www-data>",
    "Nov 27 10:15:00 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=x[192.0.2.1]:25, "
    "delay=1, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
    "Nov 27 10:15:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: CONNECT from x[192.0.2.9]: 554 5.7.1 "
    "Service unavailable; proto=SMTP",
    "Nov 27 10:15:00 mx1 postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from x[192.0.2.9]: 450 "
    "4.1.8 <a@b>: Sender address rejected: Domain not found; from=<a@b> to=<c@d> proto=ESMTP",
    "Nov 27 10:15:00 mx1 dovecot: lmtp(ann): msgid=<x@y>: saved mail to INBOX",
    "Nov 27 10:15:00 mx1 opendkim[77]: 0A1B2C3D4E: s=sel d=x.example SSL error:04091068",
    "",
    "   ",
])
def test_lines_that_carry_no_delivery_are_skipped(line):
    records, rejected, skipped = convert(PostfixAdapter(year=2026), [line.encode()])
    assert (records, rejected, skipped) == ([], [], 1)


@pytest.mark.parametrize("raw,reason", [
    (b"this is not a maillog line", "not_postfix"),
    (b'{"ts": "2026-11-27T10:15:02Z", "message_id": "m", "status": "failed"}', "not_postfix"),
    (b"\xff\xfe\x00junk", "not_postfix"),
    (b"Nov 27 10:1", "truncated"),
    (b"Nov 27 10:15:02 mx1", "truncated"),
    (b"<22>1 2026-11-27T10:15:02Z mx1", "truncated"),
    (b"<22>1 2026-11-27T10:15:02Z mx1 postfix/smtp 1 - [a b=\"c", "truncated"),
    (b"Nov 27 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=none, del",
     "truncated"),
    (b"Nov 27 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=none, "
     b"delay=1, dsn=4.4.3, status=def", "truncated"),
    (b"Nov 27 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=none, "
     b"delay=1, dsn=4.4.3, status=deferred (Host or domain name not found. Name service error "
     b"for name=x.example type=MX: Host not found", "truncated"),     # ", try again)" was cut
    (b"Nov 27 10:15:02 mx1 postfix/qmgr[1]: 0A1B2C3D4E: from=<a@x.exa", "truncated"),
    (b"Nov 27 10:15:02 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.9]: 550 5.1.8 "
     b"<a@b>: Sender address rejected: Domain not found; from=<a@b> to=<c@", "truncated"),
    (b"Feb 30 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: removed", "bad_ts"),
    (b"Foo 27 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: removed", "bad_ts"),
    (b"Nov 27 25:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: removed", "bad_ts"),
    (b"2026-13-27T10:15:02Z mx1 postfix/smtp[1]: 0A1B2C3D4E: removed", "bad_ts"),
    (b"<22>1 - mx1 postfix/smtp 1 - - 0A1B2C3D4E: removed", "bad_ts"),
    (b"Nov 27 10:15:02 mx1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@x.example>, relay=none, "
     b"delay=1, dsn=4.4.3, status=lost (who knows)", "bad_value:status"),
    (b"Nov 27 10:15:02 mx1 postfix/smtp[1]: " + b"x" * 70_000, "too_large"),
])
def test_malformed_and_truncated_lines_are_rejected_with_a_reason(raw, reason):
    records, rejected, _ = convert(PostfixAdapter(year=2026), [b"", raw])
    assert (records, rejected) == ([], [(1, reason)])


@pytest.mark.parametrize("detail,outcome", [
    ("Host or domain name not found. Name service error for name=x.example type=MX: Host not "
     "found, try again", "SERVFAIL"),
    ("delivery temporarily suspended: Host or domain name not found. Name service error for "
     "name=x.example type=A: Host not found, try again", "SERVFAIL"),
    ("Host or domain name not found. Name service error for name=x.example type=A: Host not found",
     "NXDOMAIN"),
    ("Host or domain name not found. Name service error for name=x.example type=AAAA: Host found "
     "but no data record of requested type", "NODATA"),
    ("Name service error for name=x.example type=MX: Malformed name server reply", "OTHER"),
    ("unable to look up host mx.x.example: Temporary failure in name resolution", "SERVFAIL"),
    ("unable to look up host mx.x.example: Name or service not known", "NXDOMAIN"),
    ("unable to look up host mx.x.example: No address associated with hostname", "NODATA"),
    ("mx.x.example: host not found", "NODATA"),
    ("host mx.x.example[192.0.2.1] said: 451 4.7.1 SPF: DNS lookup timed out (in reply to MAIL "
     "FROM command)", "TIMEOUT"),
    ("host mx.x.example[192.0.2.1] said: 450 4.7.1 Temporary DNS error: SERVFAIL for "
     "_spf.bank.example (in reply to RCPT TO command)", "SERVFAIL"),
    ("host mx.x.example[192.0.2.1] said: 550 5.7.1 Sender domain bank.example: NXDOMAIN (in reply "
     "to MAIL FROM command)", "NXDOMAIN"),
    ("host mx.x.example[192.0.2.1] said: 451 4.7.1 DKIM temporary error looking up key (in reply "
     "to end of DATA command)", "SERVFAIL"),
    ("host mx.x.example[192.0.2.1] said: 550 5.7.24 SPF permerror: too many DNS lookups (in reply "
     "to RCPT TO command)", None),
    ("connect to mx.dns-hosting.example[192.0.2.7]:25: Connection timed out", None),
    ("conversation with mx.x.example[192.0.2.1] timed out while receiving the initial server "
     "greeting", None),
    ("host mx.x.example[192.0.2.1] said: 550 5.1.1 <a@x.example>: Recipient address rejected: "
     "User unknown (in reply to RCPT TO command)", None),
    ("250 2.0.0 Ok: queued as 4dR7xK1Zq9z9vN", None),
])
def test_dns_verdicts_in_delivery_texts(detail, outcome):
    assert dns_outcome_of_detail(detail) == outcome


def test_sniff_picks_postfix_and_scores_other_formats_low():
    postfix = fixture_lines("postfix_dns_failures.log")
    assert PostfixAdapter.sniff(postfix) > 0.9
    assert PostfixAdapter.sniff(fixture_lines("postfix_header_variants.log")) > 0.9
    assert M365Adapter.sniff(postfix) == 0.0
    contract = [b'{"ts": "2026-11-27T10:15:02Z", "message_id": "m1", "status": "failed"}'] * 5
    assert PostfixAdapter.sniff(contract) == 0.0
    for name in ("m365_trace_summary.csv", "m365_trace_reordered.csv", "m365_trace_detail.jsonl"):
        assert PostfixAdapter.sniff(fixture_lines(name)) == 0.0
    other_syslog = [b"Nov 27 10:15:00 mx1 sshd[12]: Accepted publickey for root"] * 5
    assert PostfixAdapter.sniff(other_syslog) == 0.0


REAL_LINES = (fixture_lines("postfix_dns_failures.log")
              + fixture_lines("postfix_header_variants.log"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), max_size=20))
def test_never_raises_on_random_bytes(lines):
    records, rejected, skipped = convert(PostfixAdapter(year=2026), lines)
    assert len(rejected) + skipped <= len(lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(REAL_LINES), st.integers(0, 400),
                          st.binary(max_size=8)), max_size=20))
def test_never_raises_on_real_lines_cut_anywhere_and_spliced_with_junk(cuts):
    lines = [line[:cut] + junk for line, cut, junk in cuts]
    adapter = PostfixAdapter(year=2026)
    convert(adapter, lines)
    restored = PostfixAdapter()
    restored.restore(json.loads(json.dumps(adapter.snapshot())))
    convert(restored, lines)

"""The parser against the contract: the schemas' example table, raw-byte cases, timestamps."""

import json
from pathlib import Path

import pytest

from detector.core.records import Rejected, format_ts, parse_dns, parse_mail, parse_ts

EXAMPLES = json.loads((Path(__file__).parent / "fixtures" / "record_examples.json").read_text())
PARSERS = {"mail": parse_mail, "dns": parse_dns}


def _cases():
    for stream, rows in EXAMPLES.items():
        for row in rows:
            yield pytest.param(stream, row, id=f"{stream}:{row['name']}")


@pytest.mark.parametrize("stream,row", list(_cases()))
def test_parser_agrees_with_the_schema_example_table(stream, row):
    raw = json.dumps(row["record"]).encode()
    if row["valid"]:
        PARSERS[stream](raw)
    else:
        with pytest.raises(Rejected) as err:
            PARSERS[stream](raw)
        assert err.value.reason == row["reason"]


@pytest.mark.parametrize("raw,reason", [
    (b"", "not_json"),
    (b'{"ts": 1, "message_id": "m", "status": "delivered"', "not_json"),
    (b'{"ts": NaN, "message_id": "m", "status": "delivered"}', "not_json"),
    (b"\xff\xfe{}", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"x"', "not_object"),
    (b"null", "not_object"),
    (b'{"ts": "2026-11-27T10:00:00Z", "message_id": "' + b"x" * 70_000 + b'", "status": "delivered"}',
     "too_large"),
])
def test_raw_bytes_that_are_not_a_record_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(Rejected) as err:
        parse_mail(raw)
    assert err.value.reason == reason


@pytest.mark.parametrize("value,expected", [
    ("2026-11-27T10:15:02.123Z", 1795774502.123),
    ("2026-11-27T10:15:02.123", 1795774502.123),          # no offset means UTC
    ("2026-11-27T12:15:02.123+02:00", 1795774502.123),
    ("2026-11-27t10:15:02.123z", 1795774502.123),
    ("2026-11-27T10:15:60Z", 1795774559.0),               # a leap second reads as :59
    (1795774502, 1795774502.0),
    (1795774502.5, 1795774502.5),
    (1795774502123, 1795774502.123),                      # > 1e11 is milliseconds
])
def test_timestamps_in_every_contract_form(value, expected):
    assert parse_ts(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("value", ["yesterday", "2026-02-30T00:00:00Z", "2026-11-27 10:15:02Z",
                                   -5, 1e300, "2026-11-27T10:15Z"])
def test_unparseable_timestamps_are_bad_ts(value):
    with pytest.raises(Rejected) as err:
        parse_ts(value)
    assert err.value.reason == "bad_ts"


def test_formatting_round_trips():
    assert format_ts(parse_ts("2026-11-27T10:15:02.123Z")) == "2026-11-27T10:15:02.123Z"
    assert format_ts(parse_ts("2026-11-27T10:15:02Z")) == "2026-11-27T10:15:02Z"


def test_names_are_folded_and_answers_decide_nodata():
    record = parse_dns(b'{"ts": 1, "qname": "Auth.Bank.Example.", "rcode": "noerror", "answers": []}')
    assert (record.qname, record.outcome) == ("auth.bank.example", "NODATA")
    assert parse_dns(b'{"ts": 1, "qname": "a", "rcode": "YXDOMAIN"}').outcome == "OTHER"
    mail = parse_mail(b'{"ts": 1, "message_id": "m", "status": "DEFERRED", "sender": "OTP@Bank.Example"}')
    assert (mail.status, mail.sender_domain) == ("deferred", "bank.example")

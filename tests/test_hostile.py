"""Hostile input: whatever a log file or a topic holds, the parser and the core neither crash nor
lose count, and their memory stays within its caps.

Property-based (hypothesis), reproducible: every test runs ``derandomize=True`` without an example
database, so CI and a laptop draw the same examples. What is held, in the contract's words:

- **(a) the parser** turns any bytes into a record or a ``Rejected`` whose reason is in the
  documented vocabulary (``not_json``, ``not_object``, ``too_large``, ``bad_ts``,
  ``missing_field:<f>``, ``wrong_type:<f>``, ``bad_value:<f>`` for the stream's own fields), never
  another exception;
- **(b)** the same for JSON objects with the contract's field names and values of any type:
  huge and negative numbers, integers past 64 bits, ``NaN``/``Infinity`` spelled in the text,
  100 KB and non-ASCII strings, lists, objects, nesting past orjson's depth limit (1024), invalid
  UTF-8, absurd timestamps, ``dns_lookups`` with thousands of entries;
- **(c) the whole core** fed random mixes of valid records and junk, in random batches, on both
  streams, then closed: no exception, every line accounted for (see ``assert_batch_accounted``),
  every event valid against ``schemas/anomaly-event.schema.json``, and the state round-trips
  through a JSON checkpoint: a restored detector gives the same snapshot and, fed the rest, the
  same events;
- **(d)** one host with a wrong clock does not move the watermark and is rejected as ``future_ts``;
- **(e)** nothing grows without bound: distinct names by the hundred thousand in a short span of
  event time leave the join buffer, the de-duplication set and the evidence within their caps,
  and every eviction is counted.

The last tests pin defects these searches found in the core (time offsets beyond 9999, a clock
ahead emptying the join buffer, a restored buffer expiring differently, ``close()`` leaving the
last step unjudged), fixed since.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from detector.core.events import encode_event, to_builtins
from detector.core.config import DetectorConfig
from detector.settings import detector_config
from detector.core.pipeline import ALERT_EVIDENCE_VALUES, Detector
from detector.shell import Source
from detector.core.records import (
    MAX_FIELD_CHARS,
    MAX_LINE_BYTES,
    STATUSES,
    DnsRecord,
    MailRecord,
    Rejected,
    parse_dns,
    parse_mail,
)
from detector.core.outcomes import OUTCOMES
from detector.core.windows import EVIDENCE_CAP

ROOT = Path(__file__).resolve().parent.parent
EVENT_SCHEMA = Draft202012Validator(
    json.loads((ROOT / "schemas" / "anomaly-event.schema.json").read_text()))

T0 = 1795737600.0                     # 2026-11-27T00:00:00Z
MAIL_FIELDS = ("ts", "message_id", "status", "sender", "recipient", "tenant", "server",
               "direction", "category", "subject", "status_code", "detail", "dns_lookups",
               "dns_outcome")
MAIL_REQUIRED = ("ts", "message_id", "status")
DNS_FIELDS = ("ts", "qname", "rcode", "answers", "qtype", "resolver", "client", "latency_ms")
DNS_REQUIRED = ("ts", "qname", "rcode")
PARSERS = {"mail": parse_mail, "dns": parse_dns}


def reasons_of(stream: str) -> frozenset[str]:
    """The parser's documented rejection vocabulary, for one stream's own fields."""
    fields, required = ((MAIL_FIELDS, MAIL_REQUIRED) if stream == "mail"
                        else (DNS_FIELDS, DNS_REQUIRED))
    return frozenset({"not_json", "not_object", "too_large", "bad_ts"}
                     | {f"missing_field:{f}" for f in required}
                     | {f"{kind}:{f}" for kind in ("wrong_type", "bad_value") for f in fields})


PARSE_REASONS = {stream: reasons_of(stream) for stream in PARSERS}
#: The core adds two reasons of its own to the parser's.
CORE_REASONS = {stream: reasons | {"future_ts", "late"} for stream, reasons in PARSE_REASONS.items()}

#: Modest and reproducible: the same examples on every machine, no database, no deadline (CI
#: machines are shared and slow). ``HOSTILE_EXAMPLES=5000`` runs a deeper search by hand.
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "200"))
HOSTILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
CORE = settings(HOSTILE, max_examples=max(1, EXAMPLES * 2 // 5))


# --------------------------------------------------------------------------- hostile JSON text
#
# Values are built as JSON *text* (bytes), not as Python objects: the text can then spell what no
# serializer writes (NaN, Infinity, 1e400, integers past 64 bits, invalid UTF-8, nesting past the
# decoder's limit).

def _text(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:     # a lone surrogate: written as the JSON escape no encoder should write
        return json.dumps(value).encode()


#: Timestamps no sane log holds, as JSON text: epoch 0 and 1970, the last instant RFC 3339 can
#: write and the one after it, year 10000, far-future milliseconds, negative numbers, offsets that
#: carry a valid-looking date past 9999 or before year 1, days that do not exist, non-ASCII digits.
ABSURD_TS = [_text(v) for v in (
    0, 1, 0.5, -1, -0.0, -1795737600, 99_999_999_999, 100_000_000_000, 1e11, 253402300799,
    253402300799999, 253402300800000, 10**15, 10**18, 2**63, 1e300,
    "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59Z", "10000-01-01T00:00:00Z", "+10000-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z",
    "2026-11-27T24:00:00Z", "2026-11-27T10:00:00+24:00", "2026-11-27T10:00:60Z",
    "2026-11-27 10:00:00Z", " 2026-11-27T10:00:00Z", "2026-11-27T10:00:00.Z", "",
    "\u0662\u0660\u0662\u0666-11-27T10:00:00Z", "2026-11-27T10:00:00." + "9" * 5000 + "Z",
)] + [b"123456789012345678901234567890", b"-99999999999999999999", b"1e400", b"-1e400",
      b"NaN", b"Infinity", b"-Infinity"]

SPECIAL_NUMBERS = [b"NaN", b"-NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e400",
                   b"-1e400", b"1e-400", b"-0", b"-0.0", b"0e0", b"1E+2", b"01", b"1.",
                   b".5", b"0x10", b"+1"]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\x80",
                b"\xe2\x82", b"\xf0\x9f\x98"]

json_scalars = st.one_of(
    st.sampled_from([b"null", b"true", b"false"]),
    st.integers(min_value=-2**63, max_value=2**64 - 1).map(lambda i: str(i).encode()),
    st.integers(min_value=2**64, max_value=10**400).flatmap(
        lambda i: st.sampled_from([str(i).encode(), b"-" + str(i).encode()])),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.sampled_from(SPECIAL_NUMBERS),
    st.text(max_size=30).map(_text),
    st.text(alphabet=st.characters(min_codepoint=0x80), max_size=30).map(_text),
    # 100 KB strings: over the line limit; 30 KB: under it, and non-ASCII (several bytes a char).
    st.sampled_from([100_000, 30_000, 64 * 1024 - 200]).flatmap(
        lambda n: st.sampled_from([_text("x" * n), _text("\u00e9\u4e2d\U0001f600" * (n // 9))])),
    st.sampled_from(INVALID_UTF8).map(lambda bad: b'"abc' + bad + b'def"'),
    st.sampled_from(ABSURD_TS),
)


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"


field_keys = st.one_of(st.sampled_from(MAIL_FIELDS + DNS_FIELDS + ("qname", "qtype")).map(_text),
                       st.text(max_size=8).map(_text))

json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_array),
        st.lists(st.tuples(field_keys, inner), max_size=4).map(_object),
    ),
    max_leaves=12,
)

#: Nesting around orjson's depth limit (1024) and far beyond it, arrays and objects.
deep_values = st.one_of(
    st.sampled_from([2, 100, 1023, 1024, 1025, 5000, 20_000]).map(
        lambda depth: b"[" * depth + b"1" + b"]" * depth),
    st.sampled_from([2, 1022, 1023, 1024, 1025, 3000]).map(
        lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)


def _lookups(count: int, item: bytes = b'{"qname":"n%d.bank.example","qtype":"TXT"}') -> bytes:
    return _array([item % i if b"%d" in item else item for i in range(count)])


#: ``dns_lookups`` with thousands of entries (under and over the 64 KiB line limit), with one bad
#: entry at the end, with every kind of bad entry.
many_lookups = st.one_of(
    st.sampled_from([1000, 1200, 5000]).map(_lookups),
    st.sampled_from([1000, 3000]).map(lambda n: _lookups(n, b'{"qname":"a"}')[:-1] + b",7]"),
    st.lists(st.sampled_from([b'{"qname":""}', b'{"qname":null}', b'{"qname":1}', b'{}',
                              b'{"qname":"a","qtype":5}', b'"bank.example"', b'[]', b'null',
                              b'{"qname":"."}', b'{"qname":"a","qtype":""}']),
             min_size=1, max_size=5).map(_array),
)

VALID_MAIL = {"ts": b'"2026-11-27T10:00:00Z"', "message_id": b'"<m1@mx.example>"',
              "status": b'"failed"', "sender": b'"verify@auth.bank.example"',
              "category": b'"otp"', "server": b'"mx1"', "tenant": b'"corp.example"',
              "dns_lookups": b'[{"qname":"auth.bank.example","qtype":"TXT"}]'}
VALID_DNS = {"ts": b'"2026-11-27T10:00:00Z"', "qname": b'"auth.bank.example"',
             "rcode": b'"SERVFAIL"', "qtype": b'"TXT"', "answers": b"0", "client": b'"mx1"',
             "resolver": b'"res-a"', "latency_ms": b"12.5"}


@st.composite
def hostile_objects(draw, stream: str) -> bytes:
    """An object with the stream's field names: a valid record (so that a hostile value reaches
    the validator's later checks) with some fields replaced by hostile values, some dropped, some
    repeated, some unknown ones added."""
    fields = MAIL_FIELDS if stream == "mail" else DNS_FIELDS
    record = dict(VALID_MAIL if stream == "mail" else VALID_DNS)
    for name in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
        if name == "ts":
            record[name] = draw(st.one_of(st.sampled_from(ABSURD_TS), json_values))
        elif name == "dns_lookups":
            record[name] = draw(st.one_of(many_lookups, json_values))
        else:
            record[name] = draw(st.one_of(json_values, deep_values))
    for name in draw(st.lists(st.sampled_from(fields), max_size=2, unique=True)):
        record.pop(name, None)
    pairs = [(_text(name), value) for name, value in record.items()]
    pairs += draw(st.lists(st.tuples(field_keys, json_values), max_size=2))    # repeats, extras
    pairs = draw(st.permutations(pairs))
    return _object(pairs)


@st.composite
def mutated_lines(draw, stream: str) -> bytes:
    """A valid line with a few bytes flipped, inserted or deleted: near-misses of the format."""
    line = bytearray(_object([(_text(k), v) for k, v in
                              (VALID_MAIL if stream == "mail" else VALID_DNS).items()]))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if op == "insert" or pos >= len(line):
            line.insert(pos, byte)
        elif op == "set":
            line[pos] = byte
        else:
            del line[pos]
    return bytes(line)


def junk_lines(stream: str) -> st.SearchStrategy[bytes]:
    """Lines of every kind of wrong (cheap to draw: the core's runs draw many)."""
    return st.one_of(
        st.binary(max_size=300),
        json_values,
        deep_values,
        mutated_lines(stream),
        hostile_objects(stream),
        st.sampled_from(INVALID_UTF8).map(lambda bad: bad + b'{"ts": 1}'),
    )


def any_line(stream: str) -> st.SearchStrategy[bytes]:
    return st.one_of(junk_lines(stream),
                     st.binary(min_size=MAX_LINE_BYTES - 2, max_size=MAX_LINE_BYTES + 2))


def parse_outcome(stream: str, raw: bytes):
    """The parser's answer to one line: the record, or its rejection reason; nothing else."""
    try:
        return PARSERS[stream](raw)
    except Rejected as err:
        return err.reason


def assert_parser_answer_is_documented(stream: str, raw: bytes) -> None:
    answer = parse_outcome(stream, raw)
    if isinstance(answer, str):
        assert answer in PARSE_REASONS[stream], f"undocumented reason {answer!r} for {raw[:200]!r}"
        if len(raw) > MAX_LINE_BYTES:
            assert answer == "too_large"
    elif stream == "mail":
        assert isinstance(answer, MailRecord)
        assert isinstance(answer.ts, float) and math.isfinite(answer.ts)
        assert isinstance(answer.message_id, str) and 0 < len(answer.message_id) <= MAX_FIELD_CHARS
        assert answer.status in STATUSES
        assert answer.dns_outcome is None or answer.dns_outcome in OUTCOMES
        assert answer.lookups is None or all(
            isinstance(q, str) and (t is None or isinstance(t, str)) for q, t in answer.lookups)
        for kept in (answer.sender, answer.tenant, answer.server, answer.sender_domain):
            assert kept is None or (isinstance(kept, str) and len(kept) <= MAX_FIELD_CHARS)
    else:
        assert isinstance(answer, DnsRecord)
        assert isinstance(answer.ts, float) and math.isfinite(answer.ts)
        assert isinstance(answer.qname, str) and len(answer.qname) <= MAX_FIELD_CHARS
        assert answer.outcome in OUTCOMES
    # The parser is a function of the line: its caches (the per-hour epoch) change nothing.
    assert repr(parse_outcome(stream, raw)) == repr(answer)


# ------------------------------------------------------------------------------- (a) and (b)

@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_any_bytes_give_a_record_or_a_documented_rejection(stream, data):
    assert_parser_answer_is_documented(stream, data.draw(any_line(stream)))


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_contract_fields_with_values_of_any_type_give_a_record_or_a_documented_rejection(
        stream, data):
    assert_parser_answer_is_documented(stream, data.draw(hostile_objects(stream)))


@pytest.mark.parametrize("stream", ["mail", "dns"])
@pytest.mark.parametrize("ts", ABSURD_TS, ids=lambda ts: ts[:40].decode("utf-8", "replace"))
def test_every_absurd_timestamp_gives_a_record_or_bad_ts(stream, ts):
    fields = dict(VALID_MAIL if stream == "mail" else VALID_DNS, ts=ts)
    answer = parse_outcome(stream, _object([(_text(k), v) for k, v in fields.items()]))
    if isinstance(answer, str):
        assert answer in ("bad_ts", "not_json")     # NaN, Infinity, 1e400 are not JSON at all
    else:
        assert math.isfinite(answer.ts)


@pytest.mark.parametrize("arrays,reason", [(1023, "wrong_type:sender"), (1024, "not_json"),
                                           (20_000, "not_json"), (40_000, "too_large")])
def test_nesting_past_the_decoders_depth_limit_is_not_json(arrays, reason):
    # orjson decodes 1024 levels: the record object and 1023 arrays in it.
    line = (b'{"ts":1795737600,"message_id":"m","status":"failed","sender":'
            + b"[" * arrays + b"]" * arrays + b"}")
    assert parse_outcome("mail", line) == reason


def test_thousands_of_lookups_under_the_line_limit_are_all_kept():
    line = (b'{"ts":1795737600,"message_id":"m","status":"failed","dns_lookups":'
            + _lookups(1200) + b"}")
    assert len(line) < MAX_LINE_BYTES
    assert len(parse_mail(line).lookups) == 1200


# ------------------------------------------------------------------------------ (c) the core

#: A detector that alerts on almost anything (no warm-up, one failure can open) and has tiny
#: caps, so that short random runs go through every transition and every eviction path.
TWITCHY = detector_config({
    "model": {"warmup_s": 0, "warmup_attempts": 0, "long_window_s": 300},
    "alerts": {"open_score": 0.5, "resolve_score": 0.2, "min_failures": 1, "min_lift": 1.0,
               "long_min_lift": 1.0, "min_excess_rate": 0.0, "resolve_hold_s": 30},
    "join": {"max_buffered_dns": 50},
    "clock": {"dedup_max_entries": 40},
})

SENDERS = [None, "<>", "verify@auth.bank.example", "otp@id.shop.example", "news@shop.example",
           "codes@bank.example", "no-reply-auth@login.example", "x@"]
QNAMES = ["auth.bank.example", "AUTH.bank.example.", "id.shop.example", "shop.example",
          "login.example", "bank.example"]
SERVERS = [None, "mx1", "MX2", "10.0.0.1"]
RCODES = ["NOERROR", "noerror", "SERVFAIL", "NXDOMAIN", "TIMEOUT", "REFUSED", "YXDOMAIN",
          "FORMERR", "NOTIMP", "NODATA"]
MESSAGE_IDS = [f"<m{i}@mx.example>" for i in range(25)]     # a small pool: duplicates happen


def ts_text(draw, epoch: float):
    """One instant in each of the contract's spellings."""
    form = draw(st.sampled_from(["s", "ms", "rfc"]))
    if form == "s":
        return epoch
    if form == "ms":
        return int(epoch * 1000)
    offset = timedelta(minutes=draw(st.sampled_from([0, 60, -330, 840])))
    return datetime.fromtimestamp(epoch, tz=timezone(offset)).isoformat()


@st.composite
def valid_mail(draw, clock: float) -> bytes:
    record = {"ts": ts_text(draw, clock + draw(st.floats(-40, 40))),
              "message_id": draw(st.sampled_from(MESSAGE_IDS)),
              "status": draw(st.sampled_from(sorted(STATUSES) + ["FAILED", "deferred"] * 3)),
              "sender": draw(st.sampled_from(SENDERS)),
              "tenant": draw(st.sampled_from([None, "t1.example", "t2.example"])),
              "server": draw(st.sampled_from(SERVERS)),
              "category": draw(st.sampled_from([None, "otp", "otp", "OTP", "newsletter"])),
              "subject": draw(st.sampled_from([None, "Your verification code", "Hello"])),
              "status_code": draw(st.sampled_from([None, "4.4.3", "5.7.1", "2.0.0"]))}
    choice = draw(st.integers(0, 5))
    if choice == 0:
        record["dns_lookups"] = []
    elif choice == 1:
        record["dns_lookups"] = [{"qname": q, "qtype": draw(st.sampled_from([None, "TXT", "mx"]))}
                                 for q in draw(st.lists(st.sampled_from(QNAMES), max_size=3))]
    elif choice == 2:
        record["dns_outcome"] = draw(st.sampled_from(OUTCOMES)).lower()
    return orjson.dumps({k: v for k, v in record.items() if v is not None})


@st.composite
def valid_dns(draw, clock: float) -> bytes:
    record = {"ts": ts_text(draw, clock + draw(st.floats(-40, 40))),
              "qname": draw(st.sampled_from(QNAMES)), "rcode": draw(st.sampled_from(RCODES)),
              "qtype": draw(st.sampled_from([None, "TXT", "MX", "a"])),
              "answers": draw(st.sampled_from([None, 0, 1, [], ["1.2.3.4"]])),
              "client": draw(st.sampled_from(SERVERS)),
              "resolver": draw(st.sampled_from([None, "res-a", "res-b"]))}
    return orjson.dumps({k: v for k, v in record.items() if v is not None})


#: Valid except for a timestamp no sane clock gives, but one the detector accepts (1970 to an
#: hour before the end of 9999; times outside are rejected, see below).
IN_RANGE_ABSURD_TS = [0, 1, "1970-01-01T00:00:00Z", "9999-12-31T22:59:59Z", 253402297199000,
                      T0 + 86400 * 365, T0 - 86400, T0 + 301]


@st.composite
def absurd_clock_record(draw, stream: str) -> bytes:
    base = orjson.loads(draw(valid_mail(T0) if stream == "mail" else valid_dns(T0)))
    base["ts"] = draw(st.sampled_from(IN_RANGE_ABSURD_TS))
    return orjson.dumps(base)


def core_junk(stream: str) -> st.SearchStrategy[bytes]:
    return junk_lines(stream)


@st.composite
def core_runs(draw):
    """Batches ``(stream, source, lines, now)`` over a few minutes of event time."""
    clock = T0
    batches = []
    for _ in range(draw(st.integers(1, 14))):
        clock += draw(st.sampled_from([0, 5, 20, 60, 400]))
        stream = draw(st.sampled_from(["mail", "mail", "dns"]))
        source = draw(st.sampled_from({"mail": ["mail-a", "mail-b"], "dns": ["dns-a"]}[stream]))
        valid = valid_mail(clock) if stream == "mail" else valid_dns(clock)
        lines = draw(st.lists(st.one_of(valid, valid, valid, core_junk(stream),
                                        absurd_clock_record(stream)), max_size=40))
        now = draw(st.sampled_from([None, None, clock + 30]))
        batches.append((stream, source, lines, now))
    declared = draw(st.sampled_from([(), ("mail-a", "dns-a"), ("mail-a", "mail-b", "dns-a")]))
    return declared, batches


def assert_batch_accounted(stream: str, lines: list, result, before: dict, after: dict) -> None:
    """Every line of a batch is rejected (once, with a documented reason) or accepted and counted.

    ``feed`` counts every line in ``<stream>_records`` and every rejection in ``rejected:<reason>``
    (the same list it returns). An accepted mail line then ends in exactly one of four counters:
    ``duplicates`` (an exact duplicate within the horizon), ``not_final`` (pending, expanded,
    getting_status), ``not_otp``, or it becomes an OTP delivery, which waits in the join queue
    (the ``pending_deliveries`` gauge) until the watermark lets it join, when it moves to
    ``otp_attempts``. Joining happens inside ``feed``, so the number of deliveries a batch adds is
    the change of ``otp_attempts + pending_deliveries``, not of either alone. Hence, per batch:

        len(lines) == len(rejected) + Δduplicates + Δnot_final + Δnot_otp
                      + Δ(otp_attempts + pending_deliveries)

    An accepted DNS line goes to the join buffer, which also loses lines by event-time expiry
    (not counted) and by the size cap (``dns_evicted``); no counter says how many were accepted,
    so for DNS the balance is ``Δdns_records == len(lines)`` and ``Δrejected:* == len(rejected)``.
    """
    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    indices = [index for index, _ in result.rejected]
    assert indices == sorted(indices) and len(set(indices)) == len(indices), result.rejected
    assert all(0 <= index < len(lines) for index in indices)
    reasons = Counter(reason for _, reason in result.rejected)
    assert set(reasons) <= CORE_REASONS[stream], reasons
    counted = {key.partition(":")[2]: delta(key) for key in set(before) | set(after)
               if key.startswith("rejected:") and delta(key)}
    assert counted == dict(reasons)
    assert delta(f"{stream}_records") == len(lines)
    if stream == "mail":
        accepted = (delta("duplicates") + delta("not_final") + delta("not_otp")
                    + delta("otp_attempts") + delta("pending_deliveries"))
        assert len(result.rejected) + accepted == len(lines)
    else:
        assert delta("duplicates") == delta("not_final") == delta("not_otp") == 0
        assert delta("pending_deliveries") + delta("otp_attempts") == 0


def assert_events_valid(events: list) -> None:
    """Each event, as the JSON the shells write (``encode_event`` for the core's own type),
    valid against the schema."""
    for event in events:
        if not isinstance(event, dict):
            event = orjson.loads(encode_event(event))
        EVENT_SCHEMA.validate(event)
        assert event["observed"]["failures"] <= event["observed"]["attempts"]


def assert_within_caps(detector: Detector) -> None:
    stats = detector.stats()
    task, judge = detector.task, detector.judge
    assert stats["dns_buffered"] == task.join.size <= task.join.max_buffered
    assert len(task.join.snapshot()) == task.join.size
    assert stats["dedup_entries"] <= task.dedup.max_entries
    steps = [step.evidence for step in task.open_steps.values()]
    for evidence in steps + judge.windows.ring_evidence:
        assert all(len(kept) <= EVIDENCE_CAP for kept in evidence.values())
    for alert in judge.books.open.values():
        assert all(len(values) <= ALERT_EVIDENCE_VALUES for values in alert.evidence.values())


def checkpoint(detector: Detector) -> bytes:
    """The state as the worker writes it: JSON bytes (orjson raises on anything not JSON)."""
    return orjson.dumps(detector.snapshot())


def same_state(detector: Detector, state: bytes) -> bool:
    """Compared as JSON data: ``60`` and ``60.0`` are the same number (alert times are ints
    before a restore and floats after one, which changes nothing but the bytes)."""
    return orjson.loads(checkpoint(detector)) == orjson.loads(state)


def run_batches(detector: Detector, batches: list) -> tuple[list[dict], list]:
    events, rejected = [], []
    for stream, source, lines, now in batches:
        before = detector.stats()
        result = detector.feed(stream, lines, source=source, now=now)
        assert_batch_accounted(stream, lines, result, before, detector.stats())
        assert_within_caps(detector)
        events += result.events
        rejected.append(result.rejected)
    return [to_builtins(e) for e in events], rejected


def finish(detector: Detector) -> list[dict]:
    events = []
    for source in ("mail-a", "mail-b", "dns-a"):
        events += detector.finish_source(source)
    return [to_builtins(e) for e in events + detector.close()]


@CORE
@given(run=core_runs(), cut=st.floats(0, 1))
def test_random_mixes_of_records_and_junk_are_all_accounted_for_and_checkpoint_exactly(run, cut):
    declared, batches = run
    detector = Detector(TWITCHY)
    for source in declared:
        detector.add_source(source)
    split = int(cut * len(batches))
    events, _ = run_batches(detector, batches[:split])

    # A checkpoint here, as the worker takes one: JSON bytes, and a detector restored from them
    # has the same state, and fed the rest gives the same events, rejections and counts.
    state = checkpoint(detector)
    restored = Detector(TWITCHY, state=orjson.loads(state))
    assert same_state(restored, state)
    rest_events, rest_rejected = run_batches(detector, batches[split:])
    again_events, again_rejected = run_batches(restored, batches[split:])
    assert (again_events, again_rejected) == (rest_events, rest_rejected)
    closing = finish(detector)
    assert finish(restored) == closing
    events += rest_events + closing
    assert_events_valid(events)
    assert_within_caps(detector)

    stats = detector.stats()
    assert stats["pending_deliveries"] == 0                    # close() joined everything
    outcomes = sum(v for k, v in stats.items() if k.startswith("otp_outcome:"))
    assert outcomes == stats.get("otp_attempts", 0) >= stats.get("otp_failures", 0)
    # The gauges too (``dns_buffered``): the join buffer expires by event time, restored or not.
    assert restored.stats() == stats
    final = checkpoint(detector)
    assert same_state(Detector(TWITCHY, state=orjson.loads(final)), final)
    # Every event's id is one anomaly's: its states come in order open, update*, resolved.
    states: dict[str, list[str]] = {}
    for event in events:
        states.setdefault(event["id"], []).append(event["state"])
    for sequence in states.values():
        assert sequence[0] == "open" and "open" not in sequence[1:]
        assert "resolved" not in sequence[:-1]


# ------------------------------------------------------------------- (d) a wrong clock


def normal_lines(stream: str, times: list[float], tag: str) -> list[bytes]:
    if stream == "mail":
        return [orjson.dumps({"ts": ts, "message_id": f"<{tag}{i}@mx.example>", "status": "delivered",
                              "sender": "verify@auth.bank.example", "server": "mx1"})
                for i, ts in enumerate(times)]
    return [orjson.dumps({"ts": ts, "qname": "auth.bank.example", "rcode": "NOERROR", "qtype": "TXT"})
            for ts in times]


WRONG_CLOCKS = [_text(v) for v in ("9999-12-31T22:00:00Z", 253402290000000, 99_999_999_999,
                                   "2100-01-01T00:00:00+01:00", T0 + 86400, T0 + 900)]


@settings(HOSTILE, max_examples=max(1, EXAMPLES // 3))
@given(stream=st.sampled_from(["mail", "dns"]), offsets=st.lists(st.floats(0, 250), min_size=2,
                                                                  max_size=400),
       bad=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(WRONG_CLOCKS)), min_size=1,
                    max_size=4))
def test_a_host_with_a_wrong_clock_is_rejected_as_future_ts_and_leaves_the_watermark(
        stream, offsets, bad):
    times = [T0 + offset for offset in offsets]
    lines = normal_lines(stream, times, "n")
    # At most 1 % of the batch (and at least one record) from the wrong clock: what the README
    # promises to catch without a wall clock.
    bad = bad[:max(1, (len(lines) + len(bad)) // 100)]
    wrong = []
    for position, ts in bad:
        position = min(position, len(lines))
        line = lines[0].replace(_text(times[0]), ts, 1)
        lines.insert(position, line)
        wrong = [p + (p >= position) for p in wrong] + [position]
    detector = Detector()
    detector.add_source("mail")
    detector.add_source("dns")
    other = "dns" if stream == "mail" else "mail"
    detector.feed(other, normal_lines(other, [T0 + 250], "o"), source=other)
    result = detector.feed(stream, lines, source=stream)
    assert set(result.rejected) == {(p, "future_ts") for p in wrong}
    assert detector.clock.high[stream] == max(times)
    assert detector.watermark <= max(times) - detector.config.clock.allowed_lateness_s


@settings(HOSTILE, max_examples=max(1, EXAMPLES // 10))
@given(stream=st.sampled_from(["mail", "dns"]), ts=st.sampled_from(WRONG_CLOCKS))
def test_a_wrong_clock_alone_in_its_batch_is_rejected_against_the_wall_clock(stream, ts):
    detector = Detector()
    detector.feed(stream, normal_lines(stream, [T0, T0 + 1], "n"), source=stream, now=T0 + 2)
    line = normal_lines(stream, [T0], "x")[0].replace(_text(T0), ts, 1)
    result = detector.feed(stream, [line], source=stream, now=T0 + 3)
    assert result.rejected == [(0, "future_ts")]
    assert detector.clock.high[stream] == T0 + 1


def test_a_quiet_gap_cut_off_by_the_end_of_a_batch_is_carried_to_the_next_one():
    # A resolver quiet for ten minutes (more than max_future_skew_s): the batch ends six lines
    # after the gap, which alone looks like a host whose clock jumped ahead. Carried, the six
    # are settled by the next batch, which goes on after them, and nothing is rejected.
    lines = normal_lines("dns", [T0 + i / 2 for i in range(4090)] +
                         [T0 + 2645 + i for i in range(20)], "q")
    detector = Detector()
    first = detector.feed("dns", lines[:4096], source="dns", carry=True)
    assert first.rejected == [] and first.carry is not None and first.carry.lines == 6
    assert detector.clock.high["dns"] == T0 + 4089 / 2          # the six moved nothing yet
    rest = detector.feed("dns", lines[4090:], source="dns", carry=True)
    assert rest.rejected == [] and rest.carry is None
    assert detector.clock.high["dns"] == T0 + 2664
    assert detector.counters["dns_records"] == len(lines)
    # Without carrying, the same batch can only call the six a wrong clock (as before).
    assert Detector().feed("dns", lines[:4096], source="dns").rejected == [
        (i, "future_ts") for i in range(4090, 4096)]


def test_a_wrong_clock_carried_from_the_end_of_a_batch_is_rejected_by_the_next_or_alone():
    lines = normal_lines("dns", [T0 + i for i in range(200)], "n")
    wrong = normal_lines("dns", [T0 + 86400], "w")
    later = normal_lines("dns", [T0 + 200 + i for i in range(100)], "l")
    detector = Detector()
    carried = detector.feed("dns", lines + wrong, source="dns", carry=True).carry
    assert carried is not None and carried.lines == 1
    # The next batch goes on from before it: a wrong clock after all.
    result = detector.feed("dns", wrong + later, source="dns", carry=True)
    assert result.rejected == [(0, "future_ts")] and result.carry is None
    assert detector.clock.high["dns"] == T0 + 299
    # No next batch (the end of a file, an idle partition): judged against the batch it came
    # in, as without carrying.
    detector = Detector()
    carried = detector.feed("dns", lines + wrong, source="dns", carry=True).carry
    assert carried is not None
    assert detector.feed("dns", wrong, source="dns", limit=carried.limit).rejected == [
        (0, "future_ts")]
    assert detector.clock.high["dns"] == T0 + 199


@settings(HOSTILE, max_examples=max(1, EXAMPLES // 4))
@given(cuts=st.lists(st.integers(2, 400), min_size=1, max_size=40),
       wrong_at=st.integers(0, 2000), stream=st.sampled_from(["mail", "dns"]))
def test_bursts_apart_lose_nothing_to_batch_ends_and_a_wrong_clock_is_rejected_anyhow(
        cuts, wrong_at, stream):
    # Bursts of 30 records, 400 s apart (a quiet resolver, a small site's mail): without
    # carrying, a batch that ends a few records into a burst rejects them. Through a ``Source``
    # (the step both shells use) in batches of any size from 2 lines, every record is accepted
    # but one host's record a day ahead, wherever the batches end, and the last burst, which
    # only the end of the input can leave unsettled.
    times = [T0 + burst * 400 + i for burst in range(80) for i in range(30)]
    lines = normal_lines(stream, times, "b")
    wrong_at = min(wrong_at, len(lines) - 100)
    lines.insert(wrong_at, normal_lines(stream, [times[wrong_at] + 86400], "w")[0])
    detector = Detector()
    source = Source(detector, stream, stream)
    rejected, start, sizes = [], 0, itertools.cycle(cuts)
    while start < len(lines):
        end = min(len(lines), start + next(sizes))
        fed = source.feed(lines[start:end], refs=list(range(start, end)))
        rejected += [(r.position, r.reason) for r in fed.rejected]
        start = end
    rejected += [(r.position, r.reason) for r in source.release().rejected]
    assert (wrong_at, "future_ts") in rejected
    assert all(reason == "future_ts" and (at == wrong_at or at >= len(lines) - 30)
               for at, reason in rejected), rejected
    counted = detector.counters[f"{stream}_records"]
    assert counted == len(lines)


def test_without_a_wall_clock_a_lone_wrong_record_moves_only_its_own_input():
    # Alone in its batch and with no wall clock (a replay), nothing tells the record from a real
    # gap in the traffic, so it is accepted; the watermark is the slowest input's, so the other
    # stream keeps it where it was and later records of both streams are not late.
    detector = Detector()
    detector.add_source("mail")
    detector.add_source("dns")
    detector.feed("dns", normal_lines("dns", [T0, T0 + 60], "d"), source="dns")
    detector.feed("mail", normal_lines("mail", [T0, T0 + 60], "m"), source="mail")
    watermark = detector.watermark
    assert watermark == T0 + 50
    detector.feed("mail", [normal_lines("mail", [T0], "x")[0].replace(
        _text(T0), b'"9999-12-31T22:00:00Z"')], source="mail")
    assert detector.watermark == watermark
    result = detector.feed("mail", normal_lines("mail", [T0 + 61], "later"), source="mail")
    assert result.rejected == []


# ------------------------------------------------------------------- (e) bounded memory

def test_a_flood_of_distinct_names_stays_within_every_cap_and_counts_its_evictions():
    """300 000 resolver records with distinct names and 300 000 OTP deliveries with distinct ids,
    senders and tenants in five minutes of event time (1000 a second each, a fifth failing)."""
    caps = {"join": {"max_buffered_dns": 10_000}, "clock": {"dedup_max_entries": 10_000}}
    config = detector_config({**TWITCHY.to_mapping(), **caps})
    detector = Detector(config)
    detector.add_source("mail")
    detector.add_source("dns")
    total, batch, rate = 300_000, 5_000, 1000.0
    most_pending = 0
    events = []
    for start in range(0, total, batch):
        names = range(start, start + batch)
        events += detector.feed("dns", [orjson.dumps({
            "ts": T0 + k / rate - 1, "qname": f"d{k}.example", "rcode": "SERVFAIL" if k % 5 == 0
            else "NOERROR", "client": f"mx{k % 7}", "resolver": f"res-{k}"}) for k in names],
            source="dns").events
        result = detector.feed("mail", [orjson.dumps({
            "ts": T0 + k / rate, "message_id": f"<{k}@mx.example>", "status": "deferred"
            if k % 5 == 0 else "delivered", "sender": f"verify@d{k}.example",
            "tenant": f"tenant-{k}.example", "server": f"mx{k % 7}", "status_code": f"4.4.{k % 9}"})
            for k in names], source="mail")
        assert not result.rejected
        events += result.events
        assert_within_caps(detector)
        most_pending = max(most_pending, detector.stats()["pending_deliveries"])
    events += detector.finish_source("dns") + detector.finish_source("mail")
    events += detector.close()
    assert_within_caps(detector)
    stats = detector.stats()
    # Five minutes is within the 10-minute de-duplication horizon: nothing expired by time, so
    # every id beyond the cap was evicted, and counted.
    assert stats["dedup_entries"] == 10_000
    assert stats["dedup_evicted"] == total - 10_000
    # The join needs 45 s of resolver records (30 s before, 5 s after, 10 s lateness): 45 000 at
    # this rate, over the cap, so the cap evicted, and counted.
    assert 0 < stats["dns_evicted"] <= total - stats["dns_buffered"]
    assert stats["otp_attempts"] == total and stats["pending_deliveries"] == 0
    # Pending deliveries have no count cap: they are bounded by event time (lateness and the
    # join's wait after a delivery, 15 s) plus the batch in hand.
    assert most_pending <= rate * 15 + batch
    # Failures with distinct domains and tenants everywhere: alerts open, evidence stays capped.
    assert stats.get("anomalies:open", 0) >= 1
    assert_events_valid(events)


# ------------------------------------------------------------- defects found here, fixed

def history(stamp, minutes: int = 40, spike_minutes: int = 2) -> list[bytes]:
    """OTP mail one a second, healthy for ``minutes``, then every one failing with SERVFAIL for
    ``spike_minutes``; ``stamp(second)`` spells each time."""
    lines = []
    for second in range((minutes + spike_minutes) * 60):
        failing = second >= minutes * 60
        lines.append(orjson.dumps({
            "ts": stamp(second), "message_id": f"<{second}@mx.example>",
            "status": "deferred" if failing else "delivered", "category": "otp",
            "dns_outcome": "SERVFAIL" if failing else "NOERROR"}))
    return lines


def _local(start: datetime, offset: str):
    return lambda second: (start + timedelta(seconds=second)).isoformat() + offset


@pytest.mark.parametrize("stamp,config", [
    pytest.param(_local(datetime(9999, 12, 31, 23, 0), "-01:00"), DetectorConfig(),
                 id="offset-past-9999"),
    pytest.param(_local(datetime(1, 1, 1, 0, 0), "+05:00"), DetectorConfig(),
                 id="offset-before-year-1"),
    # Go's zero time, what a shipper writes for a time it never set: the window that opens an
    # anomaly starts before it (the default config needs more history to show it).
    pytest.param(_local(datetime(1, 1, 1, 0, 0), "Z"), TWITCHY, id="go-zero-time"),
])
def test_times_an_offset_carries_out_of_1970_to_9999_are_rejected_and_nothing_crashes(stamp,
                                                                                       config):
    detector = Detector(config)
    detector.add_source("mail")
    lines = history(stamp, 40 if config is not TWITCHY else 0)
    result = detector.feed("mail", lines, source="mail")
    assert result.rejected and {reason for _, reason in result.rejected} == {"bad_ts"}
    detector.finish_source("mail")
    detector.close()


def test_a_resolver_clock_ahead_within_the_allowed_skew_does_not_empty_the_join_buffer():
    config = detector_config({"join": {"max_buffered_dns": 2000}})
    detector = Detector(config)
    detector.add_source("mail")
    detector.add_source("dns")
    for step in range(120):                 # 20 minutes, 10 OTP mails a second, lookups healthy
        times = [T0 + step * 10 + i / 10 for i in range(100)]
        dns = [orjson.dumps({"ts": ts - 1, "qname": f"d{step}-{i}.example", "rcode": "NOERROR"})
               for i, ts in enumerate(times)]
        if step == 0:                       # one resolver 290 s fast: accepted by design
            dns.append(orjson.dumps({"ts": T0 + 290, "qname": "fast.example", "rcode": "NOERROR"}))
        mail = [orjson.dumps({"ts": ts, "message_id": f"<{step}-{i}@mx.example>",
                              "status": "delivered", "sender": f"otp@d{step}-{i}.example"})
                for i, ts in enumerate(times)]
        assert not detector.feed("dns", dns, source="dns").rejected
        assert not detector.feed("mail", mail, source="mail").rejected
    detector.finish_source("dns")
    detector.finish_source("mail")
    detector.close()
    stats = detector.stats()
    # 45 s of resolver records at 10 a second, plus a batch, is far under the cap of 2000.
    assert stats["dns_evicted"] == 0
    assert stats.get("otp_outcome:UNMATCHED", 0) == 0


def test_a_restored_join_buffer_expires_and_evicts_like_the_one_checkpointed():
    config = detector_config({"join": {"max_buffered_dns": 3}})

    def start() -> Detector:
        detector = Detector(config)
        detector.add_source("mail")
        detector.add_source("dns")
        detector.feed("mail", normal_lines("mail", [T0], "m"), source="mail")
        detector.feed("dns", [orjson.dumps({"ts": T0 + 100, "qname": "ahead.example",
                                            "rcode": "NOERROR"})], source="dns")
        detector.feed("dns", [orjson.dumps({"ts": T0 + k, "qname": f"n{k}.example",
                                            "rcode": "SERVFAIL"}) for k in (1, 2)], source="dns")
        return detector

    def rest(detector: Detector) -> dict:
        detector.feed("dns", [orjson.dumps({"ts": T0 + 3, "qname": "n3.example",
                                            "rcode": "SERVFAIL"})], source="dns")
        detector.feed("mail", [orjson.dumps({
            "ts": T0 + 3.5, "message_id": f"<x{k}@mx.example>", "status": "deferred",
            "category": "otp", "dns_lookups": [{"qname": f"n{k}.example"}]}) for k in (2, 3)],
            source="mail")
        detector.finish_source("mail")
        detector.finish_source("dns")
        detector.close()
        return detector.stats()

    uninterrupted = rest(start())
    restored = rest(Detector(config, state=orjson.loads(checkpoint(start()))))
    assert restored == uninterrupted


def test_close_judges_the_last_seconds_of_the_input():
    detector = Detector(TWITCHY)
    detector.add_source("mail")
    lines = history(lambda second: T0 + 0.5 + second, minutes=5, spike_minutes=0)
    lines += [orjson.dumps({"ts": T0 + 300.5 + k, "message_id": f"<late-spike-{k}@mx.example>",
                            "status": "deferred", "category": "otp", "dns_outcome": "TIMEOUT"})
              for k in range(5)]
    detector.feed("mail", lines, source="mail")
    events = detector.finish_source("mail") + detector.close()
    assert detector.task.open_steps == detector.judge.open_steps == {}
    assert detector.close() == []
    assert ("open", "TIMEOUT") in [(e.state, e.key["outcome"]) for e in events]

"""The two decoding paths of ``records`` give one answer.

A batch is decoded by msgspec Structs first; a line they refuse goes through the checked path
(orjson, then ``mail_from_object`` / ``dns_from_object``), which names the first problem. The
fast path may only ever *accept*, and then it must build the very record the checked path
builds. These tests hold the two together on every kind of line the hostile-input tests draw,
on timestamps in every spelling (the floats compared bit for bit), on whole batches (indexes and
reasons), and on a generated scenario, where they also check that the fast path is the one
almost every line takes (else the speed it is there for is gone).
"""

from __future__ import annotations

import gzip
import math
import os
import sys
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.core import records
from detector.core.records import (
    MAX_LINE_BYTES,
    Rejected,
    decode_dns,
    decode_mail,
    dns_from_object,
    load_object,
    mail_from_object,
)
from detector.synth import generate
from test_hostile import HOSTILE, any_line, hostile_objects, valid_dns, valid_mail

T0 = 1795737600.0                     # 2026-11-27T00:00:00Z
CHECKED = {"mail": mail_from_object, "dns": dns_from_object}
DECODE = {"mail": decode_mail, "dns": decode_dns}


def checked(stream: str, raw: bytes | str):
    """The checked path alone: the record, or the reason."""
    try:
        if len(raw) > MAX_LINE_BYTES:
            raise Rejected("too_large")
        return CHECKED[stream](load_object(raw))
    except Rejected as err:
        return err.reason


def decoded(stream: str, raw: bytes | str):
    """The batch decoder on one line: the record, or the reason."""
    rejected: list[tuple[int, str]] = []
    found, kept = DECODE[stream]([raw], rejected)
    if rejected:
        assert found == [] and kept == [] and rejected[0][0] == 0
        return rejected[0][1]
    assert kept is None
    return found[0]


def same(stream: str, raw: bytes | str) -> None:
    # repr shows every field, floats to the last bit (repr round-trips).
    assert repr(decoded(stream, raw)) == repr(checked(stream, raw)), raw[:300]


def fast_path_takes(stream: str, raw: bytes) -> bool:
    """Whether the msgspec Struct accepts the line (the fast path decodes it)."""
    decode = records._decode_mail_line if stream == "mail" else records._decode_dns_line
    try:
        decode(raw)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_any_line_gives_the_answer_of_the_checked_path(stream, data):
    same(stream, data.draw(st.one_of(any_line(stream), hostile_objects(stream))))


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_valid_records_in_every_spelling_give_the_record_of_the_checked_path(stream, data):
    clock = T0 + data.draw(st.floats(0, 86400 * 400))
    raw = data.draw(valid_mail(clock) if stream == "mail" else valid_dns(clock))
    same(stream, raw)
    same(stream, raw.decode())                      # a str line (a Kafka shell may give one)


#: Strings where normalising can go wrong: empty, longer than the cut, mixed case, a trailing
#: dot, addresses with and without a domain, non-ASCII.
EDGE_TEXT = [None, "", "x" * 600, "MX1.Mail.Example.", "Verify@Auth.Bank.Example.", "<>", "a@",
             "@b", "\u0130stanbul.example", "otp", "OTP", "Your verification code", "4.4.3",
             "5.7.1 Name service error", "y@" + "z" * 600 + ".example"]
MAIL_TEXT_FIELDS = ("sender", "recipient", "tenant", "server", "category", "subject",
                    "status_code", "detail")
DNS_TEXT_FIELDS = ("qtype", "resolver", "client")


@st.composite
def edge_records(draw, stream: str) -> bytes:
    """A valid record in the fast path's spelling whose optional strings are edge cases."""
    if stream == "mail":
        record = {"ts": "2026-11-27T10:00:00.5Z", "message_id": draw(st.sampled_from(
                      ["m", "x" * 600])), "status": draw(st.sampled_from(
                      sorted(records.STATUSES))),
                  "direction": draw(st.sampled_from([None, "inbound", "outbound"])),
                  "dns_outcome": draw(st.sampled_from([None, "SERVFAIL", "NOERROR"])),
                  "dns_lookups": draw(st.sampled_from([None, [], [{"qname": "A.Example."}],
                                                       [{"qname": "b", "qtype": ""},
                                                        {"qname": "x" * 600, "qtype": "txt"}]]))}
        fields = MAIL_TEXT_FIELDS
    else:
        record = {"ts": 1795737600.25, "qname": draw(st.sampled_from(EDGE_TEXT[2:])),
                  "rcode": draw(st.sampled_from(["NOERROR", "noerror", "SERVFAIL", "YXDOMAIN"])),
                  "answers": draw(st.sampled_from([None, 0, 3, [], ["192.0.2.1"]]))}
        fields = DNS_TEXT_FIELDS
    for name in fields:
        record[name] = draw(st.sampled_from(EDGE_TEXT))
    return orjson.dumps(record)


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_every_field_is_normalised_as_the_checked_path_does(stream, data):
    raw = data.draw(edge_records(stream))
    if stream == "dns" and b'"rcode":"NOERROR"' in raw or stream == "mail":
        assert fast_path_takes(stream, raw)
    same(stream, raw)


ts_texts = st.one_of(
    st.floats(-1e12, 3e14, allow_nan=False),
    st.integers(-10**3, 10**20),
    st.builds(
        lambda epoch, digits, offset, t, z: (
            datetime.fromtimestamp(int(epoch), tz=timezone(timedelta(minutes=offset)))
            .strftime(f"%Y-%m-%d{t}%H:%M:%S")
            + ("." + digits if digits else "")
            + (z if offset == 0 and z is not None else
               "" if offset == 0 else
               f"{'+' if offset > 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}")),
        st.floats(0, 253402300799 - 90000), st.text("0123456789", max_size=12),
        st.sampled_from([0, 0, 60, -330, 840, -720]), st.sampled_from("Tt"),
        st.sampled_from(["Z", "z", None])),
)


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(ts=ts_texts)
def test_timestamps_in_every_spelling_are_the_same_float_on_both_paths(stream, ts):
    fields = (b'"message_id":"m1","status":"failed"' if stream == "mail"
              else b'"qname":"a.example","rcode":"SERVFAIL"')
    text = orjson.dumps(ts) if isinstance(ts, str) else repr(ts).encode()   # ints past 64 bits
    raw = b'{"ts":' + text + b"," + fields + b"}"
    same(stream, raw)
    answer = decoded(stream, raw)
    if not isinstance(answer, str):
        assert math.isfinite(answer.ts)


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_a_batch_gives_each_line_its_own_answer_at_its_index(stream, data):
    lines = data.draw(st.lists(st.one_of(
        valid_mail(T0) if stream == "mail" else valid_dns(T0), any_line(stream)), max_size=12))
    rejected: list[tuple[int, str]] = []
    found, kept = DECODE[stream](lines, rejected)
    answers = [checked(stream, raw) for raw in lines]
    expected_rejected = [(i, a) for i, a in enumerate(answers) if isinstance(a, str)]
    expected_kept = [i for i, a in enumerate(answers) if not isinstance(a, str)]
    assert rejected == expected_rejected
    assert (list(range(len(lines))) if kept is None else kept) == expected_kept
    assert kept is None or len(kept) < len(lines)
    assert [repr(r) for r in found] == [repr(answers[i]) for i in expected_kept]


@pytest.mark.parametrize("raw,fast", [
    (b'{"ts":"2026-11-27T10:00:00.123Z","message_id":"m","status":"delivered"}', True),
    (b'{"ts":1795737600,"message_id":"m","status":"failed","dns_outcome":"SERVFAIL"}', True),
    # Another spelling of an enumerated value, an unknown field, a lookup with an extra key:
    # valid, but for the checked path (which the Structs leave them to).
    (b'{"ts":1795737600,"message_id":"m","status":"DELIVERED"}', False),
    (b'{"ts":1795737600,"message_id":"m","status":"failed","dns_outcome":"servfail"}', False),
    (b'{"ts":1795737600,"message_id":"m","status":"failed","x":1e400}', False),
    (b'{"ts":1795737600,"message_id":"m","status":"failed","x":"\xff"}', False),
    (b'{"ts":1795737600,"message_id":"m","status":"failed",'
     b'"dns_lookups":[{"qname":"a","qtype":"TXT","class":"IN"}]}', False),
])
def test_unknown_fields_and_other_spellings_take_the_checked_path(raw, fast):
    assert fast_path_takes("mail", raw) is fast
    same("mail", raw)


@pytest.mark.parametrize("raw,fast", [
    (b'{"ts":1795737600.5,"qname":"A.example.","rcode":"NOERROR","answers":[]}', True),
    (b'{"ts":1795737600,"qname":"a","rcode":"NOERROR","answers":0,"latency_ms":-0.0}', True),
    (b'{"ts":1795737600,"qname":"a","rcode":"NOERROR","answers":2.0}', False),
    (b'{"ts":1795737600,"qname":"a","rcode":"NOERROR","answers":-1}', False),
    (b'{"ts":true,"qname":"a","rcode":"NOERROR"}', False),
    (b'{"ts":1795737600,"qname":"a","rcode":"NOERROR","answers":[{"a":"192.0.2.1"}]}', False),
    (b'{"ts":1795737600,"qname":null,"rcode":"NOERROR"}', False),
])
def test_the_dns_struct_accepts_only_what_it_can_answer_alone(raw, fast):
    assert fast_path_takes("dns", raw) is fast
    same("dns", raw)


def test_nesting_orjson_refuses_is_refused_whatever_the_recursion_limit():
    # orjson stops at 1024 levels; msgspec goes as deep as Python's recursion limit, which a
    # program may raise (hypothesis does, and found this): nested answers take the checked path.
    raw = (b'{"ts":1795737600,"qname":"a","rcode":"NOERROR","answers":['
           + b"[" * 1030 + b"]" * 1030 + b"]}")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        assert not fast_path_takes("dns", raw)
        same("dns", raw)
    finally:
        sys.setrecursionlimit(limit)
    assert checked("dns", raw) == "not_json"


def test_a_generated_log_takes_the_fast_path_and_gives_the_checked_records(tmp_path):
    generate("seed-incident", tmp_path, seed=5, hours=0.5)
    for stream in ("mail", "dns"):
        lines = gzip.decompress((tmp_path / f"{stream}.jsonl.gz").read_bytes()).splitlines()
        fast = sum(fast_path_takes(stream, raw) for raw in lines)
        # The generator writes a few malformed lines on purpose; every other line is fast.
        assert fast >= 0.99 * len(lines)
        for raw in lines:
            same(stream, raw)


# ------------------------------------------------ the compiled loop and the Python loop agree

PY_DECODE = {"mail": records.decode_mail_py, "dns": records.decode_dns_py}


def test_the_compiled_decoders_are_built():
    if os.environ.get("DETECTOR_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("DETECTOR_PURE_PYTHON is set: the Python loop is asked for")
    assert records.SPEEDUPS, (
        "detector/core/_speedups.c is not built (no C compiler or Python headers when the "
        "package was installed): records.py runs its Python loop, about 3x slower a line")


def both_loops(stream: str, lines: list) -> None:
    """The compiled batch decoder and the Python loop give the same records (repr: every field,
    floats to the last bit), the same indexes and the same reasons, whatever the caches hold
    (the compiled one runs before and after the Python one)."""
    assert records.SPEEDUPS, "detector/core/_speedups.c is not built"
    answers = []
    for decode in (DECODE[stream], PY_DECODE[stream], DECODE[stream]):
        rejected: list[tuple[int, str]] = []
        found, kept = decode(lines, rejected)
        answers.append((repr(found), kept, rejected))
    assert answers[0] == answers[1] == answers[2], [line[:200] for line in lines]


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(data=st.data())
def test_the_compiled_loop_answers_any_batch_as_the_python_loop(stream, data):
    clock = T0 + data.draw(st.floats(0, 86400 * 400))
    lines = data.draw(st.lists(st.one_of(
        valid_mail(clock) if stream == "mail" else valid_dns(clock),
        edge_records(stream), any_line(stream), hostile_objects(stream)), max_size=8))
    both_loops(stream, lines)
    both_loops(stream, [line.decode(errors="replace") if isinstance(line, bytes) else line
                        for line in lines])


@pytest.mark.parametrize("stream", ["mail", "dns"])
@HOSTILE
@given(ts=st.lists(ts_texts, min_size=1, max_size=6))
def test_the_compiled_loop_reads_every_timestamp_spelling_as_the_python_loop(stream, ts):
    fields = (b'"message_id":"m1","status":"failed"' if stream == "mail"
              else b'"qname":"a.example","rcode":"SERVFAIL"')
    both_loops(stream, [b'{"ts":' + (orjson.dumps(t) if isinstance(t, str) else repr(t).encode())
                        + b"," + fields + b"}" for t in ts])


@pytest.mark.parametrize("stream", ["mail", "dns"])
def test_the_compiled_loop_follows_the_clock_over_days_as_the_python_loop(stream):
    # 6,000 minutes, more than the parse caches keep (they are emptied when full), in UTC, with
    # an offset, in lower case, as epoch seconds and milliseconds, and a leap second.
    fields = ('"message_id":"m1","status":"failed"' if stream == "mail"
              else '"qname":"a.example","rcode":"SERVFAIL"')
    lines = []
    for i in range(6000):
        t = T0 + i * 61.7
        spellings = [
            datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            datetime.fromtimestamp(t, tz=timezone(timedelta(hours=1))).isoformat(),
            datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dt%H:%M:%S.%f"),
            datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:60Z"),
            t, t * 1000.0]
        for value in spellings[i % 3:i % 3 + 4]:
            lines.append(b'{"ts":' + orjson.dumps(value) + b"," + fields.encode() + b"}")
    for start in range(0, len(lines), 500):
        both_loops(stream, lines[start:start + 500])


def test_the_compiled_loop_builds_the_python_loops_records_from_a_generated_log(tmp_path):
    generate("mixed", tmp_path, seed=3, hours=0.5)
    for stream in ("mail", "dns"):
        lines = gzip.decompress((tmp_path / f"{stream}.jsonl.gz").read_bytes()).splitlines()
        for start in range(0, len(lines), 1000):
            both_loops(stream, lines[start:start + 1000])

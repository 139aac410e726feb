"""The anomaly event: what the detector publishes, as a typed value.

``AnomalyEvent`` is a ``msgspec.Struct`` whose fields are, in order, the keys of the JSON object
the contract describes (``schemas/anomaly-event.schema.json``); ``encode_event`` writes exactly
that object (``related`` only when the anomaly has some), and ``decode_event`` reads one back,
validating it against the same types (``msgspec.ValidationError`` on anything else), so a
consumer in Python gets the same type the detector made.

>>> event = AnomalyEvent(
...     id="servfail-0123456789abcdef", state="open", key={"outcome": "SERVFAIL"},
...     detected_at="2026-11-27T10:16:10Z", since="2026-11-27T10:15:00Z",
...     window=Window("2026-11-27T10:15:00Z", "2026-11-27T10:16:00Z"),
...     observed=Observed(40, 12, 0.3), expected=Expected(41.5, 0.04, 0.001),
...     score=9.1, severity="critical", rule="short",
...     reason="SERVFAIL OTP failures 12/40 (30.0%) vs expected 0.10% over 60 s; p = 1e-9.1",
...     evidence=Evidence([ValueCount("bank.example", 12)], [], [], [], ["m1"]))
>>> raw = encode_event(event)
>>> raw[:60]
b'{"id":"servfail-0123456789abcdef","state":"open","key":{"out'
>>> b'"related"' in raw, decode_event(raw) == event
(False, True)
"""

from __future__ import annotations

from typing import Literal

import msgspec
import orjson

#: The lifecycle of one anomaly: ``open`` once, ``update`` while it changes, ``resolved`` once.
State = Literal["open", "update", "resolved"]
#: The test that decided a state: the short or long window's tail test, or the sequential test.
Rule = Literal["short", "long", "cusum"]
Severity = Literal["warning", "critical"]


class Window(msgspec.Struct, frozen=True):
    """The event-time window the state was judged on (RFC 3339, UTC)."""

    start: str
    end: str


class Observed(msgspec.Struct, frozen=True):
    """OTP attempts and failures of the key in the window."""

    attempts: int
    failures: int
    failure_rate: float


class Expected(msgspec.Struct, frozen=True):
    """What the baseline expected in the same window: attempts at the usual volume, failures of
    the observed attempts at the baseline rate, and that rate."""

    attempts: float
    failures: float
    failure_rate: float


class ValueCount(msgspec.Struct, frozen=True):
    """One value of an evidence field and the failures that carried it."""

    value: str
    count: int


class Evidence(msgspec.Struct, frozen=True):
    """The most common values among the failures (most first, ties by value), and a few of
    their message ids to look up in the mail logs."""

    sender_domains: list[ValueCount]
    resolvers: list[ValueCount]
    tenants: list[ValueCount]
    status_codes: list[ValueCount]
    sample_message_ids: list[str]


class AnomalyEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One state of one anomaly (``schemas/anomaly-event.schema.json``; the README's "Anomaly
    events" says what each field means)."""

    id: str
    state: State
    key: dict[str, str]
    detected_at: str
    since: str
    window: Window
    observed: Observed
    expected: Expected
    score: float
    severity: Severity
    rule: Rule
    reason: str
    evidence: Evidence
    #: Ids of the anomalies of the same incident that were not paged (only when there are some).
    related: list[str] = []


def to_builtins(event: AnomalyEvent) -> dict:
    """The event as the JSON object the contract describes (dicts and lists)."""
    return msgspec.to_builtins(event)


def encode_event(event: AnomalyEvent) -> bytes:
    """The event's JSON, byte for byte what the detector has always written: the object of
    ``to_builtins`` written by orjson (whose floats the consumers' tests were written against;
    msgspec spells large exponents differently)."""
    return orjson.dumps(msgspec.to_builtins(event))


_DECODER = msgspec.json.Decoder(AnomalyEvent)


def decode_event(raw: bytes | str) -> AnomalyEvent:
    """An event from its JSON, validated by type; ``msgspec.ValidationError`` (or
    ``msgspec.DecodeError`` for text that is not JSON) otherwise."""
    return _DECODER.decode(raw)


def json_default(obj: object) -> object:
    """``default=`` for ``orjson.dumps``: lets a writer of plain dicts write events too."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.to_builtins(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")

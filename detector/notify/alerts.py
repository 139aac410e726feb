"""Anomaly events as Alertmanager alerts, and the open anomalies the notifier keeps re-sending (pure).

An event's ``key`` becomes the alert's identity: ``alertname="OTPDeliveryFailures"``, one label per
key field (``outcome``, and whatever slice fields the key has: ``sender_domain``, ``resolver``,
``tenant``, ...), and ``severity``. A field whose name Prometheus would refuse as a label is
rewritten (``[^a-zA-Z0-9_]`` to ``_``), and a field named like one of the notifier's own labels
gets a ``key_`` prefix, so nothing in an event can overwrite ``alertname`` or ``severity``.

Alertmanager knows an alert by its labels. Severity is a label (routing on it is what operators
do), so when an anomaly moves from warning to critical its alert moves to new labels: the alert
under the old labels is ended in the same request, and one anomaly never fires twice.
Alertmanager also forgets a firing alert that is not re-sent before its ``endsAt``: every firing
alert is sent ending a few re-send intervals ahead, and ``OpenAnomalies`` holds what to re-send.

>>> book = OpenAnomalies()
>>> event = {"id": "servfail-1", "state": "open", "key": {"outcome": "SERVFAIL", "resolver": "res-b"},
...          "detected_at": "2026-11-27T10:00:25Z", "since": "2026-11-27T09:59:20Z",
...          "severity": "warning", "reason": "SERVFAIL OTP failures 8/192"}
>>> [intent] = book.apply(event, b"{}", partition=0)
>>> alert = render(intent, now=1795773700.0, horizon_s=240)
>>> alert["labels"]
{'alertname': 'OTPDeliveryFailures', 'outcome': 'SERVFAIL', 'resolver': 'res-b', 'severity': 'warning'}
>>> alert["startsAt"], alert["endsAt"]
('2026-11-27T09:59:20.000Z', '2026-11-27T10:05:40.000Z')
>>> resolved = dict(event, state="resolved", detected_at="2026-11-27T10:30:00Z")
>>> [end] = book.apply(resolved, b"{}", partition=0)
>>> render(end, now=1795800000.0, horizon_s=240)["endsAt"], len(book)
('2026-11-27T10:30:00.000Z', 0)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

ALERTNAME = "OTPDeliveryFailures"
STATES = ("open", "update", "resolved")
#: Labels the notifier sets itself; a key field of the same name is sent as ``key_<name>``.
OWN_LABELS = ("alertname", "severity")
#: Evidence lists shown in the description, and how many of each.
EVIDENCE = (("sender_domains", "sender domains"), ("resolvers", "resolvers"),
            ("tenants", "tenants"), ("status_codes", "status codes"))
TOP = 3

_NOT_LABEL = re.compile(r"[^a-zA-Z0-9_]")
Labels = tuple[tuple[str, str], ...]


class EventError(ValueError):
    """A message on the anomalies topic that is not an anomaly event; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_event(value: bytes) -> dict[str, Any]:
    """An anomaly event from a message's bytes, checked for what the notifier relies on.

    >>> read_event(b'{"id": "x", "state": "open", "key": {"outcome": "TIMEOUT"}}')["key"]
    {'outcome': 'TIMEOUT'}
    >>> read_event(b'{"id": "x", "state": "gone", "key": {"outcome": "TIMEOUT"}}')
    Traceback (most recent call last):
    ...
    detector.notify.alerts.EventError: bad_value:state
    """
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise EventError("not_json") from None
    if not isinstance(event, dict):
        raise EventError("not_object")
    for field, kind in (("id", str), ("state", str), ("key", dict)):
        if field not in event:
            raise EventError(f"missing_field:{field}")
        if not isinstance(event[field], kind):
            raise EventError(f"wrong_type:{field}")
    if event["state"] not in STATES:
        raise EventError("bad_value:state")
    if not isinstance(event["key"].get("outcome"), str):
        raise EventError("missing_field:key.outcome")
    for field in ("detected_at", "since"):
        if field in event and _seconds(event[field]) is None:
            raise EventError(f"bad_ts:{field}")
    return event


def label_name(field: str) -> str:
    """A key field's name as a label name Prometheus accepts, never one of the notifier's own.

    >>> [label_name(f) for f in ("sender_domain", "sender-domain", "9s", "__x", "severity")]
    ['sender_domain', 'sender_domain', '_9s', 'key___x', 'key_severity']
    """
    name = _NOT_LABEL.sub("_", field) or "_"
    if name[0].isdigit():
        name = "_" + name
    if name.startswith("__") or name in OWN_LABELS:
        name = "key_" + name
    return name


def alert_labels(event: dict[str, Any]) -> Labels:
    """``alertname``, one label per key field (outcome first), ``severity``."""
    labels = [("alertname", ALERTNAME)]
    for field, value in event["key"].items():
        labels.append((label_name(field), value if isinstance(value, str)
                       else orjson.dumps(value).decode()))
    labels.append(("severity", str(event.get("severity") or "warning")))
    return tuple(labels)


def describe(event: dict[str, Any]) -> str:
    """The description annotation: the observed and expected rates and the top evidence.

    >>> describe({"observed": {"attempts": 192, "failures": 8, "failure_rate": 0.0417},
    ...           "expected": {"failure_rate": 0.00028},
    ...           "evidence": {"sender_domains": [{"value": "auth.bank1.example", "count": 8}],
    ...                        "resolvers": [{"value": "res-a", "count": 5}, {"value": "res-b", "count": 2}]}})
    '8/192 OTP deliveries failed (4.17%), expected 0.03%. Top sender domains: auth.bank1.example (8). Top resolvers: res-a (5), res-b (2).'
    """
    parts = []
    observed, expected = event.get("observed") or {}, event.get("expected") or {}
    if "attempts" in observed and "failures" in observed:
        rate = observed.get("failure_rate")
        text = f"{observed['failures']}/{observed['attempts']} OTP deliveries failed"
        if isinstance(rate, (int, float)):
            text += f" ({rate:.2%})"
        if isinstance(expected.get("failure_rate"), (int, float)):
            text += f", expected {expected['failure_rate']:.2%}"
        parts.append(text + ".")
    evidence = event.get("evidence") or {}
    for field, title in EVIDENCE:
        items = [item for item in evidence.get(field) or [] if isinstance(item, dict)][:TOP]
        if items:
            listed = ", ".join(f"{item.get('value')} ({item.get('count')})" for item in items)
            parts.append(f"Top {title}: {listed}.")
    return " ".join(parts) or str(event.get("reason", ""))


@dataclass(frozen=True, slots=True)
class AlertIntent:
    """What to tell Alertmanager about one anomaly under one label set.

    ``ended_at`` (event time, Unix seconds) is ``None`` while it fires. ``raw`` is the event's
    bytes, for the dead-letter topic. ``events`` counts the topic's events this intent carries
    (0 for a re-send), for the ``sent`` metric.
    """

    anomaly_id: str
    labels: Labels
    event: dict[str, Any]
    raw: bytes
    ended_at: float | None = None
    events: int = 1

    @property
    def identity(self) -> tuple[str, Labels]:
        return self.anomaly_id, self.labels


def render(intent: AlertIntent, now: float, horizon_s: float, generator_url: str = "",
           runbook_url: str = "") -> dict[str, Any]:
    """The alert as Alertmanager's API v2 takes it (``POST /api/v2/alerts``).

    A firing alert ends ``horizon_s`` after ``now`` unless re-sent. An ended one ends when the
    detector decided so, or now if that is ahead of this clock. ``startsAt`` is the anomaly's
    onset (``since``), never after ``endsAt`` (Alertmanager refuses such an alert).
    """
    event = intent.event
    ends = now + horizon_s if intent.ended_at is None else min(intent.ended_at, now)
    starts = _seconds(event.get("since")) or _seconds(event.get("detected_at")) or now
    annotations = {"summary": str(event.get("reason") or
                                  f"{event['key']['outcome']} OTP delivery failures"),
                   "description": describe(event), "anomaly_id": intent.anomaly_id}
    related = event.get("related")
    if isinstance(related, list) and related:
        annotations["related"] = ", ".join(map(str, related))
    if runbook_url:
        annotations["runbook_url"] = runbook_url.replace("{id}", intent.anomaly_id)
    alert = {"labels": dict(intent.labels), "annotations": annotations,
             "startsAt": rfc3339(min(starts, ends)), "endsAt": rfc3339(ends)}
    if generator_url:
        alert["generatorURL"] = generator_url.replace("{id}", intent.anomaly_id)
    return alert


@dataclass(slots=True)
class _Open:
    event: dict[str, Any]
    raw: bytes
    labels: Labels
    partition: Any


class OpenAnomalies:
    """The anomalies open now, by id: fed every event in topic order, it says which alerts
    change, and lists the firing ones to re-send. Entries remember their partition, so a
    partition the group moves elsewhere takes its anomalies with it (``forget``)."""

    def __init__(self) -> None:
        self.open: dict[str, _Open] = {}

    def __len__(self) -> int:
        return len(self.open)

    def apply(self, event: dict[str, Any], raw: bytes, partition: Any) -> list[AlertIntent]:
        """Take one event; returns the alerts it changes (usually one; two when the labels move)."""
        anomaly_id = event["id"]
        previous = self.open.get(anomaly_id)
        decided = _seconds(event.get("detected_at")) or time.time()
        if event["state"] == "resolved":
            self.open.pop(anomaly_id, None)
            labels = previous.labels if previous is not None else alert_labels(event)
            return [AlertIntent(anomaly_id, labels, event, raw, ended_at=decided)]
        labels = alert_labels(event)
        intents = []
        if previous is not None and previous.labels != labels:
            intents.append(AlertIntent(anomaly_id, previous.labels, event, raw, ended_at=decided,
                                       events=0))
        self.open[anomaly_id] = _Open(event, raw, labels, partition)
        intents.append(AlertIntent(anomaly_id, labels, event, raw))
        return intents

    def firing(self) -> list[AlertIntent]:
        """Every open anomaly's alert, to re-send."""
        return [AlertIntent(anomaly_id, entry.labels, entry.event, entry.raw, events=0)
                for anomaly_id, entry in self.open.items()]

    def forget(self, partitions: set) -> None:
        self.open = {k: v for k, v in self.open.items() if v.partition not in partitions}


def _seconds(text: Any) -> float | None:
    """RFC 3339 text as Unix seconds (no offset: UTC), or None."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def rfc3339(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds (``2026-11-27T10:00:25.000Z``)."""
    whole = int(seconds // 1)
    millis = int(round((seconds - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"

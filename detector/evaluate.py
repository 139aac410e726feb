"""Score a detector's anomaly events against a scenario's ``truth.json``.

The rules are the contract's. An incident is detected by an ``open`` event whose ``key.outcome``
is the incident's outcome (any case) and whose ``detected_at`` lies in [start, end + 5 min]; its
delay is the earliest such ``detected_at`` minus the incident's start. An ``open`` event outside
every incident's [start, end + 30 min] is a false alarm, whatever its outcome, and is attributed to
the decoy whose [start, end + 30 min] holds it, if any (a decoy's alarm lags it as an incident's
does). An ``open`` event inside an incident's [start, end + 5 min] whose outcome is none of the
outcomes of the incidents there is a *wrong-outcome open*: the incident was blamed on the wrong
DNS answer. Only ``open`` events count; ``update`` and ``resolved`` events are only tallied.
"""

from __future__ import annotations

import gzip
import statistics
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from .core.config import AlertConfig

DETECT_SLACK = timedelta(minutes=5)
#: An incident whose truth lists its first failures is reported with the time of its k-th: no
#: detector that needs k failures (the default ``alerts.min_failures``) can open before it.
KTH_FAILURE = AlertConfig().min_failures
ALARM_SLACK = timedelta(minutes=30)


class EvaluationInputError(ValueError):
    """An anomalies or truth file that cannot be scored (the message names the file and why)."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as err:
        raise EvaluationInputError(f"{what} {path}: cannot read: "
                                   f"{getattr(err, 'strerror', None) or err}") from None


def load_events(path: str | Path) -> list[dict]:
    """Anomaly events from a JSON-lines file (gzip too); blank lines are skipped.

    Raises ``EvaluationInputError`` naming the file and line for a line that is not a JSON
    object, and for a truth file given in its place.
    """
    path = Path(path)
    data = _read(path, "ANOMALIES")
    events = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            if _looks_like_truth(data):
                raise EvaluationInputError(f"ANOMALIES {path} is a truth file (it has "
                                           "'incidents'): are ANOMALIES and TRUTH swapped?") from None
            raise EvaluationInputError(f"ANOMALIES {path}: line {number} is not JSON") from None
        if isinstance(event, dict) and "incidents" in event and "state" not in event:
            raise EvaluationInputError(f"ANOMALIES {path} is a truth file (it has 'incidents'): "
                                       "are ANOMALIES and TRUTH swapped?")
        if not isinstance(event, dict):
            raise EvaluationInputError(f"ANOMALIES {path}: line {number} is not a JSON object")
        if "state" not in event or "detected_at" not in event:
            raise EvaluationInputError(f"ANOMALIES {path}: line {number} is not an anomaly "
                                       "event (no 'state' and 'detected_at')")
        events.append(event)
    return events


def _looks_like_truth(data: bytes) -> bool:
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(whole, dict) and "incidents" in whole


def load_truth(path: str | Path) -> dict:
    """A ``truth.json``, checked: an object whose ``incidents`` (and ``decoys``) are lists of
    objects with an ``outcome`` (incidents), and ``start`` and ``end`` times."""
    path = Path(path)
    data = _read(path, "TRUTH")
    if not data.strip():
        raise EvaluationInputError(f"TRUTH {path}: the file is empty")
    try:
        truth = orjson.loads(data)
    except orjson.JSONDecodeError:
        first = data.lstrip().split(b"\n", 1)[0]
        try:
            head = orjson.loads(first)
        except orjson.JSONDecodeError:
            head = None
        if isinstance(head, dict) and "detected_at" in head:
            raise EvaluationInputError(f"TRUTH {path} holds anomaly events: are ANOMALIES and "
                                       "TRUTH swapped?") from None
        raise EvaluationInputError(f"TRUTH {path}: not JSON") from None
    if isinstance(truth, dict) and "detected_at" in truth:
        raise EvaluationInputError(f"TRUTH {path} holds anomaly events: are ANOMALIES and TRUTH "
                                   "swapped?")
    if not isinstance(truth, dict) or not isinstance(truth.get("incidents"), list):
        raise EvaluationInputError(f"TRUTH {path}: not a truth file (no 'incidents' list)")
    for kind in ("incidents", "decoys"):
        entries = truth.get(kind, [])
        if not isinstance(entries, list):
            raise EvaluationInputError(f"TRUTH {path}: '{kind}' is not a list")
        for number, entry in enumerate(entries, 1):
            where = f"TRUTH {path}: {kind[:-1]} {number}"
            if not isinstance(entry, dict):
                raise EvaluationInputError(f"{where} is not an object")
            if kind == "incidents" and not isinstance(entry.get("outcome"), str):
                raise EvaluationInputError(f"{where}: no 'outcome'")
            for key in ("start", "end"):
                try:
                    parse_time(entry[key])
                except (KeyError, TypeError, ValueError, OverflowError, OSError, AttributeError):
                    raise EvaluationInputError(f"{where}: '{key}' {entry.get(key)!r} is not an "
                                               "RFC 3339 time") from None
    return truth


def parse_time(value: str | float) -> datetime:
    """RFC 3339 (``Z`` or an offset; none means UTC) or epoch seconds/milliseconds, as UTC."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"not a time: {value!r}")
    if not isinstance(value, str):
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, timezone.utc)
    moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def evaluate(events: Iterable[dict], truth: dict) -> dict:
    """A JSON-able report: per incident, recall, false alarms (with decoys), delays, event counts."""
    events = list(events)
    by_state = Counter(str(event.get("state", "")).lower() for event in events)
    opens = sorted(((_detected_at(event), _outcome(event), event) for event in events
                    if str(event.get("state", "")).lower() == "open"), key=lambda item: item[0])
    incidents = [(parse_time(i["start"]), parse_time(i["end"]), i) for i in truth.get("incidents", [])]
    decoys = [(parse_time(d["start"]), parse_time(d["end"]), d) for d in truth.get("decoys", [])]

    rows = []
    for start, end, incident in incidents:
        wanted = str(incident["outcome"]).upper()
        hits = [(at, event.get("id")) for at, outcome, event in opens
                if outcome == wanted and start <= at <= end + DETECT_SLACK]
        rows.append({
            "outcome": wanted, "start": incident["start"], "end": incident["end"],
            "desc": incident.get("desc", ""), "detected": bool(hits),
            "detected_at": _rfc3339(hits[0][0]) if hits else None,
            "delay_s": (hits[0][0] - start).total_seconds() if hits else None,
            "anomaly_id": hits[0][1] if hits else None,
            "kth_failure_s": _kth_failure_s(incident, start),
        })

    false_alarms: list[dict] = []
    per_decoy: Counter[int | None] = Counter()     # by decoy index (None: outside any)
    for at, outcome, event in opens:
        if any(start <= at <= end + ALARM_SLACK for start, end, _ in incidents):
            continue
        decoy = next((n for n, (start, end, _) in enumerate(decoys) if start <= at <= end + ALARM_SLACK), None)
        per_decoy[decoy] += 1
        false_alarms.append({"id": event.get("id"), "outcome": outcome, "detected_at": _rfc3339(at),
                             "decoy": None if decoy is None else decoys[decoy][2].get("desc", "")})

    wrong_outcome = []
    for at, outcome, event in opens:
        during = [str(i["outcome"]).upper() for start, end, i in incidents
                  if start <= at <= end + DETECT_SLACK]
        if during and outcome not in during and outcome != "ALL":
            wrong_outcome.append({"id": event.get("id"), "outcome": outcome,
                                  "detected_at": _rfc3339(at), "expected": sorted(set(during))})

    delays = [row["delay_s"] for row in rows if row["detected"]]
    detected = len(delays)
    return {
        "scenario": truth.get("scenario"),
        "incidents": rows,
        "detected": detected,
        "total_incidents": len(rows),
        "recall": detected / len(rows) if rows else None,
        "false_alarm_count": len(false_alarms),
        "false_alarms": false_alarms,
        "wrong_outcome_count": len(wrong_outcome),
        "wrong_outcome": wrong_outcome,
        "decoys": [{"start": d["start"], "end": d["end"], "desc": d.get("desc", ""),
                    "false_alarms": per_decoy[n]} for n, (_, _, d) in enumerate(decoys)],
        "median_delay_s": statistics.median(delays) if delays else None,
        "max_delay_s": max(delays) if delays else None,
        "events_by_state": {state: by_state.get(state, 0) for state in ("open", "update", "resolved")},
    }


def format_table(report: dict) -> str:
    """The report as a table for people."""
    recall = "n/a" if report["recall"] is None else f"{report['recall']:.0%}"
    width = max([7] + [len(str(row["anomaly_id"])) for row in report["incidents"]])
    lines = [f"Incidents: {report['detected']} of {report['total_incidents']} detected, recall {recall}",
             f"  {'outcome':<9} {'start':<20} {'end':<20} {'detected':<8} {'delay':>7} "
             f"{f'{KTH_FAILURE}th fail':>9}  {'anomaly':<{width}}  desc"]
    for row in report["incidents"]:
        lines.append(f"  {row['outcome']:<9} {row['start']:<20} {row['end']:<20} "
                     f"{'yes' if row['detected'] else 'NO':<8} {_seconds(row['delay_s']):>7} "
                     f"{_seconds(row.get('kth_failure_s')):>9}  "
                     f"{str(row['anomaly_id'] or '-'):<{width}}  {row['desc']}")
    lines.append(f"False alarms: {report['false_alarm_count']}")
    for alarm in report["false_alarms"]:
        lines.append(f"  {alarm['detected_at']:<20} {alarm['outcome'] or '?':<9} {alarm['id']}"
                     f"  decoy: {alarm['decoy'] or '-'}")
    lines.append(f"Wrong-outcome opens: {report['wrong_outcome_count']}")
    for wrong in report["wrong_outcome"]:
        lines.append(f"  {wrong['detected_at']:<20} {wrong['outcome']:<9} {wrong['id']}"
                     f"  during {', '.join(wrong['expected'])}")
    lines.append(f"Delay: median {_seconds(report['median_delay_s'])}, max {_seconds(report['max_delay_s'])}")
    lines.append("Events: " + ", ".join(f"{state} {n}" for state, n in report["events_by_state"].items()))
    return "\n".join(lines)


def _kth_failure_s(incident: dict, start: datetime) -> float | None:
    failures = incident.get("first_failures") or []
    if len(failures) < KTH_FAILURE:
        return None
    return (parse_time(sorted(failures, key=parse_time)[KTH_FAILURE - 1]) - start).total_seconds()


def _detected_at(event: dict) -> datetime:
    try:
        return parse_time(event["detected_at"])
    except (KeyError, TypeError, ValueError, OverflowError, OSError, AttributeError):
        raise EvaluationInputError(f"anomaly event {event.get('id')!r}: detected_at "
                         f"{event.get('detected_at')!r} is not an RFC 3339 time") from None


def _outcome(event: dict) -> str | None:
    key = event.get("key")
    outcome = key.get("outcome") if isinstance(key, dict) else None
    return str(outcome).upper() if outcome is not None else None


def _rfc3339(moment: datetime) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z")


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"

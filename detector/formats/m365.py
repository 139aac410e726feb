"""Microsoft 365 / Exchange Online message trace exports in, mail-flow records out.

Two shapes, mapped by column name (any order, any case, a byte-order mark or a PowerShell
``#TYPE`` line before the header is fine): the message trace summary (``Get-MessageTrace``:
``Received,SenderAddress,RecipientAddress,Subject,Status,ToIP,FromIP,Size,MessageId,
MessageTraceId``, one row per recipient) and its detail events (``Get-MessageTraceDetail``:
``Date,Event,Action,Detail,...``, several rows per recipient). Either comes as CSV (the adapter
keeps the last header line it saw, in ``snapshot()``) or as JSON lines (one object per line, same
names). A JSON array is read when each line holds whole objects: ``ConvertTo-Json -Compress`` of
the whole trace (one line, every element a record) or an array written one element per line
(``[``/``]`` lines skipped, a trailing ``,`` dropped); a pretty-printed array spreads one object
over many lines and cannot be read line by line: export with ``-Compress`` or as CSV.

Field mapping:

| record field  | from the trace |
|---------------|----------------|
| `ts`          | `Received` (detail events: `Date`): `2026-11-27T10:15:02.1234567` (no offset: UTC), `11/27/2026 10:15:02 AM` (US, CSV exports), `/Date(1795774502123)/` (PowerShell 5 JSON), or epoch numbers; as RFC 3339 UTC |
| `message_id`  | `MessageId` (`MessageTraceId` when empty), then `/<RecipientAddress>`: a message has one row per recipient with the same id and status, and the contract de-duplicates by (message_id, status) |
| `status`      | `Status`: Delivered delivered, Failed failed, Quarantined quarantined, FilteredAsSpam filtered, Pending pending, GettingStatus getting_status, Expanded expanded; anything else rejected `bad_value:status`. Detail events: `Event` Deliver and Send delivered, Fail failed, Defer deferred, Drop dropped, Expand expanded, Quarantine quarantined; other events (Receive, Submit, Resolve, Transfer, Spam Diagnostics, ...) are steps, skipped |
| `sender`      | `SenderAddress` |
| `recipient`   | `RecipientAddress` |
| `subject`     | `Subject` (the OTP rules read it) |
| `tenant`      | `Organization`, when the export has it |
| `direction`   | `Directionality`/`Direction` when present: Originating/Outbound outbound, Incoming/Inbound inbound |
| `status_code` | the first enhanced code (`4.4.312`) in `Detail` |
| `detail`      | `Detail` |
| `dns_outcome` | from `Detail`, the rules below |

The summary has no server (``server`` is left out: Microsoft's resolvers are not yours to log)
and no DNS text: only detail events give a ``dns_outcome``. A summary row and the detail event
of the same delivery share ``message_id`` and ``status``, so the core counts the delivery once and
keeps the first of the two it sees: feed the detail export when you have it.

DNS verdicts in ``Detail`` (Exchange's NDR codes and DnsStatus names), first match wins:

- X.4.315 (connection timed out), X.4.316 (connection refused), X.4.317 (cannot connect),
  X.4.318 (connection closed): none, the name resolved and the server did not answer;
- X.4.310 ``DNS domain ... does not exist``, ``InfoDomainNonexistent``, ``NonExistentDomain``:
  NXDOMAIN;
- ``InfoNoRecords`` (the name exists, no record of the type): NODATA;
- ``ErrorTimeout``: TIMEOUT;
- the generic reply rules of ``dnsverdict.dns_outcome_of_reply`` (an rcode named in capitals, a
  DNS lookup that timed out, an SPF/DKIM/DMARC temperror or 4.7.24, a null MX, a 5xx ``Domain not
  found``);
- X.4.312 ``DNS query failed``, ``ErrorRetry``, ``ServerFailure``: SERVFAIL (the resolver gave no
  usable answer and Exchange will retry).

Rejected rows: ``missing_field:<Column>`` / ``wrong_type:<Column>`` (Received, Status, MessageId),
``bad_ts``, ``bad_value:status``, ``no_header`` (a CSV row before any header), ``truncated`` (an
unclosed quote or brace, fewer columns than the header: a subject with a line break splits a CSV
row and both halves land here), ``bad_value:columns`` (more columns than the header),
``not_json`` / ``not_object`` (JSON lines), ``too_large``. Blank, ``#TYPE`` and array-bracket
lines are skipped. A one-line array gives several records, or several rejections with that
line's index.

Example:

>>> adapter = M365Adapter()
>>> batch = adapter.feed([
...     b'"Received","SenderAddress","RecipientAddress","Subject","Status","MessageId"',
...     b'"11/27/2026 10:15:02 AM","otp@bank.example","ann@mail.example","Your code","Failed",'
...     b'"<c0de@bank.example>"'])
>>> import orjson; orjson.loads(batch.records[0])["message_id"]
'<c0de@bank.example>/ann@mail.example'
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, timezone

import orjson

from ..core.records import Rejected, parse_ts
from .base import Adapter, Converted
from .dnsverdict import dns_outcome_of_reply
from .lines import clip_field, line_text
from .logtime import LAST_RFC3339_SECOND, rfc3339

_STATUSES = {"delivered": "delivered", "failed": "failed", "quarantined": "quarantined",
             "filteredasspam": "filtered", "pending": "pending", "gettingstatus": "getting_status",
             "expanded": "expanded"}
_EVENTS = {"deliver": "delivered", "send": "delivered", "fail": "failed", "defer": "deferred",
           "drop": "dropped", "expand": "expanded", "quarantine": "quarantined"}
_OPTIONAL_COLUMNS = (("sender", "senderaddress"), ("recipient", "recipientaddress"),
                     ("subject", "subject"), ("tenant", "organization"))
_DIRECTIONS = {"originating": "outbound", "outbound": "outbound", "incoming": "inbound",
               "inbound": "inbound"}
#: A header names the time and the outcome and at least one way to tell deliveries apart.
_HEADER_TIME_OUTCOME = ({"received", "status"}, {"date", "event"})
_HEADER_IDS = frozenset({"messageid", "messagetraceid", "recipientaddress"})

_US_TIME = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d\d)(?::(\d\d))?(\.\d+)?"
                      r"(?: ?([AaPp])[Mm])?")
_DOTNET_TIME = re.compile(r"\\?/Date\((-?\d{1,16})(?:[+-]\d{4})?\)\\?/")
_ISO_WITH_SPACE = re.compile(r"\d{4}-\d\d-\d\d \d")
_STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")

_CONNECTION_FAILURE = re.compile(r"\b[45]\.4\.31[5-8]\b")
_NXDOMAIN = re.compile(r"(?i)\b[45]\.4\.310\b|InfoDomainNonexistent|NonExistentDomain"
                       r"|\bnonexistent domain\b|\bDNS domain \S+ does not exist\b")
_QUERY_FAILED = re.compile(r"(?i)\b[45]\.4\.312\b|DNS query failed|ErrorRetry|ServerFailure")


def dns_outcome_of_exchange(detail: str) -> str | None:
    """The DNS verdict in a message trace event's ``Detail``, or ``None`` (rules in the docstring).

    >>> dns_outcome_of_exchange("450 4.4.312 DNS query failed(ServerFailure)")
    'SERVFAIL'
    >>> dns_outcome_of_exchange("550 5.4.310 DNS domain bank.example does not exist "
    ...                         "[Message=InfoDomainNonexistent]")
    'NXDOMAIN'
    """
    # Each pattern runs only after a cheap test for a word it cannot match without.
    lowered = detail.lower()
    if ".4.31" in detail and _CONNECTION_FAILURE.search(detail):
        return None
    if ("exist" in lowered or ".4.310" in detail) and _NXDOMAIN.search(detail):
        return "NXDOMAIN"
    if "InfoNoRecords" in detail:
        return "NODATA"
    if "ErrorTimeout" in detail:
        return "TIMEOUT"
    outcome = dns_outcome_of_reply(detail)
    if outcome:
        return outcome
    if _QUERY_FAILED.search(detail):
        return "SERVFAIL"
    return None


def received_seconds(value: object, column: str = "Received") -> float:
    """Epoch seconds of a trace time, or raise ``Rejected``.

    >>> received_seconds("11/27/2026 10:15:02 AM") == received_seconds("2026-11-27T10:15:02")
    True
    >>> received_seconds("/Date(1795774502123)/")
    1795774502.123
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_ts(value)
    if not isinstance(value, str):
        raise Rejected(f"wrong_type:{column}")
    text = value.strip()
    if match := _DOTNET_TIME.fullmatch(text):
        seconds = int(match.group(1)) / 1000.0
    elif match := _US_TIME.fullmatch(text):
        month, day, year, hour, minute, second, fraction, half = match.groups()
        hours = int(hour)
        if half:
            if not 1 <= hours <= 12:
                raise Rejected("bad_ts")
            hours = hours % 12 + (12 if half in "Pp" else 0)
        try:
            stamp = datetime(int(year), int(month), int(day), hours, int(minute),
                             min(int(second or 0), 59), tzinfo=timezone.utc)
        except ValueError:  # 31 February, hour 25, year 0
            raise Rejected("bad_ts") from None
        seconds = stamp.timestamp() + (float(fraction) if fraction else 0.0)
    else:
        if _ISO_WITH_SPACE.match(text):
            text = text.replace(" ", "T", 1)
        seconds = parse_ts(text)
    if not 0 <= seconds <= LAST_RFC3339_SECOND:
        raise Rejected("bad_ts")
    return seconds


def _is_header(names: list[str]) -> bool:
    present = set(names)
    return (any(required <= present for required in _HEADER_TIME_OUTCOME)
            and not present.isdisjoint(_HEADER_IDS))


class M365Adapter(Adapter):
    """Exchange Online message trace (CSV or JSON lines) to mail-flow records.

    ``max_line_bytes`` bounds one line; it is larger than the contract's line limit because a
    ``ConvertTo-Json -Compress`` export puts the whole trace on one line.
    """

    name = "m365"
    stream = "mail"
    max_pending = 1  # the CSV header

    def __init__(self, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_line_bytes = max_line_bytes
        self._columns: list[str] | None = None

    def feed(self, lines: list[bytes]) -> Converted:
        out = Converted()
        for index, raw in enumerate(lines):
            for reason in self._line(raw, out):
                out.rejected.append((index, reason))
        return out

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        """0.95 for a trace CSV header, 0.9 for JSON objects with trace names, else 0."""
        for raw in lines[:20]:
            text = line_text(raw).strip()
            if not text or text.startswith("#") or text in ("[", "]"):
                continue
            if text.startswith(("{", "[")):
                rows = cls._json_rows(text)
                first = rows[0] if rows else None
                return 0.9 if isinstance(first, dict) and _is_header(list(first)) else 0.0
            try:
                names = next(csv.reader([text]), [])
            except csv.Error:
                return 0.0
            return 0.95 if _is_header([name.strip().lower() for name in names]) else 0.0
        return 0.0

    def snapshot(self) -> dict:
        return {"columns": self._columns}

    def restore(self, state: dict) -> None:
        self._columns = state.get("columns")

    # --- one line ----------------------------------------------------------------------------
    def _line(self, raw: bytes, out: Converted) -> list[str]:
        """Add the line's records to ``out``; return the reasons of what it rejected."""
        if len(raw) > self.max_line_bytes:
            return ["too_large"]
        text = line_text(raw).strip()
        if not text or text.startswith("#") or text in ("[", "]", "],", "[]"):
            out.skipped += 1
            return []
        if text.startswith(("{", "[")):
            rows = self._json_rows(text)
        else:
            rows = self._csv_rows(text, out)
        reasons = []
        for row in rows:
            if isinstance(row, str):
                reasons.append(row)
                continue
            try:
                record = _record(row)
            except Rejected as rejected:
                reasons.append(rejected.reason)
                continue
            if record is None:
                out.skipped += 1
            else:
                out.add(record)
        return reasons

    @staticmethod
    def _json_rows(text: str) -> list[dict | str]:
        """The objects a JSON line holds, keys folded to lower case; a string is a rejection."""
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            element = text.rstrip(",")
            if element.startswith("[") and not element.endswith("]"):
                element = element[1:]  # the first element of an array written one per line
            elif element.endswith("]") and not element.startswith("["):
                element = element[:-1]  # the last one
            try:
                value = orjson.loads(element)
            except orjson.JSONDecodeError:
                return ["truncated" if text.startswith("{") and not text.endswith("}")
                        else "not_json"]
        values = value if isinstance(value, list) else [value]
        return [{str(key).lower(): item for key, item in element.items()}
                if isinstance(element, dict) else "not_object" for element in values]

    def _csv_rows(self, text: str, out: Converted) -> list[dict | str]:
        if text.count('"') % 2:
            return ["truncated"]
        try:
            fields = next(csv.reader([text]), [])
        except csv.Error:
            return ["truncated"]
        names = [field.strip().lower() for field in fields]
        if _is_header(names):
            self._columns = names
            out.skipped += 1
            return []
        if self._columns is None:
            return ["no_header"]
        if len(fields) < len(self._columns):
            return ["truncated"]
        if len(fields) > len(self._columns):
            return ["bad_value:columns"]
        return [dict(zip(self._columns, fields))]


def _record(row: dict) -> dict | None:
    """A contract record from one trace row (lower-case keys), ``None`` for a step event."""
    event = row.get("event")
    if event:
        status = _EVENTS.get(str(event).strip().lower())
        if status is None:
            return None
        when, column = row.get("date") or row.get("received"), "Date"
    else:
        raw_status = row.get("status")
        if not raw_status:
            raise Rejected("missing_field:Status")
        if not isinstance(raw_status, str):
            raise Rejected("wrong_type:Status")
        status = _STATUSES.get(raw_status.strip().lower())
        if status is None:
            raise Rejected("bad_value:status")
        when, column = row.get("received"), "Received"
    if when is None or when == "":
        raise Rejected(f"missing_field:{column}")
    seconds = received_seconds(when, column)
    message_id = row.get("messageid") or row.get("messagetraceid")
    if not message_id:
        raise Rejected("missing_field:MessageId")
    if not isinstance(message_id, str):
        raise Rejected("wrong_type:MessageId")
    texts = {key: value for key, value in row.items() if value and isinstance(value, str)}
    recipient = texts.get("recipientaddress")
    record = {"ts": rfc3339(seconds), "status": status,
              "message_id": clip_field(f"{message_id}/{recipient}" if recipient else message_id)}
    for name, key in _OPTIONAL_COLUMNS:
        if key in texts:
            record[name] = clip_field(texts[key])
    direction = _DIRECTIONS.get(
        (texts.get("directionality") or texts.get("direction") or "").strip().lower())
    if direction:
        record["direction"] = direction
    detail = texts.get("detail")
    if detail:
        record["detail"] = clip_field(detail)
        code = _STATUS_CODE.search(detail)
        if code:
            record["status_code"] = code.group(1)
        outcome = dns_outcome_of_exchange(detail)
        if outcome:
            record["dns_outcome"] = outcome
    return record

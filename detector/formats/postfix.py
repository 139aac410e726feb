"""Postfix maillog lines in, one mail-flow record per delivery attempt out.

Postfix spreads a message over several lines that share a queue id: cleanup logs its
``message-id=``, qmgr its envelope sender (``from=<...>, size=..., nrcpt=...``), then a delivery
agent (smtp, lmtp, local, virtual, pipe, error, ...) one line per recipient with ``status=``, and
qmgr ``removed`` at the end. The adapter remembers sender and message-id per queue id (at most
``max_queue_ids``, the oldest dropped first and counted in ``evicted``; forgotten at ``removed``)
and emits a record at each delivery line, so ``flush()`` has nothing to add. Syslog headers may be
classic BSD (``Nov 27 10:15:02 mx1 postfix/smtp[1234]:``, no year: the ``year`` argument, a new
year when the month falls back from December to January, local time in ``tz``; see ``logtime``),
RFC 5424 (``<22>1 2026-11-27T10:15:02.123+00:00 mx1 postfix/smtp 1234 - - ...``) or rsyslog's ISO
time (``2026-11-27T10:15:02.123456+00:00 mx1 postfix/smtp[1234]:``); a Solaris ``[ID 197553
mail.info]`` tag is dropped, and any ``postfix/<service>``, ``postfix-<instance>/<service>``
program counts.

Field mapping:

| record field  | from the maillog |
|---------------|------------------|
| `ts`          | the syslog header's time, as RFC 3339 UTC |
| `message_id`  | cleanup's `message-id=<...>` for the queue id (`<queue id>@<host>` when never seen), then `/<recipient>`: one message has one record per recipient, and the contract de-duplicates by (message_id, status) |
| `status`      | `status=sent` delivered, `deferred` deferred, `bounced` and `expired` failed; a reject's 4xx deferred, 5xx failed |
| `sender`      | qmgr's `from=<...>` for the queue id (`""` for the null sender); omitted when that line was never seen (a rotated or sampled log); a reject's own `from=<...>` |
| `recipient`   | `to=<...>` |
| `server`      | the syslog host |
| `direction`   | `outbound` for the smtp/relay client to a relay that is not loopback (`relay=none` too), `inbound` for local, virtual and lmtp; omitted otherwise (pipe, content filters, rejects) |
| `status_code` | `dsn=` (a reject's enhanced code) |
| `detail`      | the text in parentheses after `status=` (a reject's reply) |
| `dns_outcome` | from `detail`, the rules below; omitted when the text names no DNS verdict, so the core joins the delivery with resolver logs |

DNS verdicts, first match wins (``dns_outcome_of_detail``):

- A remote server's reply (``host ... said: ...``) and a reject's reply are read by the reply rules
  (``dnsverdict.dns_outcome_of_reply``, the last item); a connection failure (``connect to ...``,
  ``conversation with ...``, ``lost connection with ...``) names none: the name resolved, the host
  did not answer.
- Postfix's own resolver (``Name service error for name=... type=...: <h_errno text>``):
  ``Host not found, try again`` (TRY_AGAIN: the resolver got no answer) is SERVFAIL; ``Host not
  found`` is NXDOMAIN; ``Host found but no data record of requested type`` is NODATA;
  ``Non-recoverable error`` (the server answered REFUSED, FORMERR or NOTIMP; REFUSED is by far the
  usual one) is REFUSED.
- The native resolver (``unable to look up host X: <gai_strerror>``): ``Temporary failure in name
  resolution`` is SERVFAIL, not TIMEOUT: it is glibc's EAI_AGAIN, the same TRY_AGAIN condition as
  above (a SERVFAIL and a timeout both give it), and one resolver condition should not split into
  two anomaly keys by which lookup path Postfix took. ``Name or service not known`` is NXDOMAIN,
  ``No address associated with hostname`` and ``X: host not found`` (no address of a usable
  family) are NODATA.
- Reply rules (``dnsverdict``, which says why): a null MX (``nullMX``, X.7.27) is NOERROR; an rcode
  named in capitals (``NXDOMAIN``, ``SERVFAIL``, ...) is that rcode; a DNS lookup that timed out
  is TIMEOUT; an SPF/DKIM/DMARC temperror (``4.7.24``, ``temperror``) is SERVFAIL (TIMEOUT when it
  says timeout; a permerror gets none); a 5xx ``rejected: Domain not found`` / ``Host not found``
  is NXDOMAIN, a 4xx one none (Postfix's unknown_address_reject_code is 450 for a missing domain
  and a temporary failure alike); ``Malformed DNS server reply`` is OTHER; reverse-DNS rejects
  (X.7.25) get none.

Lines and what they become:

- a delivery line: a record (an address-verification probe, ``status=deliverable`` or
  ``undeliverable``, is skipped); qmgr's ``from=<...>, status=expired, returned to sender``: a
  ``failed`` record for the message (``message_id`` without a recipient part);
- ``reject:`` / ``milter-reject:`` with an envelope (``from=<...>``), NOQUEUE or with a queue id: a
  record, because a rejected attempt is a failed delivery (an OTP from a sender whose domain does
  not resolve dies exactly here). NOQUEUE has no message id, so it is
  ``NOQUEUE@<host>/<ts>/<sender>/<recipient>``: distinct per attempt and the same on a replay;
- connect/disconnect, anvil, ``warning:``, TLS, pickup, ``reject_warning:`` and rejects without an
  envelope (CONNECT, EHLO): skipped; so is a well-formed syslog line from another program
  (dovecot, opendkim, policyd-spf, ... share the maillog; dead-lettering them would bury the
  real rejects);
- rejected: ``not_postfix`` (no syslog header at all), ``truncated`` (a header or delivery line cut
  short: no ``status=``, an unclosed ``(``; a cut text could change the verdict), ``bad_ts`` (a
  header time that is not a date), ``bad_value:status`` (an unknown ``status=`` word),
  ``too_large`` (over the contract's line limit).

Example:

>>> adapter = PostfixAdapter(year=2026)
>>> batch = adapter.feed([
...     b"Nov 27 10:15:01 mx1 postfix/qmgr[88]: 4F1B2C3D: from=<otp@bank.example>, size=1200, "
...     b"nrcpt=1 (queue active)",
...     b"Nov 27 10:15:02 mx1 postfix/smtp[91]: 4F1B2C3D: to=<ann@mail.example>, relay=none, "
...     b"delay=1, delays=0/0/1/0, dsn=4.4.3, status=deferred (Host or domain name not found. "
...     b"Name service error for name=mail.example type=MX: Host not found, try again)"])
>>> import orjson; record = orjson.loads(batch.records[0])
>>> record["ts"], record["status"], record["sender"], record["dns_outcome"]
('2026-11-27T10:15:02Z', 'deferred', 'otp@bank.example', 'SERVFAIL')
"""

from __future__ import annotations

import re

from ..core.records import MAX_LINE_BYTES, Rejected, parse_ts
from .base import Adapter, Converted
from .dnsverdict import dns_outcome_of_reply
from .lines import clip_field, line_text
from .logtime import LAST_RFC3339_SECOND, LogTime, rfc3339

# Syslog headers. Classic and ISO: optional <PRI>, time, host, "program[pid]: message". Any
# capitalised word passes for a month here, so that "Foo 27 ..." is a bad time, not another line.
_CLASSIC = re.compile(
    r"(?:<\d{1,3}>)?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d(?:\.\d+)?) (.*)", re.S)
_ISO = re.compile(r"(?:<\d{1,3}>)?(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d(?:\.\d+)?)"
                  r"(Z|z|[+-]\d\d:?\d\d)? (.*)", re.S)
_RFC5424 = re.compile(r"<\d{1,3}>1 (\S+) (\S+) (\S+) (\S+) (\S+) ?(.*)", re.S)
_HEADER_START = re.compile(
    r"(?:<\d{1,3}>(?:1 )?)?(?:[A-Z][a-z]{2} {1,2}\d|\d{4}-\d\d-\d\d[T ]\d)")
_HOST_PROGRAM = re.compile(r"(\S+) ([^\s\[\]:]+)(?:\[\d+\])?: ?(.*)", re.S)
_PROGRAM = re.compile(r"([^\s\[\]:]+)(?:\[\d+\])?: ?(.*)", re.S)
_POSTFIX_PROGRAM = re.compile(r"postfix(?:-[\w.-]+)?(?:/[\w.-]+)*")
_SOLARIS_TAG = re.compile(r"\[ID \d+ [\w.]+\] ")

# Message bodies. Short queue ids are hex; long ones (enable_long_queue_ids) use a vowel-free
# alphabet, which keeps "warning:", "fatal:", "statistics:" from passing for a queue id.
_QUEUE_LINE = re.compile(
    r"(NOQUEUE|[0-9A-F]{5,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): (.*)", re.S)
_DELIVERY = re.compile(r"to=<([^>]*)>,(.*?) status=([a-z]*)(.*)", re.S)
_RELAY = re.compile(r" relay=([^,\s]+)")
_DSN = re.compile(r" dsn=(\d\.\d{1,3}\.\d{1,3})")
_QMGR = re.compile(r"from=<([^>]*)>, (size=\d+, nrcpt=\d+|status=expired)")
_REJECT = re.compile(r"(?:milter-)?reject: ([A-Z][A-Z-]*) from (\S+?): (.*?); from=<([^>]*)>"
                     r"(?: to=<([^>]*)>)? proto=", re.S)
_REJECT_STAGE = re.compile(r"(?:milter-)?reject: [A-Z][A-Z-]* from ")
_REPLY_CODES = re.compile(r"\s*(?:([245])\d\d[ -])?(?:([245]\.\d{1,3}\.\d{1,3})\b)?")

_STATUSES = {"sent": "delivered", "deferred": "deferred", "bounced": "failed", "expired": "failed"}
_PROBE_STATUSES = frozenset({"deliverable", "undeliverable"})
_OUTBOUND_SERVICES = frozenset({"smtp", "relay"})
_INBOUND_SERVICES = frozenset({"local", "virtual", "lmtp"})
_LOOPBACK_RELAY = re.compile(r"(?:localhost|127\.|\[?::1\]?|private/|public/)")

# --- DNS verdicts in delivery and reply texts (see the module docstring) -------------------------
_CONNECTION_FAILURE = ("connect to ", "conversation with ", "lost connection with ")
#: Postfix's resolver error, then the h_errno text; the native resolver's, then gai_strerror().
_RESOLVER_ERRORS = (
    (re.compile(r"Name service error for name=\S* type=\S*: "), (
        ("Host not found, try again", "SERVFAIL"),
        ("Host found but no data record", "NODATA"),
        ("Host not found", "NXDOMAIN"),
        ("Non-recoverable error", "REFUSED"))),
    (re.compile(r"unable to look up host \S+: "), (
        ("Temporary failure in name resolution", "SERVFAIL"),
        ("Name or service not known", "NXDOMAIN"),
        ("No address associated with hostname", "NODATA"))),
)
_NO_USABLE_ADDRESS = re.compile(r"\S+: host not found")


def dns_outcome_of_detail(detail: str) -> str | None:
    """The DNS verdict in a delivery line's parenthesised text, or ``None``.

    >>> dns_outcome_of_detail("Host or domain name not found. Name service error for "
    ...                       "name=bank.example type=MX: Host not found")
    'NXDOMAIN'
    >>> dns_outcome_of_detail("connect to mx.dns-host.example[192.0.2.7]:25: "
    ...                       "Connection timed out") is None
    True
    """
    said = detail.find(" said: ")
    if said >= 0:
        return dns_outcome_of_reply(detail[said + 7:])
    body = detail.removeprefix("delivery temporarily suspended: ")
    if body.startswith(_CONNECTION_FAILURE):
        return None
    for pattern, texts in _RESOLVER_ERRORS:
        found = pattern.search(body)
        if found:
            for text, outcome in texts:
                if body.startswith(text, found.end()):
                    return outcome
    if _NO_USABLE_ADDRESS.fullmatch(body):
        return "NODATA"
    return dns_outcome_of_reply(body)


def _split_header(text: str) -> tuple[tuple, str | None, str, str]:
    """``(stamp, host, program, message)`` of one syslog line, or raise ``Rejected``.

    ``stamp`` is ``("classic", month name, day, hh:mm:ss[.fff])`` or ``("iso", RFC 3339 text)``;
    the caller turns it into seconds (classic needs the year state).
    """
    if text.startswith("<") and (match := _RFC5424.match(text)):
        stamp_text, host, program, _procid, _msgid, rest = match.groups()
        return ("iso", stamp_text), None if host == "-" else host, program, _rfc5424_message(rest)
    if match := _CLASSIC.match(text):
        month, day, hms, rest = match.groups()
        stamp: tuple[str, ...] = ("classic", month, day, hms)
    elif match := _ISO.match(text):
        date, clock, offset, rest = match.groups()
        if offset and offset not in "Zz" and ":" not in offset:
            offset = f"{offset[:3]}:{offset[3:]}"
        stamp = ("iso", f"{date}T{clock}{offset or ''}")
    elif _HEADER_START.match(text):
        raise Rejected("truncated")
    else:
        raise Rejected("not_postfix")
    first = rest.partition(" ")[0]
    if first.endswith(":") and (tagged := _PROGRAM.match(rest)):  # no host in the header
        return stamp, None, tagged.group(1), tagged.group(2)
    tagged = _HOST_PROGRAM.match(rest)
    if tagged is None:
        raise Rejected("truncated" if ": " not in rest else "not_postfix")
    return stamp, tagged.group(1), tagged.group(2), tagged.group(3)


def _rfc5424_message(rest: str) -> str:
    """The MSG after RFC 5424 STRUCTURED-DATA (``-`` or ``[id k="v"]...``)."""
    if rest.startswith("-"):
        return rest[2:]
    if not rest.startswith("["):
        raise Rejected("not_postfix")
    position, quoted, length = 0, False, len(rest)
    while position < length:
        char = rest[position]
        if quoted:
            if char == "\\":
                position += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "]" and (position + 1 == length or rest[position + 1] != "["):
            return rest[position + 2:]
        position += 1
    raise Rejected("truncated")


class PostfixAdapter(Adapter):
    """Postfix maillog to mail-flow records, correlating a queue id's lines.

    Parameters: ``year`` for classic headers (default: the current UTC year, or the previous one
    when the first line's month is later than the current month, as when December's log is read
    in January); ``tz``, the zone classic headers are written in (default ``"UTC"``; ISO and
    RFC 5424 headers carry their offset); ``max_queue_ids``, the bound on remembered queue ids.
    """

    name = "postfix"
    stream = "mail"

    def __init__(self, year: int | None = None, tz: str = "UTC",
                 max_queue_ids: int = 100_000) -> None:
        self.max_pending = max_queue_ids
        self._clock = LogTime(tz, year, latest=LAST_RFC3339_SECOND)
        #: queue id -> [sender, message-id], oldest first.
        self._queue: dict[str, list[str | None]] = {}
        self.evicted = 0

    # --- the protocol --------------------------------------------------------------------------
    def feed(self, lines: list[bytes]) -> Converted:
        out = Converted()
        for index, raw in enumerate(lines):
            try:
                self._line(raw, out)
            except Rejected as rejected:
                out.rejected.append((index, rejected.reason))
        return out

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        """The share of syslog lines from a Postfix program among the first lines."""
        seen = postfix = 0
        for raw in lines[:50]:
            text = line_text(raw)
            if not text.strip():
                continue
            seen += 1
            try:
                _stamp, _host, program, _message = _split_header(text)
            except Rejected:
                continue
            if _POSTFIX_PROGRAM.fullmatch(program):
                postfix += 1
        if not postfix:
            return 0.0
        return 0.5 + 0.5 * postfix / seen

    def snapshot(self) -> dict:
        return {**self._clock.state(), "evicted": self.evicted,
                "queue": [[queue_id, *entry] for queue_id, entry in self._queue.items()]}

    def restore(self, state: dict) -> None:
        self._clock.load(state)
        self.evicted = state.get("evicted", 0)
        self._queue = {queue_id: [sender, message_id]
                       for queue_id, sender, message_id in state.get("queue", [])}

    # --- one line ----------------------------------------------------------------------------
    def _line(self, raw: bytes, out: Converted) -> None:
        if len(raw) > MAX_LINE_BYTES:
            raise Rejected("too_large")
        text = line_text(raw)
        if not text.strip():
            out.skipped += 1
            return
        stamp, host, program, message = _split_header(text)
        seconds = self._seconds(stamp)
        if not _POSTFIX_PROGRAM.fullmatch(program):
            out.skipped += 1
            return
        if message.startswith("[ID "):
            message = _SOLARIS_TAG.sub("", message, count=1)
        queue_line = _QUEUE_LINE.match(message)
        if queue_line is None:
            out.skipped += 1
            return
        queue_id, body = queue_line.groups()
        service = program.rpartition("/")[2]
        if body.startswith("to=<"):
            record = self._delivery(seconds, host, service, queue_id, body)
        elif body.startswith(("reject: ", "milter-reject: ")):
            record = self._reject(seconds, host, queue_id, body)
        elif queue_id == "NOQUEUE":
            record = None
        elif body.startswith("from=<"):
            record = self._envelope(seconds, host, queue_id, body)
        elif body.startswith("message-id="):
            message_id = body[11:].strip()
            if message_id and message_id != "<>":
                self._remember(queue_id)[1] = message_id
            record = None
        elif body == "removed":
            self._queue.pop(queue_id, None)
            record = None
        else:
            record = None
        if record is None:
            out.skipped += 1
        else:
            out.add(record)

    def _seconds(self, stamp: tuple) -> float:
        seconds = parse_ts(stamp[1]) if stamp[0] == "iso" else self._clock.bsd(*stamp[1:])
        if seconds is None or not 0 <= seconds <= LAST_RFC3339_SECOND:
            raise Rejected("bad_ts")
        return seconds

    # --- line kinds -----------------------------------------------------------------------------
    def _remember(self, queue_id: str) -> list[str | None]:
        entry = self._queue.get(queue_id)
        if entry is None:
            if len(self._queue) >= self.max_pending:
                del self._queue[next(iter(self._queue))]
                self.evicted += 1
            entry = self._queue[queue_id] = [None, None]
        return entry

    def _message_id(self, queue_id: str, host: str | None) -> tuple[str, str | None]:
        """(message id, sender) known for a queue id."""
        sender, message_id = self._queue.get(queue_id) or (None, None)
        return message_id or f"{queue_id}@{host or 'localhost'}", sender

    def _delivery(self, seconds: float, host: str | None, service: str, queue_id: str,
                  body: str) -> dict | None:
        match = _DELIVERY.match(body)
        if match is None:
            raise Rejected("truncated")
        recipient, fields, word, rest = match.groups()
        rest = rest.rstrip()
        if word in _PROBE_STATUSES:
            return None
        status = _STATUSES.get(word)
        if status is None:
            raise Rejected("bad_value:status" if rest else "truncated")
        if rest and not (rest.startswith(" (") and rest.endswith(")")):
            raise Rejected("truncated")
        detail = rest[2:-1] if rest else None
        message_id, sender = self._message_id(queue_id, host)
        record = {"ts": rfc3339(seconds), "message_id": clip_field(f"{message_id}/{recipient}"),
                  "status": status, "recipient": clip_field(recipient)}
        if sender is not None:
            record["sender"] = clip_field(sender)
        if host:
            record["server"] = clip_field(host)
        relay = _RELAY.search(fields)
        loopback = relay is not None and _LOOPBACK_RELAY.match(relay.group(1))
        if service in _OUTBOUND_SERVICES and not loopback:
            record["direction"] = "outbound"
        elif service in _INBOUND_SERVICES:
            record["direction"] = "inbound"
        dsn = _DSN.search(fields)
        if dsn:
            record["status_code"] = dsn.group(1)
        if detail:
            record["detail"] = clip_field(detail)
            outcome = dns_outcome_of_detail(detail)
            if outcome:
                record["dns_outcome"] = outcome
        return record

    def _envelope(self, seconds: float, host: str | None, queue_id: str,
                  body: str) -> dict | None:
        match = _QMGR.match(body)
        if match is None:  # qmgr writes only these two shapes: anything else was cut short
            raise Rejected("truncated")
        sender, what = match.groups()
        self._remember(queue_id)[0] = sender
        if what != "status=expired":
            return None
        message_id, _ = self._message_id(queue_id, host)
        record = {"ts": rfc3339(seconds), "message_id": clip_field(message_id), "status": "failed",
                  "sender": clip_field(sender), "detail": "expired, returned to sender"}
        if host:
            record["server"] = clip_field(host)
        return record

    def _reject(self, seconds: float, host: str | None, queue_id: str, body: str) -> dict | None:
        match = _REJECT.match(body)
        if match is None:
            if _REJECT_STAGE.match(body) and "; from=<" in body:
                raise Rejected("truncated")
            return None  # CONNECT, EHLO, header/body checks: no envelope to count
        stage, _client, reply, sender, recipient = match.groups()
        codes = _REPLY_CODES.match(reply)
        assert codes is not None              # (every part of it is optional)
        reply_class, dsn = codes.group(1), codes.group(2)
        status = "deferred" if (reply_class or (dsn or "5")[0]) == "4" else "failed"
        stamp = rfc3339(seconds)
        if queue_id == "NOQUEUE":
            message_id = f"NOQUEUE@{host or 'localhost'}/{stamp}/{sender}/{recipient or ''}"
        else:
            message_id, _ = self._message_id(queue_id, host)
            message_id = f"{message_id}/{recipient}" if recipient else message_id
            if stage in ("DATA", "END-OF-MESSAGE"):
                self._queue.pop(queue_id, None)  # the whole message is refused: no more lines
        record = {"ts": stamp, "message_id": clip_field(message_id), "status": status,
                  "sender": clip_field(sender), "detail": clip_field(reply)}
        if recipient is not None:
            record["recipient"] = clip_field(recipient)
        if host:
            record["server"] = clip_field(host)
        if dsn:
            record["status_code"] = dsn
        outcome = dns_outcome_of_reply(reply)
        if outcome:
            record["dns_outcome"] = outcome
        return record

"""Zeek's ``dns.log`` and ``smtp.log``, in the TSV form Zeek writes by default and in its JSON form.

A network sensor sees both sides of the question: the mail server asking its resolver (``dns.log``)
and the SMTP conversation that then defers or fails (``smtp.log``), with the same IP addresses on
both. TSV files carry their own schema in ``#`` header lines; a column is found by its name in the
``#fields`` line, never by its position, and a new header (log rotation, a restarted sensor, a file
concatenated from several) replaces the old one. The header is the adapter's only state between
batches (``snapshot()``/``restore()``); header lines are counted as ``skipped``. JSON lines (Zeek's
``LogAscii::use_json``) are one object each, with ``id.orig_h``-style keys or a nested ``id``
object, and ``ts`` as epoch seconds or an ISO 8601 string.

``dns.log`` (``ZeekDns``, name ``zeek-dns``):

| Zeek field | record field | rule |
|---|---|---|
| ``ts`` (+ ``rtt``) | ``ts`` | Zeek's ``ts`` is when the query was seen; the answer came ``rtt`` later |
| ``query`` | ``qname`` | |
| ``qtype_name`` | ``qtype`` | |
| ``rcode_name`` (or ``rcode``) | ``rcode`` | unset and no answers: ``TIMEOUT`` (no reply seen) |
| ``answers`` | ``answers`` | a list; ``NOERROR`` with none is read as ``NODATA`` by the core |
| ``id.orig_h`` | ``client`` | the host that asked (a mail server) |
| ``id.resp_h`` | ``resolver`` | the server that answered |
| ``rtt`` | ``latency_ms`` | seconds to milliseconds |
| ``rejected`` | ``rcode`` | only when no rcode was logged: ``REFUSED`` |

Zeek sets ``rejected=T`` for *any* reply with no records in any section (Zeek's ``dns_rejected``
event), so a plain SERVFAIL or a NODATA without SOA is "rejected" too: the logged rcode always wins.
Queries to mDNS, LLMNR and NetBIOS (``id.resp_p`` 5353, 5355, 137) are skipped: they are not
unicast resolution and are often unanswered by design, which would read as timeouts.

``smtp.log`` (``ZeekSmtp``, name ``zeek-smtp``), one record per recipient in ``rcptto``:

| Zeek field | record field | rule |
|---|---|---|
| ``ts`` | ``ts`` | when the transaction began (Zeek logs no end time) |
| ``msg_id`` (or ``uid``-``trans_depth``) | ``message_id`` | ``<base>/<recipient>``: unique per recipient, stable across replays |
| ``last_reply`` code | ``status`` | 2xx ``delivered`` (221 excepted), 4xx ``deferred``, 5xx ``failed``, else ``pending`` |
| ``last_reply`` | ``status_code``, ``detail`` | the enhanced code (``4.4.3``), else the reply code; the reply text |
| ``mailfrom`` | ``sender`` | |
| ``rcptto`` | ``recipient`` | |
| ``id.resp_h`` | ``server`` | the receiving server: it checks SPF/DKIM/DMARC, so its lookups are the ones that fail the mail; ``helo`` is the *sending* client's name and is not used |
| ``subject`` | ``subject`` | |

Honest limits. Zeek sees only what crosses its tap in clear text: after ``STARTTLS`` (most
server-to-server mail today) the transaction is invisible, and such a line (no sender, no
recipient) is skipped. ``last_reply`` is the last reply of the transaction: after a completed
``DATA`` it is the acceptance or refusal of the message, but a transaction abandoned after a refused
``RCPT TO`` may end on the reply to ``RSET`` (2xx) or ``QUIT`` (221), so such a refusal can hide;
221 and a missing or 3xx reply (connection cut mid-``DATA``) say nothing about the delivery and
become ``pending``, which the core ignores. ``delivered`` means accepted by the next hop, not by the
mailbox. Zeek's ``smtp.log`` ``ts`` is the *start* of the transaction, while the contract's is its
end, and the receiving server's SPF/DKIM/DMARC lookups happen during it: a lookup answered more than
``window_after_s`` (5 s by default) into a transaction (a slow SERVFAIL) falls outside the join
window, so with Zeek mail records a ``window_after_s`` of 15-30 s is the right setting. Retries of
one message to one recipient with the same status within the core's de-duplication horizon count
once. A ``TIMEOUT`` in ``dns.log`` means no reply was *seen*: packet loss at the tap looks the
same, and Zeek does not log when the asker gave up, so its ``ts`` stays the query time. ``answers``
lists only the record types Zeek decodes (``TXT``, ``MX``, ``A``, ``AAAA``, ``CNAME``... all that
mail needs); an answer of a type it does not decode leaves the list empty, which reads as
``NODATA``. Rejections: ``truncated`` (fewer columns than ``#fields``, or cut JSON),
``bad_columns`` (more), ``no_header`` (data before any ``#fields`` that does not fit Zeek's default
columns), ``bad_ts``, ``too_large``, ``not_zeek_dns`` / ``not_zeek_smtp`` (another log).

>>> adapter = ZeekDns()
>>> out = adapter.feed([b'{"ts": 1795774502.0, "query": "bank.example", "qtype_name": "TXT", '
...                     b'"rcode_name": "SERVFAIL", "id.orig_h": "10.0.0.5", "rtt": 0.25}'])
>>> out.records
[b'{"ts":1795774502.25,"qname":"bank.example","rcode":"SERVFAIL","qtype":"TXT","client":"10.0.0.5","latency_ms":250.0}']
"""

from __future__ import annotations

from abc import abstractmethod

import re

import orjson

from ..core.records import Rejected, parse_ts
from .base import Converted
from .dnsverdict import RCODE_NAMES, dns_record
from .lines import LineAdapter, clip_field
from .logtime import MAX_EPOCH_S

#: Zeek's default column order, used for data lines that arrive before any header (a tail of a
#: file, a shipper that dropped the ``#`` lines) when their column count matches exactly.
DNS_DEFAULT_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "trans_id", "rtt",
    "query", "qclass", "qclass_name", "qtype", "qtype_name", "rcode", "rcode_name", "AA", "TC",
    "RD", "RA", "Z", "answers", "TTLs", "rejected",
)
SMTP_DEFAULT_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "trans_depth", "helo",
    "mailfrom", "rcptto", "date", "from", "to", "cc", "reply_to", "msg_id", "in_reply_to",
    "subject", "x_originating_ip", "first_received", "second_received", "last_reply", "path",
    "user_agent", "tls", "fuids", "is_webmail",
)
#: Multicast and NetBIOS name services: not unicast resolution, often unanswered by design.
NON_RESOLVER_PORTS = frozenset({137, 5353, 5355})

_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def _unescape(value: str) -> str:
    """Zeek writes the separators and unprintable bytes inside a value as ``\\xNN``."""
    if "\\x" not in value:
        return value
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def _epoch(value: object) -> float:
    """Zeek's ``ts`` as epoch seconds (a number, a numeric string, or ISO 8601); ``Rejected``."""
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            return parse_ts(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise Rejected("bad_ts")
    if not 0.0 <= seconds <= MAX_EPOCH_S:  # also false for NaN
        raise Rejected("bad_ts")
    return seconds


def _seconds(value: object) -> float | None:
    """A Zeek ``interval`` (``rtt``) as seconds, or None when unset or not a sane duration."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if 0.0 <= seconds < 86400.0 else None


class _Header:
    """One TSV header: separators, the placeholders for unset and empty values, the columns."""

    __slots__ = ("separator", "set_separator", "empty", "unset", "path", "fields")

    def __init__(self) -> None:
        self.separator = "\t"
        self.set_separator = ","
        self.empty = "(empty)"
        self.unset = "-"
        self.path: str | None = None
        self.fields: tuple[str, ...] | None = None

    def state(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def load(self, state: dict) -> None:
        for name in self.__slots__:
            if name in state:
                value = state[name]
                setattr(self, name, tuple(value) if name == "fields" and value else value)


class _ZeekLog(LineAdapter):
    """TSV and JSON framing shared by the Zeek logs; subclasses turn one row into records."""

    #: Columns a row must have for this log (checked against ``#fields``).
    required: tuple[str, ...] = ()
    #: Keys of which a JSON line of this log has at least one (Zeek leaves unset fields out).
    json_keys: tuple[str, ...] = ()
    default_fields: tuple[str, ...] = ()
    path_name = ""

    def __init__(self) -> None:
        self.header = _Header()
        self._columns: dict[str, int] = {}
        self.not_mine = f"not_{self.name.replace('-', '_')}"

    # -- the protocol ------------------------------------------------------------------------------
    def _line(self, line: str, out: Converted) -> str | None:
        try:
            if line.startswith("#"):
                self._header_line(line)
                out.skipped += 1
            elif line.startswith("{"):
                self._json_line(line, out)
            elif line.strip():
                self._tsv_line(line, out)
            else:
                out.skipped += 1
        except Rejected as err:
            return err.reason
        return None

    def snapshot(self) -> dict:
        return {"header": self.header.state()}

    def restore(self, state: dict) -> None:
        self.header = _Header()
        self.header.load(state.get("header", {}))
        self._index_columns()

    # -- framing -----------------------------------------------------------------------------------
    def _header_line(self, line: str) -> None:
        if line.startswith("#separator"):
            # A new file (or a rotated one) starts: everything it said before no longer holds.
            self.header = _Header()
            self.header.separator = _unescape(line[len("#separator"):].strip()) or "\t"
            self._columns = {}
            return
        key, _, value = line[1:].partition(self.header.separator)
        if key == "fields":
            self.header.fields = tuple(value.split(self.header.separator))
            self._index_columns()
        elif key == "set_separator":
            self.header.set_separator = _unescape(value) or ","
        elif key == "empty_field":
            self.header.empty = value
        elif key == "unset_field":
            self.header.unset = value
        elif key == "path":
            self.header.path = value

    def _index_columns(self) -> None:
        fields = self.header.fields or ()
        self._columns = {name: i for i, name in enumerate(fields)}

    def _tsv_line(self, line: str, out: Converted) -> None:
        values = line.split(self.header.separator)
        columns = self._columns
        if not columns:
            if len(values) != len(self.default_fields):
                raise Rejected("no_header")
            columns = {name: i for i, name in enumerate(self.default_fields)}
        if any(name not in columns for name in self.required):
            raise Rejected(self.not_mine)
        if len(values) < len(columns):
            raise Rejected("truncated" if len(values) > 1 else self.not_mine)
        if len(values) > len(columns):
            raise Rejected("bad_columns")
        unset, empty = self.header.unset, self.header.empty

        def get(name: str) -> str | None:
            i = columns.get(name)
            if i is None:
                return None
            value = values[i]
            if value == unset:
                return None
            return "" if value == empty else _unescape(value)

        def get_set(name: str) -> list[str] | None:
            i = columns.get(name)
            if i is None or values[i] == unset:
                return None
            if values[i] == empty:
                return []
            return [_unescape(v) for v in values[i].split(self.header.set_separator)]

        self._row(get, get_set, out)

    def _json_line(self, line: str, out: Converted) -> None:
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise Rejected("truncated" if not line.rstrip().endswith("}") else self.not_mine) from None
        if not isinstance(row, dict) or "ts" not in row or not (
                "uid" in row or "id.orig_h" in row or isinstance(row.get("id"), dict)) or not any(
                key in row for key in self.json_keys):
            raise Rejected(self.not_mine)
        nested: dict = row["id"] if isinstance(row.get("id"), dict) else {}

        def get(name: str) -> str | None:
            value = row.get(name)
            if value is None and name.startswith("id."):
                value = nested.get(name[3:])
            if value is None or isinstance(value, (dict, list)):
                return None
            if isinstance(value, bool):
                return "T" if value else "F"
            return value if isinstance(value, str) else str(value)

        def get_set(name: str) -> list[str] | None:
            value = row.get(name)
            if value is None:
                return None
            if isinstance(value, list):
                return [v if isinstance(v, str) else str(v) for v in value]
            return [str(value)]

        self._row(get, get_set, out, raw_ts=row.get("ts"))

    @abstractmethod
    def _row(self, get, get_set, out: Converted, raw_ts: object = None) -> None:
        """Convert one row (its fields through ``get``/``get_set``) into ``out``."""

    #: Column names that only this log has (``#fields``: all of them; a JSON line: any of them).
    markers: tuple[bytes, ...] = ()

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        """A ``#path`` header is decisive, then ``#fields``, then the keys of JSON lines."""
        seen = hits = 0
        for raw in lines[:50]:
            if raw.startswith(b"#path"):
                return 1.0 if raw.split(None, 1)[-1].strip() == cls.path_name.encode() else 0.0
            if raw.startswith(b"#fields"):
                return 0.95 if all(m in raw for m in cls.markers) else 0.0
            if raw.startswith(b"#") or not raw.strip():
                continue
            seen += 1
            if raw.startswith(b"{") and b'"uid"' in raw and any(b'"' + m + b'"' in raw
                                                               for m in cls.markers):
                hits += 1
        return 0.9 * hits / seen if seen else 0.0


class ZeekDns(_ZeekLog):
    """Zeek ``dns.log`` rows to DNS resolver records (see the module docstring for the mapping).

    ``skip_ports``: responder ports whose queries are not resolution (mDNS, LLMNR, NetBIOS).
    """

    name = "zeek-dns"
    stream = "dns"
    path_name = "dns"
    required = ("ts", "query")
    default_fields = DNS_DEFAULT_FIELDS
    markers = (b"query", b"qtype_name")
    json_keys = ("query", "qtype_name", "rcode_name", "trans_id")

    def __init__(self, skip_ports: frozenset[int] = NON_RESOLVER_PORTS) -> None:
        super().__init__()
        self.skip_ports = frozenset(skip_ports)

    def _row(self, get, get_set, out: Converted, raw_ts: object = None) -> None:
        port = get("id.resp_p")
        if port and port.isdigit() and int(port) in self.skip_ports:
            out.skipped += 1
            return
        qname = get("query")
        if not qname:  # a malformed packet Zeek could not read a question from
            out.skipped += 1
            return
        ts = _epoch(raw_ts if raw_ts is not None else get("ts"))
        answers = get_set("answers")
        rcode = (get("rcode_name") or "").strip() or None
        if rcode is None:
            number = get("rcode")
            if number is not None and number.isdigit():
                rcode = RCODE_NAMES.get(int(number), f"RCODE{number}")
        if rcode is None:
            if answers:
                rcode = "NOERROR"
            elif get("rejected") in ("T", "true"):
                rcode = "REFUSED"
            else:
                rcode = "TIMEOUT"
        rtt = _seconds(get("rtt"))
        if rtt is not None and ts + rtt <= MAX_EPOCH_S:
            ts += rtt
        if not answers:
            answers = [] if rcode == "NOERROR" else None   # NOERROR without answers is NODATA
        out.add(dns_record(ts, qname, rcode, get("qtype_name"), client=get("id.orig_h"),
                           resolver=get("id.resp_h"),
                           latency_ms=None if rtt is None else rtt * 1000.0, answers=answers))



class ZeekSmtp(_ZeekLog):
    """Zeek ``smtp.log`` transactions to mail-flow records, one per recipient (module docstring)."""

    name = "zeek-smtp"
    stream = "mail"
    path_name = "smtp"
    required = ("ts", "rcptto", "last_reply")
    default_fields = SMTP_DEFAULT_FIELDS
    markers = (b"mailfrom", b"rcptto")
    json_keys = ("helo", "mailfrom", "rcptto", "last_reply")

    def _row(self, get, get_set, out: Converted, raw_ts: object = None) -> None:
        sender = get("mailfrom")
        recipients = [r.strip().strip("<>") for r in get_set("rcptto") or [] if r.strip("<> ")]
        if not sender and not recipients:  # no transaction seen (STARTTLS, a probe, a bare QUIT)
            out.skipped += 1
            return
        ts = _epoch(raw_ts if raw_ts is not None else get("ts"))
        reply = (get("last_reply") or "").strip()
        status = status_of_reply(reply)
        base = (get("msg_id") or "").strip()
        if not base:
            base = f"{get('uid') or 'zeek'}-{get('trans_depth') or 1}"
        record: dict = {"ts": ts, "status": status}
        if sender:
            record["sender"] = clip_field(sender.strip())
        server = get("id.resp_h")
        if server:
            record["server"] = clip_field(server)
        subject = get("subject")
        if subject:
            record["subject"] = clip_field(subject)
        if reply:
            enhanced = _ENHANCED.search(reply)
            record["status_code"] = enhanced.group(1) if enhanced else reply[:3]
            record["detail"] = clip_field(reply)
        # Zeek keeps recipients in a set: per-recipient ids make each one its own delivery for the
        # core's (message_id, status) de-duplication, and do not depend on the set's order.
        for recipient in recipients or [None]:
            one = dict(record)
            one["message_id"] = clip_field(f"{base}/{recipient}" if recipient else base)
            if recipient:
                one["recipient"] = clip_field(recipient)
            out.add(one)



def status_of_reply(reply: str) -> str:
    """The delivery status an SMTP reply line says, by its code's class.

    >>> status_of_reply("250 2.0.0 Ok: queued as 4F1A2B"), status_of_reply("451 4.4.3 DNS failure")
    ('delivered', 'deferred')
    >>> status_of_reply("550 5.7.26 DMARC policy"), status_of_reply("221 2.0.0 Bye"), status_of_reply("")
    ('failed', 'pending', 'pending')
    """
    code = reply[:3]
    if len(code) < 3 or not code.isdigit() or code == "221":
        return "pending"
    return {"2": "delivered", "4": "deferred", "5": "failed"}.get(code[0], "pending")


__all__ = ["ZeekDns", "ZeekSmtp", "status_of_reply"]

"""Parse and validate raw log lines into mail-flow and DNS resolver records.

Bytes in, a record or a rejection out: nothing here raises on bad input. A rejection carries a
reason from a small vocabulary (``not_json``, ``not_object``, ``missing_field:<name>``,
``wrong_type:<name>``, ``bad_ts``, ``bad_value:<name>``, ``too_large``) so that counts by reason are
meaningful and a user reading one knows which field to fix. Timestamps follow the contract: RFC 3339
(any offset, none means UTC) or epoch seconds, or epoch milliseconds when the number is above 1e11.
The schemas in ``schemas/`` say the same thing; a test holds the two together.

Two paths, one answer. Almost every line is a valid record in the usual spelling, so a batch is
first decoded by msgspec into typed structs (``_MailLine``, ``_DnsLine``): decoding, type checks,
non-empty required strings, enumerated values in their usual (lower or upper) case, non-negative
numbers, all in one C call per line. Those structs are built so that what they accept is a subset
of what the contract accepts: a line they refuse (any msgspec error: unknown fields, another
spelling of a status, an integral float for ``answers``, bad JSON, ...) goes through the checked
Python path (``load_object`` with orjson, then ``mail_from_object`` / ``dns_from_object``), which
accepts it or names the *first* problem in the contract's order. Unknown fields are refused by the
structs because msgspec skips their values without the checks orjson makes (UTF-8, numbers beyond
a double), which only the checked path then makes. Both paths normalise the same way, so a record
is the same whichever path it took (``tests/test_decoder_paths.py`` holds the two together).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import msgspec
import orjson
from msgspec import Meta, Struct

from .outcomes import OUTCOMES, outcome_of_rcode

#: Lines longer than this are rejected before parsing: no log line of either stream is near it,
#: and it bounds the work and memory one hostile record can cost.
MAX_LINE_BYTES = 64 * 1024
#: Strings kept from a record are cut to this many characters (evidence, ids, names).
MAX_FIELD_CHARS = 512
#: Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
EPOCH_MS_THRESHOLD = 1e11
#: 9999-12-31T23:59:59.999Z in milliseconds: the largest timestamp RFC 3339 can write.
MAX_EPOCH_MS = 253402300799999
#: The latest accepted time in seconds: an hour short of year 10000, so every window around it
#: (the last step ends after it) can still be written in RFC 3339.
MAX_EPOCH_S = 253402300799 - 3600

FINAL_FAILURE = frozenset({"failed", "deferred", "quarantined", "filtered", "dropped"})
FINAL_SUCCESS = frozenset({"delivered"})
NOT_FINAL = frozenset({"pending", "expanded", "getting_status"})
STATUSES = FINAL_FAILURE | FINAL_SUCCESS | NOT_FINAL
_OUTCOME_SET = frozenset(OUTCOMES)
_HOUR_EPOCH: dict[str, float] = {}
CACHE_ENTRIES = 4096
#: ``parse_ts`` caches: epoch seconds of a ``YYYY-MM-DDTHH:MM`` head whose hour is in range, and
#: the (fraction, offset in seconds) of a tail after the seconds; ``None`` for none (or ``Z``).
_MINUTE_EPOCH: dict[str, float] = {}
#: Seconds as the regex accepts them (``:60``, a leap second, counts as 59), by their text.
_SECOND_OF = {f":{n:02d}": min(n, 59) for n in range(61)}
_TAILS: dict[str, tuple[float | None, int | None]] = {}
_MAX_CACHED_TAIL = 16         # ".123456789+01:00": nanoseconds and an offset
#: The same, a level up: epoch seconds of a ``YYYY-MM-DDTHH:MM:SS`` head (``minute + second``,
#: as below) and the fraction of a tail without an offset (``0.0`` for none: adding it changes
#: no float), so the usual timestamp costs two slices and two look-ups.
_SECOND_EPOCH: dict[str, float] = {}
_UTC_FRACTION: dict[str, float] = {}

_RFC3339 = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):([0-5]\d):([0-5]\d|60)"
    r"(\.\d+)?([Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?",
    re.ASCII,
)
_MAIL_OPTIONAL_STR = ("sender", "recipient", "tenant", "server", "direction", "category",
                      "subject", "status_code", "detail")
_DNS_OPTIONAL_STR = ("qtype", "resolver", "client")
_STR_OR_NONE = frozenset({str, type(None)})
_TS_TYPES = frozenset({str, int, float})      # bool, an int subclass, is not a time


class Rejected(Exception):
    """A record the contract does not accept; ``reason`` is the counted, dead-lettered reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MailRecord(Struct, gc=False):
    """One delivery attempt, validated; strings as logged except where noted.

    A msgspec Struct: built in C, never tracked by the garbage collector (it holds no cycle).
    """

    ts: float
    message_id: str
    status: str                   # lower case
    sender: str | None
    sender_domain: str | None     # lower case, no trailing dot
    tenant: str | None
    server: str | None            # lower case, matched to a DNS record's client
    category: str | None          # lower case
    subject: str | None
    status_code: str | None
    lookups: list[tuple[str, str | None]] | None   # (qname, qtype upper) or None when not given
    dns_outcome: str | None       # upper case outcome when the mail system logged one
    detail: str | None = None     # the status text (read by the join's attribution rule)


class DnsRecord(Struct, gc=False):
    """One resolver answer (or give-up), validated. The join buffers it as it is.

    A msgspec Struct: built in C, never tracked by the garbage collector (it holds no cycle).
    """

    ts: float
    qname: str                    # lower case, no trailing dot
    qtype: str | None             # upper case
    outcome: str                  # rcode mapped to an outcome (NOERROR with no answers: NODATA)
    resolver: str | None
    client: str | None            # lower case



def parse_ts(value: object) -> float:
    """Epoch seconds (float) from a contract timestamp, or raise ``Rejected('bad_ts')``.

    >>> parse_ts("2026-11-27T10:15:02.5Z")
    1795774502.5
    >>> parse_ts("2026-11-27T11:15:02.5+01:00")
    1795774502.5
    >>> parse_ts(1795774502500)
    1795774502.5
    """
    if type(value) is str:
        # A log repeats the same minute for many lines, and the same few fractions and offsets:
        # the fixed-width head ``YYYY-MM-DDTHH:MM``, the seconds ``:SS`` and the tail after them
        # are looked up separately, heads and tails cached only once ``_parse_rfc3339`` has
        # accepted them (the regex is fixed-width up to the seconds, so a string matches it
        # exactly when all three parts do). 1.7 -> 0.5 us per timestamp; the sums are done in
        # the same order as there, so the floats are the same. First of all, the whole head to
        # the seconds and a UTC tail, each one look-up (the decoders inline this much).
        whole = _SECOND_EPOCH.get(value[:19])
        if whole is not None:
            fraction = _UTC_FRACTION.get(value[19:])
            if fraction is not None:
                return whole + fraction      # the head is cached only when its hour is in range
        minute = _MINUTE_EPOCH.get(value[:16])
        second = _SECOND_OF.get(value[16:19])
        if minute is not None and second is not None:
            tail = _TAILS.get(value[19:])
            if tail is not None:
                frac, offset = tail
                whole = minute + second
                seconds = whole + frac if frac is not None else whole
                if offset is None:
                    _remember(_SECOND_EPOCH, value[:19], whole)
                    return seconds           # the head is cached only when its hour is in range
                seconds -= offset
                if not 0 <= seconds <= MAX_EPOCH_S:
                    raise Rejected("bad_ts")
                return seconds
        return _parse_rfc3339(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > EPOCH_MS_THRESHOLD:
            seconds /= 1000.0
        if not 0 <= seconds <= MAX_EPOCH_S:
            raise Rejected("bad_ts")
        return seconds
    raise Rejected("bad_ts")


def _parse_rfc3339(value: str) -> float:
    """``parse_ts`` of a string by the regex, filling the caches of heads and tails."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise Rejected("bad_ts")
    # Logs repeat the same hour for thousands of lines: the calendar work is done once per
    # hour, and the regex has fixed the positions of minutes and seconds.
    hour_key = value[:13]
    base = _HOUR_EPOCH.get(hour_key)
    if base is None:
        base = _hour_epoch(hour_key)
    minute = base + int(value[14:16]) * 60
    seconds = minute + min(int(value[17:19]), 59)
    frac, offset = match.group(7, 8)
    if frac:
        seconds += float(frac)
    offset_s = None
    if offset and offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        offset_s = sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
        seconds -= offset_s
        if not 0 <= seconds <= MAX_EPOCH_S:      # an offset can leave 1970..9999
            raise Rejected("bad_ts")
    elif base < 0 or base > MAX_EPOCH_S:
        raise Rejected("bad_ts")
    if 0 <= base <= MAX_EPOCH_S:
        _remember(_MINUTE_EPOCH, value[:16], minute)
        _remember(_SECOND_EPOCH, value[:19], minute + min(int(value[17:19]), 59))
        tail = value[19:]
        if len(tail) <= _MAX_CACHED_TAIL:        # a hostile tail of many digits is not kept
            _remember(_TAILS, tail, (float(frac) if frac else None, offset_s))
            if offset_s is None:
                _remember(_UTC_FRACTION, tail, float(frac) if frac else 0.0)
    return seconds


def _hour_epoch(hour_key: str) -> float:
    """Epoch seconds of ``YYYY-MM-DDTHH`` (UTC), cached; ``Rejected`` for a day that does not exist."""
    try:
        base = datetime(int(hour_key[0:4]), int(hour_key[5:7]), int(hour_key[8:10]),
                        int(hour_key[11:13]), tzinfo=timezone.utc).timestamp()
    except ValueError:  # 31 February and friends
        raise Rejected("bad_ts") from None
    _remember(_HOUR_EPOCH, hour_key, base)
    return base


def _remember(cache: dict, key: str, value) -> None:
    """Keep ``value`` in a parse cache of at most ``CACHE_ENTRIES`` (emptied when full: a log
    repeats a few keys for a long time, so a cold start now and then costs nothing)."""
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def format_ts(seconds: float) -> str:
    """RFC 3339 UTC with a ``Z``; milliseconds only when the time has a fraction.

    >>> format_ts(1795774502.0)
    '2026-11-27T10:15:02Z'
    """
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    if stamp.microsecond:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and without the root's trailing dot."""
    return name.lower().rstrip(".")[:MAX_FIELD_CHARS]


def domain_of(address: str | None) -> str | None:
    """The domain of an envelope address (``None`` for the null sender ``<>`` or no ``@``).

    Cached: a mail log repeats a few thousand senders for all its lines.
    """
    if not address:
        return None
    cached = _DOMAIN_OF.get(address, _UNKNOWN)
    if cached is not _UNKNOWN:
        return cached
    after = address.strip().strip("<>").rpartition("@")[2]
    domain = normalize_name(after) if after and "@" in address else None
    if len(address) <= 320:                   # a hostile long "address" is not kept
        _remember(_DOMAIN_OF, address, domain)
    return domain


_DOMAIN_OF: dict[str, str | None] = {}
_UNKNOWN: Any = object()


def load_object(raw: bytes | str) -> dict:
    """Decode one line or message into a JSON object, or raise ``Rejected``."""
    if len(raw) > MAX_LINE_BYTES:
        raise Rejected("too_large")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Rejected("not_json") from None
    if not isinstance(obj, dict):
        raise Rejected("not_object")
    return obj


def _required_str(obj: dict, name: str) -> str:
    value = obj.get(name)
    if type(value) is str and value:
        return value
    if value is None:
        raise Rejected(f"missing_field:{name}")
    if not isinstance(value, str):
        raise Rejected(f"wrong_type:{name}")
    if not value:
        raise Rejected(f"bad_value:{name}")
    return value


def _required_ts(obj: dict) -> float:
    value = obj.get("ts")
    if type(value) is str:
        return parse_ts(value)
    if value is None:
        raise Rejected("missing_field:ts")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected("wrong_type:ts")
    return parse_ts(value)


def _lookups(value: object) -> list[tuple[str, str | None]]:
    if not isinstance(value, list):
        raise Rejected("wrong_type:dns_lookups")
    lookups = []
    for item in value:
        if not isinstance(item, dict):
            raise Rejected("bad_value:dns_lookups")
        qname = item.get("qname")
        qtype = item.get("qtype")
        if not isinstance(qname, str) or not qname or not (qtype is None or isinstance(qtype, str)):
            raise Rejected("bad_value:dns_lookups")
        lookups.append((normalize_name(qname), qtype.upper() if qtype else None))
    return lookups


def mail_from_object(obj: dict) -> MailRecord:
    """Validate a decoded mail-flow object; raise ``Rejected`` with the first problem found.

    Almost every line is valid, so the type checks of the usual record are made first, in one
    expression; anything unusual goes through ``_checked_mail_fields``, which checks field by
    field in the contract's order to name the first problem. Both paths then share the value
    checks below, which come after every type check in that order, so the reason is the same.
    """
    get = obj.get
    ts, message_id, status = get("ts"), get("message_id"), get("status")
    # The fields of _MAIL_OPTIONAL_STR, looked up once for the check and for the record.
    sender, recipient, tenant, server, direction, category, subject, status_code, detail = (
        get("sender"), get("recipient"), get("tenant"), get("server"), get("direction"),
        get("category"), get("subject"), get("status_code"), get("detail"))
    text = _STR_OR_NONE
    if (type(ts) in _TS_TYPES and type(message_id) is str and message_id
            and type(status) is str and status
            and type(sender) in text and type(recipient) in text and type(tenant) in text
            and type(server) in text and type(direction) in text and type(category) in text
            and type(subject) in text and type(status_code) in text and type(detail) in text):
        ts = parse_ts(ts)
    else:
        ts, message_id, status = _checked_mail_fields(obj)
    status = status.lower()
    if status not in STATUSES:
        raise Rejected("bad_value:status")
    if direction is not None and direction.lower() not in ("inbound", "outbound"):
        raise Rejected("bad_value:direction")
    lookups_value = get("dns_lookups")
    lookups = None if lookups_value is None else _lookups(lookups_value)
    dns_outcome = get("dns_outcome")
    if dns_outcome is not None:
        if not isinstance(dns_outcome, str):
            raise Rejected("wrong_type:dns_outcome")
        dns_outcome = dns_outcome.upper()
        if dns_outcome not in _OUTCOME_SET:
            raise Rejected("bad_value:dns_outcome")
    # Positional, as the Struct declares its fields.
    return MailRecord(
        ts,
        message_id[:MAX_FIELD_CHARS],
        status,
        sender[:MAX_FIELD_CHARS] if sender else None,
        domain_of(sender),
        tenant and tenant[:MAX_FIELD_CHARS],
        server.lower()[:MAX_FIELD_CHARS] if server else None,
        category.lower() if category else None,
        subject,
        status_code and status_code[:32],
        lookups,
        dns_outcome,
        detail and detail[:MAX_FIELD_CHARS],
    )


def _checked_mail_fields(obj: dict) -> tuple[float, str, str]:
    """``ts``, ``message_id`` and ``status`` of a mail object after every type check, in order."""
    ts = _required_ts(obj)
    message_id = _required_str(obj, "message_id")
    status = _required_str(obj, "status")
    if status.lower() not in STATUSES:
        raise Rejected("bad_value:status")
    get = obj.get
    for name in _MAIL_OPTIONAL_STR:
        value = get(name)
        if value is not None and type(value) is not str:
            raise Rejected(f"wrong_type:{name}")
    return ts, message_id, status


def dns_from_object(obj: dict) -> DnsRecord:
    """Validate a decoded DNS resolver object; raise ``Rejected`` with the first problem found.

    As for mail: the usual record is recognised in one expression, anything else is checked
    field by field by ``_checked_dns_record`` to name its first problem.
    """
    get = obj.get
    ts, qname, rcode, answers, latency = (get("ts"), get("qname"), get("rcode"), get("answers"),
                                          get("latency_ms"))
    qtype, resolver, client = get("qtype"), get("resolver"), get("client")
    answers_type = type(answers)
    latency_type = type(latency)
    if not (type(ts) in _TS_TYPES and type(qname) is str and qname and type(rcode) is str and rcode
            and (qtype is None or type(qtype) is str)
            and (resolver is None or type(resolver) is str)
            and (client is None or type(client) is str)
            and (answers is None or answers_type is list or (answers_type is int and answers >= 0))
            and (latency is None or ((latency_type is float or latency_type is int)
                                     and latency >= 0))):
        return _checked_dns_record(obj)
    ts = parse_ts(ts)      # the first check of the contract's order: its reason stands
    return DnsRecord(
        ts,
        qname.lower().rstrip(".")[:MAX_FIELD_CHARS],           # normalize_name, inlined
        qtype.upper() if qtype else None,
        outcome_of_rcode(rcode, len(answers) if isinstance(answers, list) else answers),
        resolver[:MAX_FIELD_CHARS] if resolver else None,
        client.lower()[:MAX_FIELD_CHARS] if client else None,
    )


def _checked_dns_record(obj: dict) -> DnsRecord:
    """``dns_from_object`` field by field, in the contract's order of checks."""
    ts = _required_ts(obj)
    qname = _required_str(obj, "qname")
    rcode = _required_str(obj, "rcode")
    get = obj.get
    for name in _DNS_OPTIONAL_STR:
        value = get(name)
        if value is not None and type(value) is not str:
            raise Rejected(f"wrong_type:{name}")
    answers = get("answers")
    if answers is None:
        count = None
    elif isinstance(answers, list):
        count = len(answers)
    elif isinstance(answers, int) and not isinstance(answers, bool) or (
            isinstance(answers, float) and answers.is_integer()):
        if answers < 0:
            raise Rejected("bad_value:answers")
        count = int(answers)
    else:
        raise Rejected("wrong_type:answers")
    latency = get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise Rejected("wrong_type:latency_ms")
        if not latency >= 0:
            raise Rejected("bad_value:latency_ms")
    qtype = get("qtype")
    resolver = get("resolver")
    client = get("client")
    return DnsRecord(
        ts,
        normalize_name(qname),
        qtype.upper() if qtype else None,
        outcome_of_rcode(rcode, count),
        resolver[:MAX_FIELD_CHARS] if resolver else None,
        client.lower()[:MAX_FIELD_CHARS] if client else None,
    )


# ------------------------------------------------------------------ the fast path: msgspec

_Text = Annotated[str, Meta(min_length=1)]
_Count = Annotated[int, Meta(ge=0)]
_Latency = Annotated[float, Meta(ge=0)]


class _Lookup(Struct, forbid_unknown_fields=True, gc=False):
    """One ``dns_lookups`` entry as the fast decoder accepts it."""

    qname: _Text
    qtype: Union[str, None] = None


class _MailLine(Struct, forbid_unknown_fields=True, gc=False):
    """A mail-flow line as the fast decoder accepts it: a valid record in the usual spelling
    (lower-case ``status`` and ``direction``, upper-case ``dns_outcome``), no unknown field.
    JSON ``null`` is ``None``, as a missing field; a number ``ts`` is a float (``bool`` is not)."""

    ts: Union[str, float]
    message_id: _Text
    status: Literal[tuple(sorted(STATUSES))]                       # type: ignore[valid-type]
    sender: Union[str, None] = None
    recipient: Union[str, None] = None
    tenant: Union[str, None] = None
    server: Union[str, None] = None
    direction: Union[Literal["inbound", "outbound"], None] = None
    category: Union[str, None] = None
    subject: Union[str, None] = None
    status_code: Union[str, None] = None
    detail: Union[str, None] = None
    dns_lookups: Union[list[_Lookup], None] = None
    dns_outcome: Union[Literal[OUTCOMES], None] = None            # type: ignore[valid-type]


class _DnsLine(Struct, forbid_unknown_fields=True, gc=False):
    """A DNS resolver line as the fast decoder accepts it: ``answers`` a list of scalars or a
    non-negative integer, ``latency_ms`` a non-negative number, no unknown field. Answers that
    are lists or objects go to the checked path: orjson refuses nesting past 1024 levels, which
    msgspec decodes."""

    ts: Union[str, float]
    qname: _Text
    rcode: _Text
    answers: Union[list[Union[str, int, float, bool, None]], _Count, None] = None
    qtype: Union[str, None] = None
    resolver: Union[str, None] = None
    client: Union[str, None] = None
    latency_ms: Union[_Latency, None] = None


_decode_mail_line = msgspec.json.Decoder(_MailLine).decode
_decode_dns_line = msgspec.json.Decoder(_DnsLine).decode
_OUTCOME_OF_RCODE = {code: code for code in ("NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL",
                                              "REFUSED", "TIMEOUT", "FORMERR", "NOTIMP")}


def _checked(raw, validate):
    """The checked path of one line: the record, or ``Rejected`` naming its first problem."""
    if len(raw) > MAX_LINE_BYTES:
        raise Rejected("too_large")
    return validate(load_object(raw))


#: Folded spellings of the fields a log repeats from a small set (query types, host names of
#: mail servers and resolver clients, categories), by their text as logged: a look-up instead of
#: a new string a record, and every record of one host shares one string.
_UPPER: dict[str, str] = {}
_HOST: dict[str, str] = {}
_LOWER: dict[str, str] = {}


def _fold(cache: dict[str, str], value: str, folded: str) -> str:
    """Remember ``folded`` as the folded spelling of ``value`` (a short one) in ``cache``."""
    if len(value) <= 255:                        # a hostile long value is not kept
        _remember(cache, value, folded)
    return folded


def _mail_record(line: _MailLine, ts: float, cut: int = MAX_FIELD_CHARS,
                 domains: dict = _DOMAIN_OF, unknown: object = _UNKNOWN,
                 host_of=_HOST.get, lower_of=_LOWER.get) -> MailRecord:
    """``mail_from_object``'s normalisation of a decoded line's fields: the same record."""
    sender, tenant, server = line.sender, line.tenant, line.server
    category, status_code, detail = line.category, line.status_code, line.detail
    lookups = line.dns_lookups
    if sender:                       # domain_of(sender), its cache inlined
        domain = domains.get(sender, unknown)
        if domain is unknown:
            domain = domain_of(sender)
    else:
        domain = None
    return MailRecord(
        ts,
        line.message_id[:cut],
        line.status,
        sender[:cut] if sender else None,
        domain,
        tenant and tenant[:cut],
        (host_of(server) or _fold(_HOST, server, server.lower()[:cut])) if server else None,
        (lower_of(category) or _fold(_LOWER, category, category.lower())) if category else None,
        line.subject,
        status_code and status_code[:32],
        None if lookups is None else [] if not lookups else [      # (usually none logged)
            (lookup.qname.lower().rstrip(".")[:cut],          # normalize_name, inlined
             lookup.qtype.upper() if lookup.qtype else None) for lookup in lookups],
        line.dns_outcome,
        detail and detail[:cut],
    )


def _dns_record(line: _DnsLine, ts: float, cut: int = MAX_FIELD_CHARS,
                outcome_of: dict = _OUTCOME_OF_RCODE, upper_of=_UPPER.get,
                host_of=_HOST.get) -> DnsRecord:
    """``dns_from_object``'s normalisation of a decoded line's fields: the same record."""
    rcode, answers = line.rcode, line.answers
    outcome = outcome_of.get(rcode)
    if outcome is None:              # another spelling, or not an rcode of the contract
        outcome = outcome_of_rcode(rcode, len(answers) if isinstance(answers, list) else answers)
    elif outcome == "NOERROR" and (answers == 0 or answers == []):
        outcome = "NODATA"
    qtype, resolver, client = line.qtype, line.resolver, line.client
    return DnsRecord(
        ts,
        line.qname.lower().rstrip(".")[:cut],                # normalize_name, inlined
        (upper_of(qtype) or _fold(_UPPER, qtype, qtype.upper())) if qtype else None,
        outcome,
        resolver[:cut] if resolver else None,
        (host_of(client) or _fold(_HOST, client, client.lower()[:cut])) if client else None,
    )


def _decode(lines: list, rejected: list[tuple[int, str]], decode_line, build, validate
            ) -> tuple[list, list[int] | None]:
    """The batch decoder of a stream: each line through its Struct (``decode_line``) and
    ``build``, or through the checked path with ``validate`` when the Struct refuses it."""
    records: list = []
    append = records.append
    kept: list[int] | None = None
    limit = MAX_LINE_BYTES
    seconds_of, fraction_of = _SECOND_EPOCH.get, _UTC_FRACTION.get
    for index, raw in enumerate(lines):
        try:
            if len(raw) > limit:
                raise Rejected("too_large")
            try:
                line = decode_line(raw)
            except Exception:        # msgspec refused it: the checked path accepts or names why
                record = _checked(raw, validate)
            else:
                ts: Any = line.ts            # parse_ts, inlined for its usual cases:
                if ts.__class__ is str:      # a cached second and a UTC tail
                    whole: Any = seconds_of(ts[:19])
                    fraction = None if whole is None else fraction_of(ts[19:])
                    ts = parse_ts(ts) if fraction is None else whole + fraction
                elif not 0 <= ts <= EPOCH_MS_THRESHOLD:     # else epoch seconds as they are
                    ts = parse_ts(ts)
                record = build(line, ts)
        except Rejected as err:
            rejected.append((index, err.reason))
            if kept is None:
                kept = list(range(index))
            continue
        append(record)
        if kept is not None:
            kept.append(index)
    return records, kept


def decode_mail_py(lines: list, rejected: list[tuple[int, str]]) -> tuple[list[MailRecord],
                                                                         list[int] | None]:
    """``decode_mail`` in Python alone (the C loop of ``_speedups`` does the same)."""
    return _decode(lines, rejected, _decode_mail_line, _mail_record, mail_from_object)


def decode_dns_py(lines: list, rejected: list[tuple[int, str]]) -> tuple[list[DnsRecord],
                                                                        list[int] | None]:
    """``decode_dns`` in Python alone (the C loop of ``_speedups`` does the same)."""
    return _decode(lines, rejected, _decode_dns_line, _dns_record, dns_from_object)


def _fold_upper(value: str) -> str:
    return _fold(_UPPER, value, value.upper())


def _fold_host(value: str) -> str:
    return _fold(_HOST, value, value.lower()[:MAX_FIELD_CHARS])


def _fold_lower(value: str) -> str:
    return _fold(_LOWER, value, value.lower())


def _speedups_module() -> Any:
    """``detector.core._speedups`` configured with this module's decoders, caches and types, or
    ``None``: not built (a platform without a C compiler: the Python loop is the same, slower),
    or turned off with ``DETECTOR_PURE_PYTHON=1``."""
    if os.environ.get("DETECTOR_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    _speedups.configure(
        Rejected=Rejected, checked=_checked, parse_ts=parse_ts, minute_epoch=_MINUTE_EPOCH,
        utc_fraction=_UTC_FRACTION, normalize_name=normalize_name,
        dns_decode_line=_decode_dns_line, dns_validate=dns_from_object, dns_type=DnsRecord,
        outcome_of=_OUTCOME_OF_RCODE, outcome_of_rcode=outcome_of_rcode, upper_of=_UPPER,
        host_of=_HOST, fold_upper=_fold_upper, fold_host=_fold_host,
        mail_decode_line=_decode_mail_line, mail_validate=mail_from_object,
        mail_type=MailRecord, domains=_DOMAIN_OF, domain_of=domain_of, lower_of=_LOWER,
        fold_lower=_fold_lower, limit=MAX_LINE_BYTES, cut=MAX_FIELD_CHARS,
        ms_threshold=EPOCH_MS_THRESHOLD, max_epoch_s=MAX_EPOCH_S,
        dns_line=_DnsLine, mail_line=_MailLine, lookup=_Lookup)
    return _speedups


#: The compiled decoders when built (``SPEEDUPS`` is true), else the Python loop.
_SPEEDUPS = _speedups_module()
SPEEDUPS = _SPEEDUPS is not None


def decode_mail(lines: list, rejected: list[tuple[int, str]]) -> tuple[list[MailRecord],
                                                                      list[int] | None]:
    """Every mail-flow line of a batch that the contract accepts, as ``MailRecord``s, with their
    indexes in ``lines`` (``None`` when every line was accepted, the usual batch); ``(index,
    reason)`` of the others appended to ``rejected``."""
    if _SPEEDUPS is not None:
        return _SPEEDUPS.decode_mail(lines, rejected)
    return decode_mail_py(lines, rejected)


def decode_dns(lines: list, rejected: list[tuple[int, str]]) -> tuple[list[DnsRecord],
                                                                     list[int] | None]:
    """``decode_mail`` for DNS resolver lines: ``DnsRecord``s and their indexes (``None`` when
    every line was accepted)."""
    if _SPEEDUPS is not None:
        return _SPEEDUPS.decode_dns(lines, rejected)
    return decode_dns_py(lines, rejected)


def parse_mail(raw: bytes | str) -> MailRecord:
    """Decode and validate one mail-flow line (``decode_mail`` of one line); raise ``Rejected``."""
    rejected: list[tuple[int, str]] = []
    records, _ = decode_mail([raw], rejected)
    if rejected:
        raise Rejected(rejected[0][1])
    return records[0]


def parse_dns(raw: bytes | str) -> DnsRecord:
    """Decode and validate one DNS resolver line (``decode_dns`` of one line); raise
    ``Rejected``."""
    rejected: list[tuple[int, str]] = []
    records, _ = decode_dns([raw], rejected)
    if rejected:
        raise Rejected(rejected[0][1])
    return records[0]

"""Unbound's ``log-replies`` and ``log-servfail`` lines; and what every line adapter here shares
(the ``feed`` loop, the time prefixes of resolver logs, the record builder).

Unbound writes one line per answer with ``log-replies: yes`` (``info:``, or ``reply:`` with
``log-tag-queryreply: yes``): ``CLIENT QNAME QTYPE QCLASS RCODE SECONDS CACHED SIZE``. With
``log-servfail: yes`` it also says *why* a query failed: ``error: SERVFAIL <QNAME QTYPE QCLASS>:
REASON``, once per failed resolution, before the replies it caused. The prefix is Unbound's own
(``[EPOCH] unbound[PID:TID]``, or ``Mon DD HH:MM:SS unbound[PID:TID]`` with ``log-time-ascii``, or
an ISO time) or a syslog one (``Mon DD HH:MM:SS HOST unbound: [PID:TID]``, or ISO); every other
Unbound line (start-up, statistics, ``log-queries`` lines, which say nothing of the outcome) is
``skipped``.

| Unbound | record field | rule |
|---|---|---|
| prefix time | ``ts`` | the reply was logged when it was sent |
| ``QNAME`` | ``qname`` | |
| ``QTYPE`` | ``qtype`` | |
| ``RCODE`` | ``rcode`` | ``NOTIMPL`` is the contract's ``NOTIMP`` |
| ``CLIENT`` | ``client`` | |
| ``SECONDS`` | ``latency_ms`` | |
| syslog host, or ``resolver=`` | ``resolver`` | the constructor argument wins |
| ``SERVFAIL <...>: REASON`` | ``rcode`` | ``TIMEOUT`` when the reason names a timeout, else ``SERVFAIL`` |

A servfail line is a record of its own (without a client), and for two seconds of event time it
also gives its outcome to the ``SERVFAIL`` replies for the same name and type, so one upstream
timeout is ``TIMEOUT`` on every line that reports it, not ``TIMEOUT`` here and ``SERVFAIL`` there.

Honest limits. A reply line does not list the answers, so ``NOERROR`` cannot be told from
``NODATA`` (the size field depends on EDNS, DNSSEC and the authority section, not on the answer
count): ``answers`` is left out and such lines are ``NOERROR``. Unbound never logs a client-side
timeout: ``TIMEOUT`` comes only from servfail reasons. The epoch prefix has whole seconds.
Syslog's ``Mon DD`` has no year: the adapter takes ``year=`` (if not given: the current UTC year,
or the previous one when the first line's month is still to come, which makes a replay of an old
file depend on when it runs: pass ``year`` for old files) and follows December to January; times
without an offset are in ``tz`` (default UTC). Rejections:
``truncated``, ``bad_ts``, ``too_large``, ``not_unbound``.

>>> unbound = Unbound(resolver="res1")
>>> out = unbound.feed([b"[1795774502] unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN "
...                     b"NXDOMAIN 0.012000 0 98"])
>>> out.records
[b'{"ts":1795774502.0,"qname":"bank.example.","rcode":"NXDOMAIN","qtype":"TXT","client":"10.0.0.5","resolver":"res1","latency_ms":12.0}']
"""

from __future__ import annotations

import re
from calendar import timegm
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from ..core.records import EPOCH_MS_THRESHOLD as MAX_EPOCH_S  # later seconds read as ms
from ..core.records import MAX_FIELD_CHARS, MAX_LINE_BYTES
from .base import Adapter, Converted

# ---- Shared by the line adapters (Zeek, BIND and CoreDNS import these from here; they would sit
# better in a module of their own, e.g. ``formats/lines.py``) ---------------------------------------

#: How long (event time) a failure's cause and the client lines it explains may be apart.
CAUSE_WINDOW_S = 2.0
MONTHS = {name: i for i, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
#: Regex fragments for the two syslog time forms: ``Nov 27 10:15:02`` and ISO 8601 / RFC 3339.
BSD_TIME = (r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(?P<day>\d{1,2}) "
            r"(?P<hms>\d\d:\d\d:\d\d(?:\.\d+)?)")
ISO_TIME = r"(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?)"
_ISO_PARTS = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?([Zz]|[+-]\d\d:?\d\d)?")
#: rcode spellings of the resolvers that differ from the contract's.
RCODE_ALIASES = {"NOTIMPL": "NOTIMP"}
_TIMEOUT_WORDS = re.compile(r"time ?out|timed out|deadline exceeded", re.IGNORECASE)


def says_timeout(text: str) -> bool:
    """Whether a failure reason names a timeout (``upstream server timeout``, ``i/o timeout``)."""
    return _TIMEOUT_WORDS.search(text) is not None


def decode(raw: bytes) -> str:
    """A raw line as text: invalid UTF-8 becomes U+FFFD (records must be valid JSON strings)."""
    return raw.decode("utf-8", "replace").rstrip("\r\n")


class LogTime:
    """Epoch seconds from the time prefixes resolver logs write.

    Times without an offset are wall-clock time in ``tz``; syslog's ``Mon DD`` takes ``year`` and
    moves to the next year when December is followed by January. Conversions are cached per
    minute, so a busy log pays for one ``datetime`` per minute, not per line.

    >>> clock = LogTime(year=2026)
    >>> clock.bsd("Dec", "31", "23:59:59"), clock.bsd("Jan", "1", "00:00:01")
    (1798761599.0, 1798761601.0)
    >>> clock.iso("2026-11-27T11:15:02.5+01:00"), clock.iso("2026-11-27 10:15:02")
    (1795774502.5, 1795774502.0)
    """

    def __init__(self, tz: str = "UTC", year: int | None = None) -> None:
        self.tz_name = tz
        self.tz = timezone.utc if tz.upper() == "UTC" else ZoneInfo(tz)
        #: None until the first ``Mon DD`` time when not given: then this year, or last year when
        #: that month is still to come (December's log read in January).
        self.year = year
        self.last_month = 0
        self._minutes: dict[tuple, float | None] = {}

    def wall(self, year: int, month: int, day: int, hour: int, minute: int, second: float,
             offset_s: int | None = None) -> float | None:
        """Epoch seconds of a calendar time (in ``tz``, or at ``offset_s`` from UTC); None if impossible."""
        key = (year, month, day, hour, minute, offset_s)
        base = self._minutes.get(key, False)
        if base is False:
            try:
                if offset_s is None:
                    base = datetime(year, month, day, hour, minute, tzinfo=self.tz).timestamp()
                else:
                    datetime(year, month, day, hour, minute)  # validates the calendar date
                    base = float(timegm((year, month, day, hour, minute, 0))) - offset_s
            except (ValueError, OverflowError):
                base = None
            if len(self._minutes) > 4096:
                self._minutes.clear()
            self._minutes[key] = base
        if base is None or not 0.0 <= second < 61.0:
            return None
        seconds = base + min(second, 59.999999)
        return seconds if 0.0 <= seconds <= MAX_EPOCH_S else None

    def bsd(self, month_name: str, day: str, hms: str) -> float | None:
        """``Nov 27`` + ``10:15:02[.123]`` (syslog, Unbound's ``log-time-ascii``)."""
        month = MONTHS.get(month_name)
        if month is None or len(hms) < 8:
            return None
        if self.year is None:
            now = datetime.now(timezone.utc)
            self.year = now.year - (month > now.month)
        year = self.year
        if self.last_month and month < self.last_month - 6:
            self.year = year = year + 1          # December, then January: a new year
        elif self.last_month and month > self.last_month + 6:
            year -= 1                            # a late line from last December
        if year == self.year:
            self.last_month = month
        try:
            return self.wall(year, month, int(day), int(hms[0:2]), int(hms[3:5]), float(hms[6:]))
        except ValueError:
            return None

    def iso(self, text: str) -> float | None:
        """ISO 8601 / RFC 3339, with ``T`` or a space, any fraction, ``Z``, ``+hh:mm`` or ``+hhmm``."""
        match = _ISO_PARTS.fullmatch(text)
        if match is None:
            return None
        year, month, day, hour, minute, second, frac, offset = match.groups()
        offset_s = None
        if offset:
            if offset in ("Z", "z"):
                offset_s = 0
            else:
                digits = offset[1:].replace(":", "")
                offset_s = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * (
                    1 if offset[0] == "+" else -1)
        seconds = int(second) + (float("0." + frac) if frac else 0.0)
        return self.wall(int(year), int(month), int(day), int(hour), int(minute), seconds, offset_s)

    def of_match(self, match: re.Match) -> float | None:
        """The time of a match made with ``BSD_TIME`` or ``ISO_TIME`` groups (None if neither)."""
        groups = match.groupdict()
        if groups.get("iso"):
            return self.iso(groups["iso"])
        if groups.get("mon"):
            return self.bsd(groups["mon"], groups["day"], groups["hms"])
        return None

    def state(self) -> dict:
        return {"year": self.year, "last_month": self.last_month}

    def load(self, state: dict) -> None:
        year = state.get("year", self.year)
        self.year = int(year) if year is not None else None
        self.last_month = int(state.get("last_month", 0))


def dns_record(ts: float, qname: str, rcode: str, qtype: str | None = None,
               client: str | None = None, resolver: str | None = None,
               latency_ms: float | None = None) -> dict:
    """A contract DNS record from parsed fields, strings cut to the contract's size."""
    record: dict = {"ts": ts, "qname": qname[:MAX_FIELD_CHARS], "rcode": rcode[:32]}
    if qtype:
        record["qtype"] = qtype[:32]
    if client:
        record["client"] = client[:MAX_FIELD_CHARS]
    if resolver:
        record["resolver"] = resolver[:MAX_FIELD_CHARS]
    if latency_ms is not None and 0.0 <= latency_ms < 86_400_000.0:
        record["latency_ms"] = round(latency_ms, 3)
    return record


class LineAdapter(Adapter):
    """A log read line by line: each line gives records (now or later), ``skipped``, or a reason.

    Subclasses say what one line means (``_line``: the rejection reason, or None) and how much one
    line looks like theirs (``_sniff_line``: 0..1); ``sniff`` averages that over the sample.
    """

    def feed(self, lines: list[bytes]) -> Converted:
        out = Converted()
        for index, raw in enumerate(lines):
            reason = "too_large" if len(raw) > MAX_LINE_BYTES else self._line(decode(raw), out)
            if reason:
                out.rejected.append((index, reason))
        return out

    def _line(self, line: str, out: Converted) -> str | None:
        raise NotImplementedError

    @classmethod
    def sniff(cls, lines: list[bytes]) -> float:
        scores = [cls._sniff_line(decode(raw)) for raw in lines[:50] if raw.strip()]
        return sum(scores) / len(scores) if scores else 0.0

    @classmethod
    def _sniff_line(cls, line: str) -> float:
        return 0.0


def remember(recent: dict, key: tuple, value: object, limit: int) -> None:
    """Keep ``key`` as the newest entry of ``recent``; past ``limit``, forget the older half.

    The entries are facts that matter for a few seconds of event time (a failure's cause, a
    refusal), so dropping the oldest when a burst overflows the bound loses nothing that counts.
    """
    recent.pop(key, None)
    recent[key] = value
    if len(recent) > limit:
        for stale in list(recent)[: len(recent) - limit // 2]:   # dicts keep insertion order
            del recent[stale]


def rcode_of(text: str) -> str:
    """A resolver's rcode spelling as the contract's (unknown ones pass through: the core's OTHER)."""
    code = text.upper()
    return RCODE_ALIASES.get(code, code)


# ---- Unbound ------------------------------------------------------------------------------------

_UNBOUND = re.compile(
    r"(?:<\d{1,3}>)?"
    rf"(?:\[(?P<epoch>\d{{1,11}})\] |{BSD_TIME} |{ISO_TIME} )?"
    r"(?:(?P<host>\S+) )?"
    r"unbound(?:\[\d+:[0-9a-f]+\]|(?:\[\d+\])?: \[\d+:[0-9a-f]+\]) "
    r"(?P<level>[a-z][a-z ]*?): (?P<msg>.*)")
_SERVFAIL = re.compile(r"SERVFAIL <(?P<qname>\S+) (?P<qtype>\S+) (?P<qclass>\S+)>: (?P<why>.*)")
_SECONDS = re.compile(r"\d+\.\d+")


class Unbound(LineAdapter):
    """Unbound ``log-replies`` and ``log-servfail`` lines to DNS resolver records.

    ``resolver``: the name to give as ``resolver`` (default: the syslog host, when there is one).
    ``tz``: the zone of times written without an offset. ``year``: for syslog's ``Mon DD`` times.
    """

    name = "unbound"
    stream = "dns"
    #: Recent servfail causes kept to explain the replies that follow them.
    max_pending = 4096

    def __init__(self, resolver: str | None = None, tz: str = "UTC",
                 year: int | None = None) -> None:
        self.resolver = resolver
        self.clock = LogTime(tz, year)
        #: (qname, qtype) -> (ts, outcome) of the latest servfail reason, for the replies after it.
        self._causes: dict[tuple[str, str], tuple[float, str]] = {}

    def _line(self, line: str, out: Converted) -> str | None:
        match = _UNBOUND.fullmatch(line)
        if match is None:
            return "not_unbound"
        epoch = match.group("epoch")
        if epoch is not None:
            ts = float(epoch) if int(epoch) <= MAX_EPOCH_S else None
        else:
            ts = self.clock.of_match(match)
        msg = match.group("msg")
        level = match.group("level")
        resolver = self.resolver or match.group("host")
        if level in ("info", "reply"):
            fields = msg.split()
            if len(fields) < 8:
                if len(fields) > 4 and fields[3] == "IN":
                    return "truncated"    # a reply line cut short (4 fields: a log-queries line)
                out.skipped += 1
                return None
            client, qname, qtype, _qclass, rcode, seconds, cached, size = fields[:8]
            if not (_SECONDS.fullmatch(seconds) and cached in ("0", "1") and size.isdigit()):
                out.skipped += 1          # another info line with many words
                return None
            if ts is None:
                return "bad_ts"
            rcode = rcode_of(rcode)
            if rcode == "SERVFAIL":
                cause = self._causes.get((qname.lower(), qtype.upper()))
                if cause is not None and ts - cause[0] <= CAUSE_WINDOW_S:
                    rcode = cause[1]
            out.add(dns_record(ts, qname, rcode, qtype, client, resolver, float(seconds) * 1000.0))
            return None
        if level == "error" and msg.startswith("SERVFAIL <"):
            failed = _SERVFAIL.fullmatch(msg)
            if failed is None:
                return "truncated"
            if ts is None:
                return "bad_ts"
            qname, qtype = failed.group("qname"), failed.group("qtype")
            outcome = "TIMEOUT" if says_timeout(failed.group("why")) else "SERVFAIL"
            remember(self._causes, (qname.lower(), qtype.upper()), (ts, outcome), self.max_pending)
            out.add(dns_record(ts, qname, outcome, qtype, None, resolver))
            return None
        out.skipped += 1
        return None

    def snapshot(self) -> dict:
        return {"clock": self.clock.state(),
                "causes": [[q, t, ts, o] for (q, t), (ts, o) in self._causes.items()]}

    def restore(self, state: dict) -> None:
        self.clock.load(state.get("clock", {}))
        self._causes = {(q, t): (float(ts), o) for q, t, ts, o in state.get("causes", [])}

    @classmethod
    def _sniff_line(cls, line: str) -> float:
        return 1.0 if "unbound" in line and _UNBOUND.fullmatch(line) else 0.0

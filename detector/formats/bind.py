"""BIND 9 (``named``) logs: the ``query-errors`` and ``security`` categories.

BIND has no per-answer log. What it does say about outcomes is in two categories: ``query-errors``
(at ``info`` when query logging is on, else at ``debug 1``) logs every answer that was an error,
``client @0x... 192.0.2.1#53211 (bank.example): query failed (SERVFAIL) for bank.example/IN/TXT
at query.c:7123``, where the parenthesis is BIND's reason (an rcode name, or the internal result
such as ``timed out`` or ``no valid RRSIG``); and ``security`` logs refusals, ``client ...: query
(cache) 'bank.example/TXT/IN' denied``. Lines may start with BIND's own time (``print-time``:
``27-Nov-2026 10:15:02.123``, or ISO 8601), optional ``category: severity:`` (``print-category``,
``print-severity``), or come through syslog (``Nov 27 10:15:02 ns1 named[811]: ...``).

| BIND | record field | rule |
|---|---|---|
| line time | ``ts`` | |
| ``NAME/CLASS/TYPE`` (``NAME/TYPE/CLASS`` when denied) | ``qname``, ``qtype`` | |
| ``query failed (REASON)`` | ``rcode`` | an rcode name is itself; ``timed out`` is ``TIMEOUT``; any other reason ``SERVFAIL`` (BIND answers SERVFAIL for every non-DNS result) |
| ``... denied`` | ``rcode`` | ``REFUSED`` (the ``query failed (REFUSED)`` line BIND adds for the same query is skipped) |
| ``client ... IP#PORT`` | ``client`` | |
| syslog host, or ``resolver=`` | ``resolver`` | the constructor argument wins |

Honest limits. Only failures are logged, so BIND gives no ``NOERROR`` or ``NODATA`` records, and
``NXDOMAIN`` only where BIND logs one as a query failure, which it normally does not (a missing name
is an answer, not an error): a delivery whose lookups all succeeded, or found a deleted record,
finds no record (``UNMATCHED``, which ranks below every error, so failures still decide). The query log (``client ...: query: bank.example IN TXT
+E(0)K (192.0.2.53)``) is written when a query *arrives* and says nothing about its answer: its
lines are skipped, never turned into ``NOERROR``. ``fetch completed ... for NAME/TYPE in SECONDS:
REASON/...`` (``debug 2``) describes BIND's own upstream fetch behind a ``query failed`` line that
already has the client: skipped too, so one failure is one record. ``timed out`` is what BIND
found, while the client was answered SERVFAIL: the record says the cause. ``skipped_by_kind``
counts the skipped lines by kind (``query_log``, ``fetch_completed``, ``refused_after_denied``,
``other``), so a file of query-log lines with no error lines is visible as such. BIND's time prefix
is local time in ``tz`` unless it carries an offset; syslog's ``Mon DD`` takes ``year`` (see
``logtime``). Rejections: ``truncated``, ``bad_ts``, ``too_large``, ``not_bind``.

>>> bind = Bind(resolver="ns1")
>>> out = bind.feed([b"27-Nov-2026 10:15:02.123 query-errors: info: client @0x7f3a2c0 10.0.0.5#53211 "
...                  b"(bank.example): query failed (timed out) for bank.example/IN/TXT at query.c:7123"])
>>> out.records
[b'{"ts":1795774502.123,"qname":"bank.example","rcode":"TIMEOUT","qtype":"TXT","client":"10.0.0.5","resolver":"ns1"}']
"""

from __future__ import annotations

import re
from collections import Counter

from ..core.outcomes import RCODES
from .base import Converted
from .dnsverdict import CAUSE_WINDOW_S, dns_record, rcode_of, remember, says_timeout
from .lines import LineAdapter
from .logtime import BIND_TIME, BSD_TIME, ISO_TIME, LogTime

_PREFIX = re.compile(
    r"(?:<\d{1,3}>)?"
    rf"(?:{BIND_TIME} "
    rf"|{ISO_TIME} (?:(?P<ihost>\S+) named(?:\[\d+\])?: )?"
    rf"|{BSD_TIME} (?P<host>\S+) named(?:\[\d+\])?: )?"
    r"(?:(?P<category>[a-z][a-z0-9-]*): )?"                                # print-category
    r"(?:(?:critical|error|warning|notice|info|dynamic|debug(?: \d+)?): )?"  # print-severity
    r"(?P<msg>.*)")
_CLIENT = re.compile(
    r"client (?:@0x[0-9a-fA-F]+ )?(?P<ip>[0-9A-Fa-f.:%a-z]+)#\d+(?: \([^)]*\))?: "
    r"(?:view [^:]+: )?(?P<what>.*)")
_FAILED = re.compile(r"query failed \((?P<why>[^)]*)\)(?: for (?P<question>\S+))?(?: at \S+)?.*")
_DENIED = re.compile(r"query(?: \(cache\))? '(?P<question>[^']+)' denied.*")


def _is_named(match: re.Match) -> bool:
    """A line BIND wrote (its own time stamp, or syslog's ``named`` tag), whatever it says."""
    return bool(match.group("byear") or match.group("host") or match.group("ihost")
                or (match.group("iso") and match.group("category")))


class Bind(LineAdapter):
    """BIND ``query-errors`` and ``security`` lines to DNS resolver records (module docstring).

    ``resolver``: the name to give as ``resolver`` (default: the syslog host, when there is one).
    ``tz``: the zone of BIND's local ``print-time`` stamps. ``year``: for syslog's ``Mon DD``.
    """

    name = "bind"
    stream = "dns"
    #: Recent refusals kept to recognise BIND's second line about the same query.
    max_pending = 1024

    def __init__(self, resolver: str | None = None, tz: str = "UTC",
                 year: int | None = None) -> None:
        self.resolver = resolver
        self.clock = LogTime(tz, year)
        self.skipped_by_kind: Counter[str] = Counter()
        #: (client, qname, qtype) -> ts of the latest ``denied`` line, to drop the ``query failed
        #: (REFUSED)`` line BIND writes after it for the same query.
        self._denials: dict[tuple[str, str, str], float] = {}

    def _skip(self, out: Converted, kind: str) -> None:
        out.skipped += 1
        self.skipped_by_kind[kind] += 1

    def _line(self, line: str, out: Converted) -> str | None:
        match = _PREFIX.fullmatch(line)
        msg = match.group("msg") if match else ""
        client = _CLIENT.fullmatch(msg)
        if client is None:
            if msg.startswith("fetch completed"):
                self._skip(out, "fetch_completed")
                return None
            if match is not None and _is_named(match):
                self._skip(out, "other")
                return None
            return "not_bind"
        assert match is not None          # (an empty message names no client)
        what = client.group("what")
        if what.startswith("query: "):
            self._skip(out, "query_log")
            return None
        failed = _FAILED.fullmatch(what) if what.startswith("query failed") else None
        denied = _DENIED.fullmatch(what) if failed is None and " denied" in what else None
        if failed is None and denied is None:
            if what.startswith("query failed (") and ")" not in what:
                return "truncated"
            self._skip(out, "other")
            return None
        ts = self.clock.of_match(match)
        if ts is None:
            return "bad_ts"
        if failed is not None:
            question = failed.group("question")
            if not question:
                return "truncated"
            name, _, rest = question.rpartition("/")          # NAME/CLASS/TYPE
            qname, _, _qclass = name.rpartition("/")
            qtype = rest
            rcode = self._outcome(failed.group("why"))
        else:
            assert denied is not None         # (neither: returned above)
            parts = denied.group("question").rsplit("/", 2)   # NAME/TYPE/CLASS
            if len(parts) != 3:
                return "truncated"
            qname, qtype = parts[0], parts[1]
            rcode = "REFUSED"
        if not qname:
            return "truncated"
        ip = client.group("ip")
        key = (ip, qname.lower(), qtype.upper())
        if denied is not None:
            remember(self._denials, key, ts, self.max_pending)
        elif rcode == "REFUSED":
            denied_at = self._denials.get(key)
            if denied_at is not None and abs(ts - denied_at) <= CAUSE_WINDOW_S:
                self._skip(out, "refused_after_denied")   # the same refusal, logged twice
                return None
        resolver = self.resolver or match.group("host") or match.group("ihost")
        out.add(dns_record(ts, qname, rcode, qtype, ip, resolver))
        return None

    @staticmethod
    def _outcome(why: str) -> str:
        code = rcode_of(why.strip())
        if code in RCODES:
            return code
        return "TIMEOUT" if says_timeout(why) else "SERVFAIL"

    def snapshot(self) -> dict:
        return {"clock": self.clock.state(),
                "denials": [[*key, ts] for key, ts in self._denials.items()]}

    def restore(self, state: dict) -> None:
        self.clock.load(state.get("clock", {}))
        self._denials = {(ip, q, t): float(ts) for ip, q, t, ts in state.get("denials", [])}

    @classmethod
    def _sniff_line(cls, line: str) -> float:
        match = _PREFIX.fullmatch(line)
        if match is None:
            return 0.0
        msg = match.group("msg")
        if _CLIENT.fullmatch(msg) or msg.startswith("fetch completed"):
            return 1.0
        return 0.5 if _is_named(match) else 0.0

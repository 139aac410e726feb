"""CoreDNS logs: the ``log`` plugin's query lines and the ``errors`` plugin's failure lines.

The ``log`` plugin writes one line per answered query, today as ``[INFO] 10.0.0.5:53411 - 4321 "TXT
IN bank.example. udp 41 false 1232" SERVFAIL qr,rd 41 5.001234s`` (client, query id, the question,
its protocol, size, DO bit and buffer size, then the rcode, response flags, response size and
duration); CoreDNS before 1.1 (2017) wrote ``10.0.0.5 - [27/Nov/2026:10:15:02 +0000] "TXT IN
bank.example. udp 41 false 1232" SERVFAIL qr,rd 41 5.001234s``, earlier still without the flags or
the request size. The ``errors`` plugin writes ``[ERROR] plugin/errors: 2 bank.example. TXT: read
udp 10.0.0.53:41234->192.0.2.1:53: i/o timeout`` (the rcode number, the question, the error). A
line may start with an RFC 3339 time (``kubectl logs --timestamps``, the CRI log files under
``/var/log/containers``, which add ``stdout F``), Go's ``2017/11/27 10:15:02``, a syslog prefix, or
come wrapped in Docker's JSON log lines (``{"log": "...", "time": "..."}``). Start-up banners and
other plugins' lines are skipped.

| CoreDNS | record field | rule |
|---|---|---|
| line time (or the 2017 format's ``[when]``) | ``ts`` | none: ``bad_ts``, unless ``clock=`` is given |
| question name | ``qname`` | |
| question type | ``qtype`` | |
| rcode | ``rcode`` | no response written (rcode ``-``, or flags ``-`` and size 0): the client got ``SERVFAIL`` |
| client address (port removed) | ``client`` | |
| duration (Go syntax: ``5.001234s``, ``84.497µs``) | ``latency_ms`` | |
| ``[ERROR] ... N NAME TYPE: ERROR`` | ``rcode`` | ``TIMEOUT`` when the error is a timeout, else the rcode ``N`` (``SERVFAIL`` for 0 or 2) |
| syslog host, or ``resolver=`` | ``resolver`` | the constructor argument wins |

One failure, one record: when the ``log`` plugin logged a query without a response, the ``errors``
line that follows it for the same name and type (within two seconds of event time) gives that
record its cause (``TIMEOUT`` for an upstream timeout) instead of becoming a second record; such
query lines wait for their cause at most two seconds of event time (and ``flush()``), at most
``max_pending`` of them. An ``errors`` line with no such query line is a record of its own, without
a client.

Timestamps. CoreDNS writes no time on its own lines (only some 1.2–1.4 versions did): run it with a
time-stamping collector (``kubectl logs --timestamps``, the CRI files, journald, syslog). A line
without a time is rejected as ``bad_ts``: stamping it with the reading machine's clock would make a
replay of the same file give other events. For live tailing only, ``clock=`` (a function returning
epoch seconds, e.g. ``time.time``) stamps such lines as they are read.

Honest limits. The query line has no answer count, so ``NOERROR`` cannot be told from ``NODATA``
(``answers`` is left out: ``NOERROR``). The ``errors`` line's address pair is CoreDNS's own upstream
socket, not the client. Custom ``log`` formats are not read (``not_coredns``). Rejections:
``truncated``, ``bad_ts``, ``too_large``, ``not_coredns``.

>>> coredns = CoreDns(resolver="coredns-0")
>>> out = coredns.feed([b'2026-11-27T10:15:02.000Z [INFO] 10.0.0.5:53411 - 4321 "MX IN bank.example. '
...                     b'udp 41 false 1232" NXDOMAIN qr,rd,ra 110 0.000412s'])
>>> out.records
[b'{"ts":1795774502.0,"qname":"bank.example.","rcode":"NXDOMAIN","qtype":"MX","client":"10.0.0.5","resolver":"coredns-0","latency_ms":0.412}']
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from .base import Converted
from .dnsverdict import CAUSE_WINDOW_S, RCODE_NAMES, dns_record, rcode_of, says_timeout
from .lines import LineAdapter
from .logtime import BSD_TIME, GO_TIME, ISO_TIME, MAX_EPOCH_S, LogTime

_PREFIX = re.compile(
    r"(?:<\d{1,3}>)?"
    r"(?:"
    rf"{ISO_TIME} (?:(?:stdout|stderr) [FP] )?(?:(?P<ihost>\S+) coredns(?:\[\d+\])?: )?"
    rf"|{GO_TIME} "
    rf"|{BSD_TIME} (?P<host>\S+) coredns(?:\[\d+\])?: "
    r")?(?P<body>.*)")
_QUERY = re.compile(
    r'\[INFO\] (?:plugin/log: )?(?P<remote>\S+) - (?:\d+ )?"(?P<req>[^"]*)" (?P<rest>.*)')
_QUERY_2017 = re.compile(
    r'(?:\[INFO\] )?(?P<remote>\S+) - \[(?P<when>[^\]]*)\] (?:\d+ )?"(?P<req>[^"]*)" (?P<rest>.*)')
_QUERY_START = re.compile(r'(?:\[INFO\] )?\S+ - (?:\d+ |\[[^\]]*\] )"')
_ERROR = re.compile(
    r"\[ERROR\] (?:plugin/errors: )?(?P<rc>\d+) (?P<name>\S+) (?P<qtype>[A-Za-z0-9]+): (?P<err>.*)")
_ERROR_START = re.compile(r"\[ERROR\] (?:plugin/errors: )?\d+ \S+")
_OTHER = re.compile(r"\[(?:INFO|WARNING|ERROR|DEBUG|FATAL)\] .*"
                    r"|(?:[a-z]+://)?[\w.-]*\.:\d+|CoreDNS-\S+|\S+/\S+, go\S+, \S*")  # banners
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
           "h": 3600.0}


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration string, or None.

    >>> go_duration("5.001234s"), go_duration("84.497µs"), go_duration("1m2.5s"), go_duration("soon")
    (5.001234, 8.4497e-05, 62.5, None)
    """
    total, end = 0.0, 0
    for part in _DURATION_PART.finditer(text):
        if part.start() != end:
            return None
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        end = part.end()
    return total if end and end == len(text) else None


def _host(remote: str) -> str:
    """The client address without its port: ``10.0.0.5:53411``, ``[2001:db8::5]:53411``."""
    if remote.startswith("["):
        return remote[1:].partition("]")[0]
    if remote.count(":") == 1:
        return remote.partition(":")[0]
    return remote


class CoreDns(LineAdapter):
    """CoreDNS ``log`` and ``errors`` plugin lines to DNS resolver records (module docstring).

    ``resolver``: the name to give as ``resolver`` (default: the syslog host, when there is one).
    ``tz``: the zone of times written without an offset. ``year``: for syslog's ``Mon DD`` times.
    ``clock``: stamps lines that carry no time (live tailing only; replays are then not repeatable).
    """

    name = "coredns"
    stream = "dns"
    #: Query lines without a response, waiting for the ``errors`` line with their cause.
    max_pending = 1024

    def __init__(self, resolver: str | None = None, tz: str = "UTC", year: int | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.resolver = resolver
        self.time = LogTime(tz, year)
        self.clock = clock
        self._pending: list[tuple[float, str, str, dict]] = []   # (ts, qname, qtype, record)
        self._now = 0.0

    # -- the protocol ------------------------------------------------------------------------------
    def flush(self) -> Converted:
        out = Converted()
        for _, _, _, record in self._pending:
            out.add(record)
        self._pending = []
        return out

    def snapshot(self) -> dict:
        return {"time": self.time.state(), "now": self._now,
                "pending": [list(entry) for entry in self._pending]}

    def restore(self, state: dict) -> None:
        self.time.load(state.get("time", {}))
        self._now = float(state.get("now", 0.0))
        self._pending = [(float(ts), q, t, record) for ts, q, t, record in state.get("pending", [])]

    # -- one line ----------------------------------------------------------------------------------
    def _line(self, line: str, out: Converted) -> str | None:
        wrapped_ts = None
        if line.startswith('{"log"'):
            try:
                wrapper = orjson.loads(line)
            except orjson.JSONDecodeError:
                return "truncated" if not line.rstrip().endswith("}") else "not_coredns"
            if not isinstance(wrapper, dict) or not isinstance(wrapper.get("log"), str):
                return "not_coredns"
            line = wrapper["log"].rstrip("\r\n")
            if isinstance(wrapper.get("time"), str):
                wrapped_ts = self.time.iso(wrapper["time"])
        match = _PREFIX.fullmatch(line)
        if match is None:  # unreachable: the prefix is optional and the body takes the rest
            return "not_coredns"
        body = match.group("body")
        query = _QUERY.fullmatch(body) or _QUERY_2017.fullmatch(body)
        if query is not None:
            return self._query(query, match, wrapped_ts, out)
        error = _ERROR.fullmatch(body)
        if error is not None:
            return self._error(error, match, wrapped_ts, out)
        if _QUERY_START.match(body) or _ERROR_START.fullmatch(body):
            return "truncated"
        if _OTHER.fullmatch(body):
            out.skipped += 1
            return None
        return "not_coredns"

    def _stamp(self, match: re.Match, wrapped_ts: float | None, when: str | None) -> float | None:
        ts = wrapped_ts if wrapped_ts is not None else self.time.of_match(match)
        if ts is None and when:
            ts = self.time.common_log(when)
        if ts is None and self.clock is not None and not (match.group("iso") or when):
            clock_ts = float(self.clock())
            ts = clock_ts if 0.0 <= clock_ts <= MAX_EPOCH_S else None
        return ts

    def _query(self, query: re.Match, match: re.Match, wrapped_ts: float | None,
               out: Converted) -> str | None:
        request = query.group("req").split()
        rest = query.group("rest").split()
        if len(request) < 3:
            return "truncated"
        if len(rest) >= 4 and rest[2].isdigit():
            rcode, flags, size, duration = rest[:4]
        elif len(rest) >= 3 and rest[1].isdigit():
            rcode, size, duration = rest[:3]
            flags = None
        else:
            return "truncated"
        seconds = go_duration(duration)
        if seconds is None:
            return "truncated"
        ts = self._stamp(match, wrapped_ts, query.groupdict().get("when"))
        if ts is None:
            return "bad_ts"
        self._advance(ts, out)
        qtype, qname = request[0], request[2]
        no_response = rcode == "-" or (flags == "-" and size == "0")
        record = dns_record(ts, qname, "SERVFAIL" if no_response else rcode_of(rcode), qtype,
                            _host(query.group("remote")), self._resolver(match), seconds * 1000.0)
        if no_response:
            self._pending.append((ts, qname.lower(), qtype.upper(), record))
            if len(self._pending) > self.max_pending:
                out.add(self._pending.pop(0)[3])
        else:
            out.add(record)
        return None

    def _error(self, error: re.Match, match: re.Match, wrapped_ts: float | None,
               out: Converted) -> str | None:
        ts = self._stamp(match, wrapped_ts, None)
        if ts is None:
            return "bad_ts"
        self._advance(ts, out)
        qname, qtype = error.group("name"), error.group("qtype")
        if says_timeout(error.group("err")):
            outcome = "TIMEOUT"
        else:
            number = int(error.group("rc")[:3])
            # An errors line with rcode 0 still failed the query: it is no NOERROR.
            outcome = RCODE_NAMES.get(number, "SERVFAIL") if number else "SERVFAIL"
        key = (qname.lower(), qtype.upper())
        for i, (pending_ts, pending_qname, pending_qtype, record) in enumerate(self._pending):
            if (pending_qname, pending_qtype) == key and abs(ts - pending_ts) <= CAUSE_WINDOW_S:
                del self._pending[i]
                record["rcode"] = outcome
                out.add(record)
                return None
        out.add(dns_record(ts, qname, outcome, qtype, None, self._resolver(match)))
        return None

    def _advance(self, ts: float, out: Converted) -> None:
        """Event time moves on: query lines whose cause did not come in time go out as they are."""
        if ts > self._now:
            self._now = ts
        pending = self._pending
        while pending and pending[0][0] + CAUSE_WINDOW_S < self._now:
            out.add(pending.pop(0)[3])

    def _resolver(self, match: re.Match) -> str | None:
        return self.resolver or match.group("host") or match.group("ihost")

    @classmethod
    def _sniff_line(cls, line: str) -> float:
        if line.startswith('{"log"'):
            try:
                line = str(orjson.loads(line).get("log", "")).rstrip()
            except (orjson.JSONDecodeError, AttributeError):
                return 0.0
        match = _PREFIX.fullmatch(line)
        body = match.group("body") if match else ""
        if _QUERY.fullmatch(body) or _QUERY_2017.fullmatch(body) or _ERROR.fullmatch(body):
            return 1.0
        return 0.5 if _OTHER.fullmatch(body) and not body.startswith("[ERROR]") else 0.0

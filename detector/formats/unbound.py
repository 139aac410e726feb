"""Unbound's ``log-replies`` and ``log-servfail`` lines in, DNS resolver records out.

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
without an offset are in ``tz`` (default UTC); see ``logtime``. Rejections:
``truncated``, ``bad_ts``, ``too_large``, ``not_unbound``.

>>> unbound = Unbound(resolver="res1")
>>> out = unbound.feed([b"[1795774502] unbound[811:0] reply: 10.0.0.5 bank.example. TXT IN "
...                     b"NXDOMAIN 0.012000 0 98"])
>>> out.records
[b'{"ts":1795774502.0,"qname":"bank.example.","rcode":"NXDOMAIN","qtype":"TXT","client":"10.0.0.5","resolver":"res1","latency_ms":12.0}']
"""

from __future__ import annotations

import re

from .base import Converted
from .dnsverdict import CAUSE_WINDOW_S, dns_record, rcode_of, remember, says_timeout
from .lines import LineAdapter
from .logtime import BSD_TIME, EPOCH_TIME, ISO_TIME, LogTime

_UNBOUND = re.compile(
    r"(?:<\d{1,3}>)?"
    rf"(?:{EPOCH_TIME} |{BSD_TIME} |{ISO_TIME} )?"
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

"""Join each OTP delivery to the outcome of the DNS lookups it depended on.

Resolver records are buffered by name for as long as a delivery could still need them, and leave
the buffer by event time, so memory follows the traffic inside the join window, not the history.
A lookup ``(qname, qtype)`` of a delivery at time ``t`` from mail server ``s`` matches the resolver
record with the same name (and type, and client ``s``: ``may_be_same_host``) nearest before
``t`` within ``[t - before, t]``; failing that, the earliest one in ``(t, t + after]`` (clocks of
mail servers and resolvers disagree by a few seconds). A delivery takes the worst outcome of its
lookups (``outcomes.SEVERITY_ORDER``); a lookup with no record is ``UNMATCHED``.

**Which client is the server.** Logs name hosts their own way: a Postfix log by its syslog host
name (often the short one), a resolver log by the client's address, in IPv6-mapped form from a
dual-stack socket. A server and a client are told apart only when they are spelt alike: two
addresses (``::ffff:192.0.2.1`` is ``192.0.2.1``) that differ, or two host names that differ
(a short name is compared with a full one's first label). An address against a host name
cannot be told apart without a DNS lookup of our own, so it is not; where both logs use one
spelling, answers for other servers are not joined. Lookups left ``UNMATCHED`` only because
every answer in the window was another client's are counted (``client_mismatched``): the sign
of two logs that name one host two ways, fixed with ``join.match_client = false``.

**Attribution follows the delivery's own result.** At OTP volumes one mail server asks for the
same name many times a minute, so the window often holds several answers, healthy and failing.
The nearest answer in time is not always the one the delivery saw (resolver caches, retries,
parallel lookups), so a delivery's own status picks among them: a failed or deferred delivery
whose status says DNS (``says_dns``: enhanced status X.4.3/X.4.4 routing and name-service
errors, X.7.24 SPF temperror, X.1.8 bad sender domain, or a text such as Postfix's "Name service
error" / "Host not found" / "Domain not found", M365's 4.4.3xx/5.4.3xx) prefers the nearest
*failing* answer, a delivered mail prefers the nearest NOERROR answer, and any other delivery
takes the nearest answer. When a preferred answer exists and is not the nearest, the join was
*ambiguous*: counted (``ambiguous``), so a user can see how often the rule decided.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from heapq import heappop, heappush
from collections.abc import Sequence
from itertools import chain
from operator import attrgetter

from .outcomes import RANK
from .records import _SPEEDUPS, FINAL_FAILURE, DnsRecord, MailRecord, _remember

# A buffered resolver answer is the parsed ``DnsRecord`` itself (ts, qname, qtype, outcome,
# resolver, client).
Entry = DnsRecord


#: What a delivery prefers among several answers in its window (see the module docstring).
PREFER_NEAREST, PREFER_HEALTHY, PREFER_FAILING = 0, 1, 2
#: Outcomes that are a DNS failure (a failing answer): every rank above UNMATCHED.
_FAILING = frozenset(outcome for outcome, rank in RANK.items() if rank < RANK["UNMATCHED"])

_DNS_STATUS_CODE = re.compile(r"[45]\.(?:4\.[34]|7\.24|1\.8)(?:\d|\b)")
_DNS_DETAIL = re.compile(
    r"(?i)name ?service error|host not found|domain not found|\bdns\b|name resolution"
    r"|\b(?:servfail|nxdomain|temperror)\b|lookup (?:failed|timed out)")


def says_dns(status_code: str | None, detail: str | None) -> bool:
    """Whether a failed delivery's status or text blames DNS (rules in the module docstring).

    >>> says_dns("4.4.3", None), says_dns("5.4.312", None), says_dns("5.2.2", "Mailbox full")
    (True, True, False)
    >>> says_dns(None, "Name service error for name=bank.example type=TXT: Host not found")
    True
    """
    if status_code and _DNS_STATUS_CODE.match(status_code):
        return True
    return detail is not None and detail != "" and _DNS_DETAIL.search(detail) is not None


#: Each host spelling's kind (an address or not) and comparable form: a parse cache, bounded
#: as the others are (``records._remember``).
_HOST_KEYS: dict[str, tuple[bool, str]] = {}


def _host_key(host: str) -> tuple[bool, str]:
    key = _HOST_KEYS.get(host)
    if key is None:
        text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            key = (False, text.rstrip("."))
        else:
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            key = (True, str(mapped or address))
        _remember(_HOST_KEYS, host, key)
    return key


def may_be_same_host(server: str, client: str) -> bool:
    """Whether a mail log's ``server`` and a resolver log's ``client`` may be one host (see
    the module docstring): only two addresses, or two names, that differ are told apart.

    >>> may_be_same_host("mx1", "10.0.0.7"), may_be_same_host("10.0.0.7", "::ffff:10.0.0.7")
    (True, True)
    >>> may_be_same_host("mx1", "mx1.mail.example"), may_be_same_host("mx1", "mx2.mail.example")
    (True, False)
    >>> may_be_same_host("192.0.2.1", "10.0.0.7")
    False
    """
    if server == client:
        return True
    server_is_address, server_key = _host_key(server)
    client_is_address, client_key = _host_key(client)
    if server_is_address != client_is_address:
        return True
    if server_key == client_key:
        return True
    if not server_is_address and ("." not in server_key) != ("." not in client_key):
        return server_key.partition(".")[0] == client_key.partition(".")[0]
    return False


#: An entry's time, the key of every bisection: attrgetter runs in C, where a function of ours
#: cost a Python call per probe (1.6 M calls in a 370 k-record replay).
_entry_ts = attrgetter("ts")
_entry_qname = attrgetter("qname")
#: The buffer's upkeep loops compiled (``_speedups.c``), or None: the same loops in Python.
_C = _SPEEDUPS


def _insort(entries: list[Entry], record: Entry) -> None:
    """File ``record`` in a name's list, after the entries of the same time."""
    insort(entries, record, key=_entry_ts)


class DnsJoin:
    """Buffer of resolver records by qname with event-time expiry and a size cap.

    >>> from detector.core.records import parse_dns, parse_mail
    >>> join = DnsJoin(before_s=30, after_s=5)
    >>> join.add(parse_dns(b'{"ts": 100, "qname": "Bank.example.", "rcode": "SERVFAIL", "resolver": "r1"}'))
    >>> join.resolve(parse_mail(b'{"ts": 110, "message_id": "m1", "status": "deferred", "sender": "otp@bank.example"}'))
    ('SERVFAIL', 'r1')
    >>> join.resolve(parse_mail(b'{"ts": 200, "message_id": "m2", "status": "deferred", "sender": "otp@bank.example"}'))
    ('UNMATCHED', None)
    """

    def __init__(self, before_s: float, after_s: float, max_buffered: int = 2_000_000,
                 match_client: bool = True) -> None:
        self.before_s = before_s
        self.after_s = after_s
        self.match_client = match_client
        self.max_buffered = max_buffered
        self._by_name: dict[str, list[Entry]] = {}
        # Expiry order: the buffered records once more, as runs sorted by event time (a batch
        # each) in a heap by their oldest record, so a record far ahead of the others cannot
        # hold back the expiry of everything behind it, and a restored buffer expires exactly
        # alike. A batch is sorted in C and expires as a prefix of its run; a heap entry per
        # name or per record cost a push and a pop per record.
        self._runs: list[tuple[float, int, list[Entry]]] = []
        self._run_seq = 0
        self.size = 0
        self.evicted = 0
        #: Joins where the delivery's status chose an answer other than the nearest one.
        self.ambiguous = 0
        #: Lookups left without an answer only because every answer in their window came from
        #: another client than the delivery's server (``match_client``): the sign of a mail log
        #: and a resolver log that name the same hosts differently. Taken and zeroed by the
        #: task, which counts them (``client_mismatched_lookups``).
        self.client_mismatched = 0

    def add(self, record: DnsRecord) -> None:
        self.add_many((record,))

    def add_many(self, records) -> None:
        """``add`` of each record in turn: a batch's records in one loop over local names."""
        if self.size + len(records) > self.max_buffered:
            # The cap is reached within the batch: each record in turn, evicting as it goes.
            for record in records:
                self._index((record,))
                if self.size > self.max_buffered:
                    self.evicted += self._drop_through(self._runs[0][0], inclusive=True)
            return
        self._index(records)

    def _index(self, records) -> None:
        """File records under their names (each name's list sorted by time) and as a run."""
        if not records:
            return
        by_name = self._by_name
        if _C is not None:
            _C.index_by_name(by_name, records, _insort)
        else:
            for record in records:
                qname = record.qname
                entries = by_name.get(qname)
                if entries is None:
                    by_name[qname] = [record]
                elif entries[-1].ts <= record.ts:
                    entries.append(record)
                else:
                    _insort(entries, record)
        run = sorted(records, key=_entry_ts)
        self._run_seq += 1
        heappush(self._runs, (run[0].ts, self._run_seq, run))
        self.size += len(run)

    def expire(self, cutoff: float) -> None:
        """Forget records older than ``cutoff``: no delivery still to be joined can need them."""
        self._drop_through(cutoff, inclusive=False)

    def _drop_through(self, cutoff: float, inclusive: bool) -> int:
        """Drop every record before ``cutoff`` (through it, with ``inclusive``); how many."""
        runs = self._runs
        if not runs or (runs[0][0] > cutoff if inclusive else runs[0][0] >= cutoff):
            return 0
        gone: list[Entry] = []
        find = bisect_right if inclusive else bisect_left
        while runs and (runs[0][0] <= cutoff if inclusive else runs[0][0] < cutoff):
            _, seq, run = heappop(runs)
            cut = find(run, cutoff, key=_entry_ts)
            gone += run[:cut]
            if cut < len(run):
                del run[:cut]
                heappush(runs, (run[0].ts, seq, run))
        # A name's records before the cutoff are the first of its sorted list: as many as
        # left the runs.
        by_name = self._by_name
        if _C is not None:
            _C.drop_from_names(by_name, gone)
        else:
            for qname, count in Counter(map(_entry_qname, gone)).items():
                entries = by_name[qname]
                if len(entries) == count:
                    del by_name[qname]
                else:
                    del entries[:count]
        self.size -= len(gone)
        return len(gone)

    def match(self, ts: float, qname: str, qtype: str | None, server: str | None,
              prefer: int = PREFER_NEAREST) -> DnsRecord | None:
        """The answer a lookup at ``ts`` joins: the nearest compatible one, or with ``prefer``
        the nearest compatible one of the preferred kind when the window holds one."""
        entries = self._by_name.get(qname)
        if not entries:
            return None
        if not self.match_client:
            server = None
        start, end = ts - self.before_s, ts + self.after_s
        split = bisect_right(entries, ts, key=_entry_ts)
        if split:
            # The usual case, with one bisection and no scan: the nearest answer before is in
            # the window, compatible and of the kind preferred (``_compatible``, inlined).
            entry = entries[split - 1]
            if start <= entry.ts and (qtype is None or entry.qtype is None
                                      or entry.qtype == qtype) and (
                    server is None or entry.client is None or entry.client == server
                    or may_be_same_host(server, entry.client)) and (
                    prefer == PREFER_NEAREST
                    or (entry.outcome in _FAILING) == (prefer == PREFER_FAILING)):
                return entry
        lo = bisect_left(entries, start, key=_entry_ts)
        hi = bisect_right(entries, end, key=_entry_ts)
        split = bisect_right(entries, ts, lo, hi, key=_entry_ts)
        nearest = None
        other_client = False
        # Nearest before first (scan backwards), then the earliest after.
        for i in chain(range(split - 1, lo - 1, -1), range(split, hi)):
            entry = entries[i]
            if not _compatible(entry, qtype, server):
                if server is not None and _compatible(entry, qtype, None):
                    other_client = True
                continue
            if prefer == PREFER_NEAREST:
                return entry
            if (entry.outcome in _FAILING) == (prefer == PREFER_FAILING):
                if nearest is not None:
                    self.ambiguous += 1
                return entry
            if nearest is None:
                nearest = entry
        if nearest is None and other_client:
            self.client_mismatched += 1
        return nearest

    def resolve(self, mail: MailRecord) -> tuple[str, str | None]:
        """The delivery's outcome and the resolver that gave it (``None`` when unknown)."""
        return self.resolve_fields(mail.ts, mail.server, mail.sender_domain, mail.lookups,
                                   mail.dns_outcome, prefer_of(mail))

    def resolve_fields(self, ts: float, server: str | None, sender_domain: str | None,
                       lookups: Sequence[tuple[str, str | None]] | None,
                       dns_outcome: str | None,
                       prefer: int = PREFER_NEAREST) -> tuple[str, str | None]:
        """``resolve`` on the fields the pipeline keeps of a pending delivery."""
        if dns_outcome is not None:
            return dns_outcome, None
        if lookups is None:
            if sender_domain is None:
                return "NO_LOOKUP", None
            lookups = ((sender_domain, None),)
        if not lookups:
            return "NO_LOOKUP", None
        worst, worst_rank, worst_resolver = "NO_LOOKUP", RANK["NO_LOOKUP"], None
        for qname, qtype in lookups:
            entry = self.match(ts, qname, qtype, server, prefer)
            if entry is None:
                outcome, resolver = "UNMATCHED", None
            else:
                outcome, resolver = entry.outcome, entry.resolver
            rank = RANK[outcome]
            if rank < worst_rank:
                worst, worst_rank, worst_resolver = outcome, rank, resolver
        return worst, worst_resolver

    def snapshot(self) -> list:
        """Buffered records as plain lists, oldest first (the arrival order is rebuilt from ts)."""
        flat = [[e.ts, e.qname, e.qtype, e.outcome, e.resolver, e.client]
                for entries in self._by_name.values() for e in entries]
        flat.sort(key=lambda row: (row[0], row[1]))
        return flat

    def restore(self, rows: list) -> None:
        self._by_name.clear()
        self.size = 0
        for row in rows:
            record = DnsRecord(*row)
            self._by_name.setdefault(record.qname, []).append(record)
            self.size += 1
        run = sorted((entry for entries in self._by_name.values() for entry in entries),
                     key=_entry_ts)
        self._runs = [(float(run[0].ts), 0, run)] if run else []


def prefer_of(mail: MailRecord) -> int:
    """What a delivery prefers among the answers in its window, from its own status."""
    if mail.status == "delivered":
        return PREFER_HEALTHY
    if mail.status in FINAL_FAILURE and says_dns(mail.status_code, mail.detail):
        return PREFER_FAILING
    return PREFER_NEAREST


def _compatible(entry: Entry, qtype: str | None, server: str | None) -> bool:
    if qtype is not None and entry.qtype is not None and entry.qtype != qtype:
        return False
    return (server is None or entry.client is None or entry.client == server
            or may_be_same_host(server, entry.client))

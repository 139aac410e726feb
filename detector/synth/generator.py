"""Stream a scenario's mail-flow and DNS resolver logs to gzip JSON lines, and its truth.json.

Time advances a minute of event time at a time: Poisson counts from the diurnal curve, then each
delivery with the lookups it depended on, then the DNS traffic no mail depends on. A record is
written in *arrival* order (its time plus a shipping delay of mostly under two seconds, rarely a
minute or two), through a reorder buffer that holds only the last few seconds, so memory stays
bounded however many hours are asked for. A delivery at a tenant that checks SPF/DMARC has its
lookups in the DNS log 20 ms to 2 s before it, from its mail server to that server's resolver, and
its status follows from their answers: a resolver that cannot answer defers it (4.4.3), a sender
domain that does not exist fails it (5.7.27) or defers it (4.1.8). The imperfections of real
shipping are there at their usual rates: three timestamp forms, duplicates from upstream retries,
non-final records, malformed lines. Everything comes from one seed: the same scenario, seed, length
and start give byte-identical files.
"""

from __future__ import annotations

import gzip
import math
import random
from bisect import bisect_left
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate, count
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import world
from .scenarios import (DELETED_DOMAIN, FAINT_DOMAIN, FAINT_SHARE, LAME_SURGE_FACTOR,
                        OVERLOADED_RESOLVER, RAMP_PEAK_SHARE, RAMP_RESOLVER, REJECTING_TENANTS,
                        SCENARIOS, SEED_DOMAIN, SMALL_DOMAIN, SURGING_LAME, Event)

MINUTE_MS = 60_000
DNS_ERROR_RANK = {"TIMEOUT": 5, "SERVFAIL": 4, "REFUSED": 3, "NXDOMAIN": 2, "NODATA": 1, "NOERROR": 0}

# Rates of the shipping imperfections, per record.
EPOCH_MS_SHARE = 0.10        # ts as epoch milliseconds
EPOCH_S_SHARE = 0.02         # ts as epoch seconds with a fraction
OFFSET_SHARE_DNS = 0.03      # DNS ts as RFC 3339 with a +01:00 offset (a resolver on local time)
LATE_RATE = 1 / 20_000       # arrives 30-120 s late
MALFORMED_RATE = 1 / 20_000  # an extra unparseable line
DUPLICATE_RATE = 0.002       # mail only: the same line again, a few seconds later
NON_FINAL_RATE = 0.01        # mail only: an extra pending/expanded record for the message
SHIPPING_DELAY_MS = 400.0    # mean of the exponential shipping delay ...
MAX_DELAY_MS = 6_000         # ... cut here
# Mail attributes.
EXPLICIT_LOOKUPS = 0.30      # share of DNS-checking deliveries that log their dns_lookups
OTP_CATEGORY = 0.60          # share of OTP mail the mail system already tags "otp"
BULK_CATEGORY = 0.50
TRANSIENT_DNS_FAILURE = 0.0005   # lookups that SERVFAIL or TIMEOUT on a healthy day
BACKGROUND_PER_MAIL = 0.85   # DNS records no mail depends on, per mail (about as many as lookups)
TRAILING_DOT = 0.10          # qnames logged fully qualified
# Incident and decoy strengths (see scenarios.py for the what and when).
SEED_SERVFAIL = 0.95         # a few answers still come from resolvers serving stale data
TIMEOUT_SHARE = 0.70
REJECT_SHARE = 0.40
SURGE_FACTOR = 5.0
STORM_PER_MINUTE = 3000.0
WAVE_PER_BULK = 0.55         # extra newsletter mail per ordinary non-OTP mail during the wave
TINY_BURST_MAILS = 4
FLAP_SERVFAIL = 0.5
#: truth.json lists the times of an incident's first OTP failures (that many): an incident of a
#: small slice cannot be seen before its k-th failure, whatever the detector.
FIRST_FAILURES = 10

# Status when the lookups were healthy: cumulative probability, status, code, detail.
OTP_FAILURES = (
    (0.0035, "failed", "5.2.2", "Mailbox full"),
    (0.0065, "failed", "5.1.1", "User unknown"),
    (0.0075, "deferred", "4.2.1", "Mailbox temporarily unavailable"),
    (0.0080, "quarantined", None, "Suspected phishing"),
)
BULK_FAILURES = (
    (0.006, "failed", "5.1.1", "User unknown"),
    (0.009, "failed", "5.2.2", "Mailbox full"),
    (0.013, "filtered", None, "Spam score above threshold"),
    (0.015, "failed", "5.7.1", "Message rejected by policy"),
)
TINY_FAILURES = ((0.5, "failed", "5.2.2", "Mailbox full"),)
BURST_FAILURES = ((1.0, "failed", "5.2.2", "Mailbox full"),)
STALE_LIST_FAILURES = ((0.55, "failed", "5.1.1", "User unknown"),)
REJECTED = ("failed", "5.7.1", "Message rejected by recipient policy")


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    """What ``generate`` wrote. Lines in mail.jsonl.gz = mail_records + duplicates + malformed_mail."""

    scenario: str
    seed: int
    start: str
    end: str
    mail_records: int
    dns_records: int
    duplicates: int
    malformed_mail: int
    malformed_dns: int
    incidents: int
    decoys: int
    mail_path: Path
    dns_path: Path
    truth_path: Path

    @property
    def malformed(self) -> int:
        return self.malformed_mail + self.malformed_dns

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def generate(scenario: str, outdir: Path, seed: int = 1, hours: float | None = None,
             start: datetime | None = None) -> GenerateSummary:
    """Write ``mail.jsonl.gz``, ``dns.jsonl.gz`` and ``truth.json`` for ``scenario`` into ``outdir``.

    ``hours`` defaults to the scenario's length and ``start`` to its start (a naive time is UTC);
    events sit at fixed offsets from the start and are clipped to the generated span.
    """
    spec = SCENARIOS.get(scenario)
    if spec is None:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    hours = spec.hours if hours is None else float(hours)
    if not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    start = spec.start if start is None else start
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    minutes = max(1, round(hours * 60))
    end = start + timedelta(minutes=minutes)
    events = [(ev, start + ev.offset, min(start + ev.offset + ev.duration, end))
              for ev in spec.events if start + ev.offset < end]

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = outdir / "mail.jsonl.gz", outdir / "dns.jsonl.gz", outdir / "truth.json"
    with _ArrivalOrderedSink(paths[0]) as mail, _ArrivalOrderedSink(paths[1]) as dns:
        traffic = _Traffic(seed, mail, dns, [(ev, _ms(s), _ms(e)) for ev, s, e in events],
                           long_tail=spec.long_tail, ambiguous=spec.ambiguous_lookups)
        start_ms = _ms(start)
        for minute in range(minutes):
            traffic.minute(start_ms + minute * MINUTE_MS)
    truth: dict[str, Any] = {
        "scenario": scenario, "seed": seed, "start": _rfc3339(start), "end": _rfc3339(end),
        "incidents": [{"outcome": ev.outcome, "start": _rfc3339(s), "end": _rfc3339(e),
                       "desc": ev.desc,
                       **({"key": {"outcome": ev.outcome, ev.where[0]: ev.where[1]}}
                          if ev.where else {}),
                       "first_failures": [_rfc3339_ms(t) for t in
                                          sorted(traffic.first_failures[n])[:FIRST_FAILURES]]}
                      for n, (ev, s, e) in enumerate(events) if ev.outcome],
        "decoys": [{"start": _rfc3339(s), "end": _rfc3339(e), "desc": ev.desc}
                   for ev, s, e in events if not ev.outcome],
    }
    paths[2].write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    return GenerateSummary(
        scenario, seed, truth["start"], truth["end"], traffic.mail_records, traffic.dns_records,
        traffic.duplicates, traffic.malformed_mail, traffic.malformed_dns,
        len(truth["incidents"]), len(truth["decoys"]), *paths)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class _ArrivalOrderedSink:
    """A gzip JSON-lines file written in arrival order through a reorder buffer of a few seconds."""

    def __init__(self, path: Path) -> None:
        # mtime=0 and a fixed name in the header: the same records give the same bytes.
        self._file = gzip.GzipFile(path, "wb", compresslevel=1, mtime=0)
        self._pending: list[tuple[int, int, bytes]] = []
        self._order = count()  # ties in arrival time keep generation order

    def put(self, arrival_ms: int, line: bytes) -> None:
        self._pending.append((arrival_ms, next(self._order), line))

    def flush_before(self, boundary_ms: int) -> None:
        """Write every line arriving before ``boundary_ms``: no later record can arrive earlier."""
        pending = self._pending
        pending.sort()
        cut = bisect_left(pending, (boundary_ms,))
        if cut:
            self._file.write(b"\n".join([item[2] for item in pending[:cut]]) + b"\n")
            del pending[:cut]

    def __enter__(self) -> _ArrivalOrderedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.flush_before(2 ** 62)
        self._file.close()


@dataclass(slots=True)
class _Conditions:
    """What the active events change during one minute."""

    # sender zone -> (rcode, share of its lookups, the incident's index or None)
    zone_rcode: dict[str, tuple[str, float, int | None]]
    # resolver -> (rcode, share of its answers, the incident's index)
    resolver_rcode: dict[str, tuple[str, float, int | None]]
    # tenant -> (share of its OTP mail rejected, the incident's index)
    tenant_reject: dict[str, tuple[float, int]]
    otp_factor: float = 1.0
    storm: bool = False
    bounce_wave: bool = False
    lame_surge: bool = False


_DEAD_ZONES = {domain.name: ("NXDOMAIN", 1.0, None) for domain in world.DEAD_BULK_DOMAINS}
#: The tail's zones that are always broken (scenarios with ``long_tail``).
_BROKEN_TAIL = {**{name: ("SERVFAIL", world.LAME_SERVFAIL_SHARE, None) for name in world.LAME_TAIL},
                **{name: ("NXDOMAIN", 1.0, None) for name in world.DEAD_TAIL}}


class _Traffic:
    """Generates one minute of event time at a time into the two sinks."""

    def __init__(self, seed: int, mail: _ArrivalOrderedSink, dns: _ArrivalOrderedSink,
                 events: list[tuple[Event, int, int]], long_tail: bool = False,
                 ambiguous: bool = False) -> None:
        self._rng = random.Random(seed)
        self._rand = self._rng.random
        self._counts = np.random.default_rng(seed)
        self._mail_sink, self._dns_sink = mail, dns
        self._events = events
        self._message_seq = count(1)
        self._prefix_cache: dict[int, str] = {}
        self._tenant_cum = list(accumulate(t.weight for t in world.TENANTS))
        self._otp_cum = list(accumulate(d.weight for d in world.OTP_DOMAINS))
        self._otp_domains = world.OTP_DOMAINS
        self._ambiguous = ambiguous
        self._broken = dict(_DEAD_ZONES)
        if long_tail:
            # The tail sends TAIL_SHARE of the codes; the 25 senders above keep their proportions.
            head = sum(d.weight for d in world.OTP_DOMAINS)
            tail = sum(d.weight for d in world.TAIL_OTP_DOMAINS)
            scale = head * world.TAIL_SHARE / (1.0 - world.TAIL_SHARE) / tail
            self._otp_domains = world.OTP_DOMAINS + world.TAIL_OTP_DOMAINS
            self._otp_cum = list(accumulate([d.weight for d in world.OTP_DOMAINS]
                                            + [d.weight * scale for d in world.TAIL_OTP_DOMAINS]))
            self._broken.update(_BROKEN_TAIL)
            lame = next(d for d in world.TAIL_OTP_DOMAINS if d.name == SURGING_LAME)
            self._lame = lame
            self._lame_share = lame.weight * scale / self._otp_cum[-1]
        self._healthy = _Conditions(dict(self._broken), {}, {})
        self.first_failures: dict[int, list[int]] = {n: [] for n in range(len(events))}
        self._bulk_cum = list(accumulate(d.weight for d in world.BULK_DOMAINS))
        self._client_resolver = {c: world.RESOLVERS[i % 4] for i, c in enumerate(world.BACKGROUND_CLIENTS)}
        self.mail_records = self.dns_records = self.duplicates = 0
        self.malformed_mail = self.malformed_dns = 0

    # -- one minute ------------------------------------------------------------------------

    def minute(self, t0: int) -> None:
        rand = self._rand
        cond = self._conditions(t0)
        shape = world.diurnal(((t0 + MINUTE_MS // 2) / 3_600_000) % 24)
        otp_rate = world.OTP_TROUGH + (world.OTP_PEAK - world.OTP_TROUGH) * shape
        bulk_rate = world.BULK_TROUGH + (world.BULK_PEAK - world.BULK_TROUGH) * shape
        n_otp, n_bulk, n_tiny, n_background, n_wave, n_storm = self._counts.poisson((
            otp_rate * cond.otp_factor, bulk_rate, world.TINY_OTP_PER_MINUTE,
            (otp_rate + bulk_rate) * BACKGROUND_PER_MAIL,
            bulk_rate * WAVE_PER_BULK if cond.bounce_wave else 0.0,
            STORM_PER_MINUTE if cond.storm else 0.0)).tolist()

        choices, tenants = self._rng.choices, world.TENANTS
        mail = self._mail
        for tenant, domain in zip(choices(tenants, cum_weights=self._tenant_cum, k=n_otp),
                                  choices(self._otp_domains, cum_weights=self._otp_cum, k=n_otp)):
            mail(t0 + int(rand() * MINUTE_MS), tenant, domain, True, OTP_FAILURES, cond)
        if cond.lame_surge:
            extra = int(self._counts.poisson(otp_rate * self._lame_share * (LAME_SURGE_FACTOR - 1)))
            for tenant in choices(tenants, cum_weights=self._tenant_cum, k=extra):
                mail(t0 + int(rand() * MINUTE_MS), tenant, self._lame, True, OTP_FAILURES, cond)
        if self._ambiguous:
            self._repeated_lookups(t0, cond)
        for tenant, domain in zip(choices(tenants, cum_weights=self._tenant_cum, k=n_bulk),
                                  choices(world.BULK_DOMAINS, cum_weights=self._bulk_cum, k=n_bulk)):
            mail(t0 + int(rand() * MINUTE_MS), tenant, domain, False, BULK_FAILURES, cond)
        tiny = world.TINY_TENANT
        for _ in range(n_tiny):
            domain = choices(self._otp_domains, cum_weights=self._otp_cum)[0]
            mail(t0 + int(rand() * MINUTE_MS), tiny, domain, True, TINY_FAILURES, cond)
        for ev, s, _ in self._events:
            if ev.kind == "tiny_burst" and t0 <= s < t0 + MINUTE_MS:
                # Several codes for the same person, retried within two minutes, all bouncing.
                domain = choices(self._otp_domains, cum_weights=self._otp_cum)[0]
                for offset in sorted(int(rand() * 2 * MINUTE_MS) for _ in range(TINY_BURST_MAILS)):
                    mail(s + offset, tiny, domain, True, BURST_FAILURES, cond)
        for tenant in choices(tenants, cum_weights=self._tenant_cum, k=n_wave):
            if rand() < 0.8:
                mail(t0 + int(rand() * MINUTE_MS), tenant, world.STALE_LIST_DOMAIN, False,
                     STALE_LIST_FAILURES, cond)
            else:
                domain = world.DEAD_BULK_DOMAINS[int(rand() * len(world.DEAD_BULK_DOMAINS))]
                mail(t0 + int(rand() * MINUTE_MS), tenant, domain, False, BULK_FAILURES, cond)
        self._background_dns(t0, n_background, cond)
        self._storm(t0, n_storm)
        # Records still to come are at most ~3 s older than the next minute (lookups, non-final).
        boundary = t0 + MINUTE_MS - 5_000
        self._mail_sink.flush_before(boundary)
        self._dns_sink.flush_before(boundary)

    def _conditions(self, t0: int) -> _Conditions:
        active = [(n, ev, s, e) for n, (ev, s, e) in enumerate(self._events) if s <= t0 < e]
        if not active:
            return self._healthy
        cond = _Conditions(dict(self._broken), {}, {})
        for n, ev, s, e in active:
            if ev.kind == "zone_servfail":
                cond.zone_rcode[SEED_DOMAIN] = ("SERVFAIL", SEED_SERVFAIL, n)
            elif ev.kind == "zone_flap":
                cond.zone_rcode[SEED_DOMAIN] = ("SERVFAIL", FLAP_SERVFAIL, n)
            elif ev.kind == "faint_servfail":
                cond.zone_rcode[FAINT_DOMAIN] = ("SERVFAIL", FAINT_SHARE, n)
            elif ev.kind == "small_nxdomain":
                cond.zone_rcode[SMALL_DOMAIN] = ("NXDOMAIN", 1.0, n)
            elif ev.kind == "domain_nxdomain":
                cond.zone_rcode[DELETED_DOMAIN] = ("NXDOMAIN", 1.0, n)
            elif ev.kind == "resolver_timeout":
                cond.resolver_rcode[OVERLOADED_RESOLVER] = ("TIMEOUT", TIMEOUT_SHARE, n)
            elif ev.kind == "resolver_ramp":
                # The share grows with the minute's middle: from 0 to its peak over the event.
                share = RAMP_PEAK_SHARE * (t0 + MINUTE_MS / 2 - s) / (e - s)
                cond.resolver_rcode[RAMP_RESOLVER] = ("TIMEOUT", share, n)
            elif ev.kind == "lame_surge":
                cond.lame_surge = True
            elif ev.kind == "tenant_reject":
                cond.tenant_reject.update(dict.fromkeys(REJECTING_TENANTS, (REJECT_SHARE, n)))
            elif ev.kind == "otp_surge":
                cond.otp_factor *= SURGE_FACTOR
            elif ev.kind == "dns_storm":
                cond.storm = True
            elif ev.kind == "bounce_wave":
                cond.bounce_wave = True
        return cond

    # -- mail ------------------------------------------------------------------------------

    def _mail(self, ts: int, tenant: world.Tenant, domain: world.SenderDomain, otp: bool,
              failures: tuple, cond: _Conditions) -> None:
        """One delivery: its lookups (if the tenant checks DNS), its status, its record(s)."""
        rand = self._rand
        server = tenant.server
        addresses = domain.addresses
        sender = addresses[int(rand() * len(addresses))] if len(addresses) > 1 else addresses[0]
        record: dict[str, Any] = {
            "ts": None,
            "message_id": f"<{self._rng.getrandbits(32):08x}{next(self._message_seq):08x}@{server}>",
            "status": "delivered",
            "sender": sender,
            "recipient": f"user{int(rand() * 5000) + 1}@{tenant.name}",
            "tenant": tenant.name,
            "server": server,
            "direction": "inbound",
        }
        if otp:
            template, digits = _OTP_SUBJECTS[int(rand() * len(_OTP_SUBJECTS))]
            record["subject"] = template.format(code=f"{int(rand() * 10 ** digits):0{digits}d}")
            if rand() < OTP_CATEGORY:
                record["category"] = "otp"
        else:
            category, subjects = _BULK_SUBJECTS[int(rand() * len(_BULK_SUBJECTS))]
            record["subject"] = subjects[int(rand() * len(subjects))]
            if rand() < BULK_CATEGORY:
                record["category"] = category

        worst, cause = "NOERROR", None
        if tenant.checks_dns:
            name = domain.name
            resolver = world.RESOLVER_OF_SERVER[server]
            explicit = rand() < EXPLICIT_LOOKUPS
            lookups = ((name, domain.spf), ("_dmarc." + name, world.DMARC_RECORD)) if explicit \
                else ((name, domain.spf),)
            for qname, answer in lookups:
                rcode, fault = self._lookup_rcode(name, resolver, cond)
                self._lookup(ts - 20 - int(rand() * 1980), qname, answer, rcode, resolver, server)
                if DNS_ERROR_RANK[rcode] > DNS_ERROR_RANK[worst]:
                    worst, cause = rcode, fault
            if explicit:
                record["dns_lookups"] = [{"qname": qname, "qtype": "TXT"} for qname, _ in lookups]
        else:
            record["dns_lookups"] = []

        status = code = detail = None
        if worst in ("TIMEOUT", "SERVFAIL", "REFUSED"):
            status, code, detail = ("deferred", "4.4.3", f"Temporary DNS failure looking up SPF "
                                    f"record ({worst})") if rand() < 0.8 else \
                ("deferred", "4.7.24", "SPF validation error: DNS lookup failed")
        elif worst in ("NXDOMAIN", "NODATA"):
            if rand() < 0.3:
                status, code, detail = "deferred", "4.1.8", "Sender address rejected: Domain not found"
            elif worst == "NXDOMAIN":
                status, code, detail = "failed", "5.7.27", "Sender domain does not exist"
            else:
                status, code, detail = "failed", "5.7.23", "SPF validation failed: no SPF record"
        elif otp and tenant.name in cond.tenant_reject and \
                rand() < cond.tenant_reject[tenant.name][0]:
            status, code, detail = REJECTED
            cause = cond.tenant_reject[tenant.name][1]
        else:
            r = rand()
            for threshold, status_if, code_if, detail_if in failures:
                if r < threshold:
                    status, code, detail = status_if, code_if, detail_if
                    break
        if status is not None:
            record["status"] = status
            if otp and cause is not None:
                # Minutes come in order, a minute's deliveries do not: keep the earliest few.
                first = self.first_failures[cause]
                first.append(ts)
                if len(first) > 4 * FIRST_FAILURES:
                    first.sort()
                    del first[FIRST_FAILURES:]
            if code is not None:
                record["status_code"] = code
            record["detail"] = detail

        if rand() < NON_FINAL_RATE:
            # The mail system's earlier, non-final record of the same message.
            earlier = {k: v for k, v in record.items() if k not in ("status_code", "detail", "dns_lookups")}
            earlier["status"] = "pending" if rand() < 0.5 else "expanded"
            self._emit_mail(ts - 200 - int(rand() * 2800), earlier)
        self._emit_mail(ts, record)

    def _emit_mail(self, ts: int, record: dict) -> None:
        self.mail_records += 1
        record["ts"] = self._ts(ts)
        line = orjson.dumps(record)
        arrival, r = self._arrival(ts)
        self._mail_sink.put(arrival, line)
        if LATE_RATE <= r < LATE_RATE + MALFORMED_RATE:
            self.malformed_mail += 1
            self._mail_sink.put(arrival, self._malformed(record, line, ("ts", "message_id", "status")))
        elif LATE_RATE + MALFORMED_RATE <= r < LATE_RATE + MALFORMED_RATE + DUPLICATE_RATE:
            # An upstream retry: the same bytes again, a few seconds later.
            self.duplicates += 1
            self._mail_sink.put(arrival + 500 + int(self._rand() * 3500), line)

    # -- DNS -------------------------------------------------------------------------------

    def _lookup_rcode(self, zone: str, resolver: str, cond: _Conditions) -> tuple[str, int | None]:
        """A lookup's rcode, and the incident that caused it (None for none)."""
        rand = self._rand
        fault = cond.resolver_rcode.get(resolver)
        if fault is not None and rand() < fault[1]:
            return fault[0], fault[2]
        fault = cond.zone_rcode.get(zone)
        if fault is not None and rand() < fault[1]:
            return fault[0], fault[2]
        r = rand()
        if r < TRANSIENT_DNS_FAILURE:
            return ("SERVFAIL" if r < TRANSIENT_DNS_FAILURE / 2 else "TIMEOUT"), None
        return "NOERROR", None

    def _repeated_lookups(self, t0: int, cond: _Conditions) -> None:
        """mx1's many lookups of auth.bank1.example's SPF record, beyond its mail's own."""
        domain = world.OTP_DOMAINS[0]
        server = world.SERVERS[0]
        resolver = world.RESOLVER_OF_SERVER[server]
        for _ in range(int(self._counts.poisson(world.AMBIGUOUS_PER_MINUTE))):
            rcode, _ = self._lookup_rcode(domain.name, resolver, cond)
            self._lookup(t0 + int(self._rand() * MINUTE_MS), domain.name, domain.spf, rcode,
                         resolver, server)

    def _lookup(self, ts: int, qname: str, answer: str, rcode: str, resolver: str, client: str) -> None:
        """The resolver's record of a TXT lookup a delivery depended on."""
        rand = self._rand
        if rand() < TRAILING_DOT:
            qname += "."
        record: dict[str, Any] = {"ts": None, "qname": qname, "qtype": "TXT", "rcode": rcode}
        if rcode == "NOERROR":
            record["answers"] = [answer] if rand() < 0.8 else 1
        elif rcode in ("NXDOMAIN", "NODATA"):
            record["answers"] = []
        record["resolver"] = resolver
        record["client"] = client
        record["latency_ms"] = self._latency(rcode)
        self._emit_dns(ts, record)

    def _latency(self, rcode: str) -> float:
        rand = self._rand
        if rcode == "NOERROR":
            # Over half the answers come from the cache; the others take a recursion.
            return round(rand() * 1.5, 1) if rand() < 0.55 else round(4.0 - math.log(1.0 - rand()) * 40, 1)
        if rcode == "TIMEOUT":
            return float(5000 + int(rand() * 60))
        if rcode == "SERVFAIL":
            return round(30.0 + rand() * 1500, 1)
        if rcode == "REFUSED":
            return round(rand() * 2, 1)
        return round(5.0 + rand() * 90, 1)

    def _background_dns(self, t0: int, n: int, cond: _Conditions) -> None:
        """Lookups no mail depends on: web, reverse, MX; from mail servers and other clients."""
        rand = self._rand
        sites, hosts, clients = world.BACKGROUND_SITES, world.BACKGROUND_HOSTS, world.BACKGROUND_CLIENTS
        for _ in range(n):
            if rand() < 0.25:
                client = world.SERVERS[int(rand() * 8)]
                resolver = world.RESOLVER_OF_SERVER[client]
            else:
                client = clients[int(rand() * len(clients))]
                resolver = self._client_resolver[client]
            site = sites[int(rand() * len(sites))]
            kind = rand()
            if kind < 0.55:
                qtype, qname = "A", f"{hosts[int(rand() * 8)]}.{site}"
                answer = f"192.0.2.{int(rand() * 254) + 1}"
            elif kind < 0.70:
                qtype, qname = "AAAA", f"{hosts[int(rand() * 8)]}.{site}"
                answer = f"2001:db8::{int(rand() * 65535) + 1:x}"
            elif kind < 0.82:
                qtype, qname, answer = "MX", site, f"10 mail.{site}"
            elif kind < 0.95:
                octets = int(rand() * 16_777_216)
                qtype = "PTR"
                qname = f"{octets & 255}.{(octets >> 8) & 255}.{octets >> 16}.10.in-addr.arpa"
                answer = f"host-{octets & 4095}.corp.example"
            else:
                qtype, qname, answer = "TXT", site, "v=spf1 -all"
            fault = cond.resolver_rcode.get(resolver)
            r = rand()
            if fault is not None and rand() < fault[1]:
                rcode, answers = fault[0], None
            elif r < 0.956:
                rcode, answers = "NOERROR", [answer] if rand() < 0.7 else 1 + int(rand() * 3)
            elif r < 0.9595:
                rcode, answers = "NODATA", []
            elif r < 0.966:
                # The name exists, the type does not: logged as NOERROR with no answers (NODATA).
                rcode, answers = "NOERROR", [] if rand() < 0.5 else 0
            elif r < 0.996:
                rcode, answers = "NXDOMAIN", []
            elif r < 0.9965:
                rcode, answers = "REFUSED", None
            else:
                rcode, answers = "SERVFAIL", None
            record: dict[str, Any] = {"ts": None, "qname": qname, "qtype": qtype, "rcode": rcode}
            if answers is not None:
                record["answers"] = answers
            record["resolver"] = resolver
            record["client"] = client
            record["latency_ms"] = self._latency(rcode)
            self._emit_dns(t0 + int(rand() * MINUTE_MS), record)

    def _storm(self, t0: int, n: int) -> None:
        """Random-subdomain storm: unique names under one zone, its servers failing to keep up."""
        rand, bits = self._rand, self._rng.getrandbits
        for _ in range(n):
            rcode = "NXDOMAIN" if rand() < 0.65 else "SERVFAIL"
            record = {
                "ts": None, "qname": f"{bits(40):010x}.{world.STORM_ZONE}", "qtype": "A", "rcode": rcode,
                "resolver": world.STORM_RESOLVERS[int(rand() * 2)],
                "client": world.STORM_CLIENTS[int(rand() * len(world.STORM_CLIENTS))],
                "latency_ms": self._latency(rcode),
            }
            self._emit_dns(t0 + int(rand() * MINUTE_MS), record)

    def _emit_dns(self, ts: int, record: dict) -> None:
        self.dns_records += 1
        record["ts"] = self._ts(ts, OFFSET_SHARE_DNS)
        line = orjson.dumps(record)
        arrival, r = self._arrival(ts)
        self._dns_sink.put(arrival, line)
        if LATE_RATE <= r < LATE_RATE + MALFORMED_RATE:
            self.malformed_dns += 1
            self._dns_sink.put(arrival, self._malformed(record, line, ("ts", "qname", "rcode")))

    # -- shipping --------------------------------------------------------------------------

    def _arrival(self, ts: int) -> tuple[int, float]:
        """Arrival time of a record, and the draw that also decides its other accidents."""
        r = self._rand()
        if r < LATE_RATE:
            return ts + 30_000 + int(self._rand() * 90_000), r
        return ts + min(int(-math.log(1.0 - self._rand()) * SHIPPING_DELAY_MS), MAX_DELAY_MS), r

    def _ts(self, ms: int, offset_share: float = 0.0) -> str | int | float:
        """The record's timestamp in one of the contract's forms, mostly RFC 3339 UTC."""
        r = self._rand()
        if r < EPOCH_MS_SHARE:
            return ms
        if r < EPOCH_MS_SHARE + EPOCH_S_SHARE:
            return ms / 1000
        if r < EPOCH_MS_SHARE + EPOCH_S_SHARE + offset_share:
            local = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=1)))
            return local.isoformat(timespec="milliseconds")
        minute, rest = divmod(ms, MINUTE_MS)
        prefix = self._prefix_cache.get(minute)
        if prefix is None:
            if len(self._prefix_cache) > 64:
                self._prefix_cache.clear()
            prefix = datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:")
            self._prefix_cache[minute] = prefix
        return f"{prefix}{rest // 1000:02d}.{rest % 1000:03d}Z"

    def _malformed(self, record: dict, line: bytes, required: tuple[str, str, str]) -> bytes:
        """A broken copy of a record, one of the ways real shippers break lines."""
        kind = int(self._rand() * 5)
        if kind == 0:
            return line[: len(line) // 2]                          # truncated
        if kind == 1:
            return (b"[1,2]", b'"x"', b"null")[int(self._rand() * 3)]  # not an object
        broken = dict(record)
        if kind == 2:
            del broken[required[int(self._rand() * 3)]]            # a required field missing
        elif kind == 3:
            broken["ts"] = "yesterday"                             # unparseable time
        else:
            broken[required[1]] = 42                               # wrong type
        return orjson.dumps(broken)


_OTP_SUBJECTS = tuple((template, 4 if "login code" in template else 6) for template in world.OTP_SUBJECTS)
_BULK_SUBJECTS = tuple(world.BULK_SUBJECTS.items())


def without_late_lines(lines: list[bytes], late_s: float = 30.0) -> list[bytes]:
    """The lines of a generated log without those sent late on purpose (``LATE_RATE``: 30-120 s
    after their time), for comparisons whose two sides read the input differently. Whether a
    record later than the allowed lateness is rejected depends on how far the *other* inputs of
    its watermark have been read when it comes (in a replay every file's, in a join task its
    other partition's, which may lead by up to ``max_lead_s``); every other record's fate is the
    same however the input is split. Lines without a readable time are kept (they are rejected
    wherever they go), and a time far ahead of the rest (the generator's junk) moves nothing.
    """
    from ..core.records import Rejected, parse_ts

    kept: list[bytes] = []
    newest = -math.inf
    for line in lines:
        try:
            value = orjson.loads(line).get("ts")
            ts = parse_ts(value) if isinstance(value, str) else float(value)
        except (orjson.JSONDecodeError, AttributeError, Rejected, TypeError, ValueError):
            kept.append(line)
            continue
        if ts < newest - late_s:
            continue
        if newest == -math.inf or ts < newest + 3600:
            newest = max(newest, ts)
        kept.append(line)
    return kept

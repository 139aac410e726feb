"""Scenarios: which faults (incidents) and harmless oddities (decoys) happen, when, to whom.

A scenario is a start time, a default length and a list of events placed at offsets from the start.
An incident is a fault an OTP-failure detector must report, with the outcome it should report it
under (the truth); a decoy looks alarming to a naive detector but involves no DNS-caused OTP
failure, and must raise nothing. Single-event scenarios start so that their event falls where its
description says (night or day) after at least two hours of warm-up; ``mixed`` spreads all eight
events over three days, at least three hours apart. What each kind of event does to the traffic is
the generator's business; here it is only named, sized and placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .world import LAME_TAIL, OTP_DOMAINS, RESOLVERS, TINY_TENANT

DAY0 = datetime(2026, 11, 27, tzinfo=timezone.utc)

# The targets of the faults; the world module places them so the shares below hold.
SEED_DOMAIN = OTP_DOMAINS[0].name        # ~23% of OTP mail
DELETED_DOMAIN = OTP_DOMAINS[1].name     # ~12% of OTP mail
OVERLOADED_RESOLVER = RESOLVERS[0]       # 2 of the 8 mail servers, ~1/3 of the mail
REJECTING_TENANTS = ("t003.example", "t004.example", "t005.example")   # ~17% of mail, check DNS
FAINT_DOMAIN = OTP_DOMAINS[4].name       # ~5% of OTP mail: 2 to 3 codes a minute at night
SMALL_DOMAIN = OTP_DOMAINS[24].name      # ~1% of OTP mail: 3 codes a minute at the peak
RAMP_RESOLVER = RESOLVERS[1]             # 3 of the 8 mail servers
SURGING_LAME = LAME_TAIL[0]              # a tail sender whose zone is always half broken
FAINT_SHARE = 0.30
RAMP_PEAK_SHARE = 0.40
LAME_SURGE_FACTOR = 20.0


@dataclass(frozen=True, slots=True)
class Event:
    """One fault or decoy: ``kind`` names what the generator does, ``outcome`` is None for decoys."""

    kind: str
    offset: timedelta
    duration: timedelta
    desc: str
    outcome: str | None = None
    #: For an incident of one sender or one resolver: the slice it is in, as an event key's
    #: field (``("sender_domain", "auth.bank2.example")``); truth.json carries it as ``key``.
    where: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """``long_tail``: 400 small senders share a fifth of the codes, a dozen of them with zones
    that are always broken. ``ambiguous_lookups``: mx1 asks for auth.bank1.example's SPF record
    hundreds of times a minute, so a delivery's window holds many answers of one name."""

    name: str
    desc: str
    start: datetime
    hours: float
    events: tuple[Event, ...]
    long_tail: bool = False
    ambiguous_lookups: bool = False


def _at(hours: float) -> timedelta:
    return timedelta(hours=hours)


def seed_incident(offset: timedelta) -> Event:
    return Event("zone_servfail", offset, timedelta(minutes=40),
                 f"SPF (TXT) lookups of {SEED_DOMAIN} return SERVFAIL (zone misconfiguration, "
                 "~23% of OTP mail); DNS-checking tenants defer it", "SERVFAIL")


def resolver_timeout(offset: timedelta) -> Event:
    return Event("resolver_timeout", offset, timedelta(minutes=45),
                 f"{OVERLOADED_RESOLVER} overloaded at night: ~70% of its queries time out "
                 "(mx1, mx2); deliveries depending on them are deferred", "TIMEOUT")


def nxdomain_deleted(offset: timedelta) -> Event:
    return Event("domain_nxdomain", offset, timedelta(minutes=30),
                 f"zone of {DELETED_DOMAIN} deleted (~12% of OTP mail): lookups return NXDOMAIN, "
                 "deliveries fail 5.7.27", "NXDOMAIN")


def downstream_reject(offset: timedelta) -> Event:
    return Event("tenant_reject", offset, timedelta(minutes=30),
                 f"{', '.join(REJECTING_TENANTS)} reject ~40% of inbound OTP mail (5.7.1) "
                 "while every lookup is NOERROR", "NOERROR")


def volume_surge(offset: timedelta) -> Event:
    return Event("otp_surge", offset, timedelta(minutes=30),
                 "OTP volume x5 (sign-in wave), failure rates unchanged")


def dns_storm(offset: timedelta) -> Event:
    return Event("dns_storm", offset, timedelta(minutes=30),
                 "random-subdomain storm on a zone no mail depends on: ~3000 SERVFAIL/NXDOMAIN "
                 "answers a minute")


def bounce_wave(offset: timedelta) -> Event:
    return Event("bounce_wave", offset, timedelta(minutes=30),
                 "newsletter to a stale list: non-OTP failures x20 (5.1.1 user unknown, "
                 "NXDOMAIN sender domains)")


def tiny_burst(offset: timedelta) -> Event:
    return Event("tiny_burst", offset, timedelta(minutes=3),
                 f"the tiny tenant {TINY_TENANT.name} bounces 4 OTP mails in 2 minutes at night "
                 "(mailbox full, DNS fine)")


def faint_sender(offset: timedelta) -> Event:
    return Event("faint_servfail", offset, timedelta(minutes=60),
                 f"30% of the SPF lookups of {FAINT_DOMAIN} (~5% of OTP mail, 2-3 codes a minute "
                 "at night) SERVFAIL: one sender's problem, barely visible provider-wide",
                 "SERVFAIL", ("sender_domain", FAINT_DOMAIN))


def resolver_ramp(offset: timedelta) -> Event:
    return Event("resolver_ramp", offset, timedelta(minutes=60),
                 f"{RAMP_RESOLVER} times out on a share of its queries rising from 0 to 40% over "
                 "an hour (a creeping overload)", "TIMEOUT", ("resolver", RAMP_RESOLVER))


def small_sender_outage(offset: timedelta) -> Event:
    return Event("small_nxdomain", offset, timedelta(minutes=30),
                 f"zone of {SMALL_DOMAIN} (~1% of OTP mail) deleted: NXDOMAIN for 30 min",
                 "NXDOMAIN", ("sender_domain", SMALL_DOMAIN))


def lame_surge(offset: timedelta) -> Event:
    return Event("lame_surge", offset, timedelta(minutes=30),
                 f"{SURGING_LAME}, whose zone always SERVFAILs half its lookups, sends x20 its "
                 "codes: its usual failures, more of them")


def zone_flap(offset: timedelta) -> Event:
    return Event("zone_flap", offset, timedelta(minutes=40),
                 f"{SEED_DOMAIN}'s name servers flap: half of its SPF lookups SERVFAIL while mx1 "
                 "asks for the name hundreds of times a minute", "SERVFAIL")


def _single(name: str, desc: str, start_hour: float, event, **world) -> Scenario:
    # The event starts 2.5 h after the scenario's start; the scenario runs 6 h.
    return Scenario(name, desc, DAY0 + _at(start_hour), 6.0, (event(_at(2.5)),), **world)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _single("seed-incident", "SPF lookups of a large OTP sender return SERVFAIL for 40 min",
                7.5, seed_incident),
        _single("resolver-timeout", "one resolver times out on ~70% of queries at 03:00 for 45 min",
                0.5, resolver_timeout),
        _single("nxdomain-deleted", "a mid-size OTP sender's zone is deleted: NXDOMAIN for 30 min",
                10.5, nxdomain_deleted),
        _single("downstream-reject", "three tenants reject ~40% of OTP mail, DNS healthy, 30 min",
                8.5, downstream_reject),
        _single("decoy-volume-surge", "decoy: OTP volume x5 for 30 min, same failure rates",
                12.5, volume_surge),
        _single("decoy-dns-storm", "decoy: SERVFAIL/NXDOMAIN storm on names no mail uses, 30 min",
                17.5, dns_storm),
        _single("decoy-bounce-wave", "decoy: non-OTP bounce wave (stale newsletter list), 30 min",
                6.5, bounce_wave),
        _single("decoy-tiny-tenant", "decoy: the tiny tenant bounces 4 OTP mails at night",
                0.5, tiny_burst),
        _single("faint-sender-night", "30% of one small sender's SPF lookups SERVFAIL at 00:30",
                22.0, faint_sender),
        _single("resolver-ramp", "one resolver's timeouts creep from 0 to 40% over an hour",
                6.5, resolver_ramp),
        _single("small-sender-outage", "a sender with ~1% of OTP mail loses its zone, among 400 "
                "tail senders", 11.5, small_sender_outage, long_tail=True),
        _single("decoy-lame-surge", "decoy: among 400 tail senders, one whose zone is always "
                "half broken sends x20", 10.5, lame_surge, long_tail=True),
        Scenario("ambiguous-joins", "mx1 asks for one name hundreds of times a minute; that "
                 "zone flaps, then a resolver times out", DAY0 + _at(7.5), 6.0,
                 (zone_flap(_at(2.5)), resolver_timeout(_at(4.5))), ambiguous_lookups=True),
        Scenario(
            "mixed", "72 h with all four incidents and all four decoys, >= 3 h apart",
            DAY0, 72.0,
            (
                seed_incident(_at(10 + 1 / 3)),       # day 1 10:20
                volume_surge(_at(15)),                # day 1 15:00
                dns_storm(_at(20)),                   # day 1 20:00
                resolver_timeout(_at(24 + 2.75)),     # day 2 02:45
                bounce_wave(_at(24 + 9)),             # day 2 09:00
                nxdomain_deleted(_at(24 + 13 + 1 / 6)),  # day 2 13:10
                tiny_burst(_at(48 + 3 + 1 / 12)),     # day 3 03:05
                downstream_reject(_at(48 + 11)),      # day 3 11:00
            ),
        ),
    )
}

"""The fixed world the synthetic logs describe: tenants, mail servers, resolvers, senders, volumes.

The layout (who receives how much, which tenant checks DNS, which server uses which resolver) is
fixed and written out here, so that a scenario's fault always lands on the share of traffic its
description promises; the seed only drives the traffic. Sizes are Zipf-like, as they are in real
mail: one tenant takes about a fifth of the mail and the tail is long, one OTP sender (a bank's
authentication domain) sends about a fifth of the codes. Volume follows a smooth diurnal curve with
a night trough at 03:00 UTC and an afternoon peak at 14:00 UTC. Every name is a reserved example
name (RFC 2606/6761: ``*.example``, ``example.net``, ``10.in-addr.arpa``); addresses come from the
documentation ranges (RFC 5737, RFC 3849).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: The layout is drawn once from this seed (not the traffic seed): it is part of the scenarios.
_LAYOUT_SEED = 20261127

RESOLVERS = ("res-a.dns.example", "res-b.dns.example", "res-c.dns.example", "res-d.dns.example")
SERVERS = tuple(f"mx{n}.mail.example" for n in range(1, 9))
#: Two servers on res-a (the one that overloads at night), three on res-b, two on res-c, one on res-d.
RESOLVER_OF_SERVER = {
    server: RESOLVERS[group]
    for server, group in zip(SERVERS, (0, 0, 1, 1, 1, 2, 2, 3))
}


@dataclass(frozen=True, slots=True)
class Tenant:
    """A receiving organisation: its share of inbound mail, its mail server, its SPF/DMARC checks."""

    name: str
    weight: float
    server: str
    checks_dns: bool


def _tenants() -> tuple[tuple[Tenant, ...], Tenant]:
    """60 Zipf-sized tenants, ~70% checking DNS, and the tiny tenant (outside the Zipf mix)."""
    layout = random.Random(_LAYOUT_SEED)
    # The largest tenants are placed by hand: t001 (21% of mail) and t005/t006 sit on res-a's
    # servers so that a res-a outage hits about a third of the mail, even at night.
    placed = {1: 0, 2: 2, 3: 3, 4: 5, 5: 1, 6: 1, 7: 4, 8: 6}
    # t002 (11%) does not check DNS, nor do 17 tenants of the tail: 42 of 60 check.
    not_checking = {2, *layout.sample(range(9, 61), 17)}
    tenants = []
    for rank in range(1, 61):
        server = SERVERS[placed[rank]] if rank in placed else layout.choice(SERVERS)
        tenants.append(Tenant(f"t{rank:03d}.example", 1.0 / rank, server, rank not in not_checking))
    tiny = Tenant("t061.example", 0.0, SERVERS[7], True)
    return tuple(tenants), tiny


TENANTS, TINY_TENANT = _tenants()
#: The tiny tenant receives about two OTP mails an hour, and half of them bounce (mailbox full).
TINY_OTP_PER_MINUTE = 2.0 / 60.0


@dataclass(frozen=True, slots=True)
class SenderDomain:
    """A sending domain, its weight among its kind, its sender addresses and its SPF record."""

    name: str
    weight: float
    addresses: tuple[str, ...]
    spf: str


_OTP_DOMAIN_NAMES = (
    "auth.bank1.example", "id.shop3.example", "login.telco2.example", "verify.pay4.example",
    "secure.bank2.example", "accounts.social1.example", "sso.cloud5.example", "auth.games2.example",
    "id.travel1.example", "login.health3.example", "mfa.insure1.example", "auth.retail6.example",
    "id.gov-portal.example", "verify.crypto1.example", "login.stream2.example", "auth.bank3.example",
    "secure.broker1.example", "id.ride1.example", "auth.food2.example", "accounts.work1.example",
    "login.school1.example", "auth.energy1.example", "verify.dating1.example", "id.post1.example",
    "auth.charity1.example",
)
_OTP_LOCAL_PARTS = ("verify", "no-reply", "security", "noreply", "otp")
_BULK_PREFIXES = ("news", "mail", "info", "updates", "notify", "billing", "shop", "events")
_BULK_KINDS = ("retail", "media", "saas", "travel", "club", "store", "bank", "utility")
_BULK_LOCAL_PARTS = ("newsletter", "info", "updates", "billing", "notifications", "orders")


def _otp_domains() -> tuple[SenderDomain, ...]:
    # Zipf exponent 0.9 over 25 senders: the largest sends ~23% of codes, the second ~12%.
    domains = []
    for rank, name in enumerate(_OTP_DOMAIN_NAMES, start=1):
        parts = _OTP_LOCAL_PARTS[rank % 5], _OTP_LOCAL_PARTS[(rank * 3 + 1) % 5]
        addresses = tuple(f"{local}@{name}" for local in dict.fromkeys(parts))
        spf = f"v=spf1 include:_spf.example.net ip4:192.0.2.{rank} -all"
        domains.append(SenderDomain(name, rank ** -0.9, addresses, spf))
    return tuple(domains)


def _bulk_domains() -> tuple[SenderDomain, ...]:
    """100 senders of newsletters, notifications and invoices."""
    layout = random.Random(_LAYOUT_SEED + 1)
    domains = []
    for rank in range(1, 101):
        name = f"{layout.choice(_BULK_PREFIXES)}.{layout.choice(_BULK_KINDS)}{rank}.example"
        addresses = tuple(f"{local}@{name}" for local in layout.sample(_BULK_LOCAL_PARTS, 2))
        spf = f"v=spf1 include:_spf.example.com ip4:198.51.100.{rank} ~all"
        domains.append(SenderDomain(name, rank ** -1.0, addresses, spf))
    return tuple(domains)


OTP_DOMAINS = _otp_domains()
BULK_DOMAINS = _bulk_domains()
DMARC_RECORD = "v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.net"

#: OTP subjects the default OTP rules recognise; ``{code}`` is filled with digits.
OTP_SUBJECTS = (
    "Your verification code is {code}",
    "Your one-time passcode",
    "Security code for your sign-in",
    "Your login code: {code}",
    "Code de vérification : {code}",
    "{code} is your verification code",
)
#: Subjects of other mail by category: none names a code, a passcode, OTP, 2FA, MFA or verification.
BULK_SUBJECTS = {
    "marketing": ("Weekly newsletter", "Black Friday deals inside", "New arrivals this week",
                  "Last chance: 40% off everything"),
    "notification": ("Your order has shipped", "Delivery scheduled for Friday",
                     "Reminder: meeting tomorrow at 10:00", "Your monthly statement is ready"),
    "transactional": ("Invoice 2026-11", "Your receipt from the store", "Payment received, thank you"),
}

# Diurnal volume, per minute. The curve rises from the 03:00 trough to the 14:00 peak and falls back
# over the other 13 hours; raising the half-cosine to a power gives a narrower afternoon peak and a
# long quiet night, as mail has.
OTP_PEAK, OTP_TROUGH = 300.0, 40.0
BULK_PEAK, BULK_TROUGH = 220.0, 30.0
_TROUGH_HOUR, _PEAK_HOUR = 3.0, 14.0


def diurnal(hour_of_day: float) -> float:
    """Shape of the daily curve in [0, 1]: 0 at 03:00 UTC, 1 at 14:00 UTC, smooth in between."""
    rise = _PEAK_HOUR - _TROUGH_HOUR
    since_trough = (hour_of_day - _TROUGH_HOUR) % 24.0
    phase = since_trough / rise if since_trough <= rise else (24.0 - since_trough) / (24.0 - rise)
    return ((1.0 - math.cos(math.pi * phase)) / 2.0) ** 1.5


# Background DNS (lookups no mail depends on): names under example zones and private reverse zones.
BACKGROUND_CLIENTS = tuple(f"ws-{n:03d}.corp.example" for n in range(1, 121)) + tuple(
    f"app-{n:02d}.svc.example" for n in range(1, 21))
BACKGROUND_SITES = tuple(f"site{n}.example" for n in range(1, 401)) + tuple(
    f"cdn{n}.example.net" for n in range(1, 41))
BACKGROUND_HOSTS = ("www", "api", "static", "img", "login", "mail", "assets", "ws")
#: Names of the random-subdomain storm: a zone no mail depends on.
STORM_ZONE = "victim-cdn.example"
STORM_CLIENTS = tuple(f"ws-{n:03d}.corp.example" for n in (13, 27, 44, 58, 91))
STORM_RESOLVERS = ("res-b.dns.example", "res-c.dns.example")
#: A newsletter that mails a stale list during the bounce wave (it sends nothing otherwise).
STALE_LIST_DOMAIN = SenderDomain(
    "news.retail-club.example", 0.0, ("newsletter@news.retail-club.example",),
    "v=spf1 include:_spf.example.com -all")
#: Senders in the same wave whose domains no longer exist (their lookups are NXDOMAIN).
DEAD_BULK_DOMAINS = tuple(
    SenderDomain(f"news.oldlist{n}.example", 0.0, (f"news@news.oldlist{n}.example",), "")
    for n in range(1, 6))


#: The long tail (scenarios with ``long_tail``): 400 small OTP senders beside the 25 above, which
#: then send this share of the codes. Zipf weights continue the 25's curve.
TAIL_SHARE = 0.2
TAIL_OTP_DOMAINS = tuple(
    SenderDomain(f"auth.s{n:03d}.example", (n + 25) ** -0.9, (f"verify@auth.s{n:03d}.example",),
                 f"v=spf1 ip4:203.0.113.{n % 250 + 1} -all")
    for n in range(1, 401))
#: Senders of the tail whose zones are always broken, as some are in real mail: a lame
#: delegation (half of their SPF lookups SERVFAIL) or no zone at all (NXDOMAIN). Their failures
#: are their normal, not an incident.
LAME_TAIL = tuple(d.name for d in TAIL_OTP_DOMAINS[3:9])
DEAD_TAIL = tuple(d.name for d in TAIL_OTP_DOMAINS[9:15])
LAME_SERVFAIL_SHARE = 0.5
#: Extra lookups of one name from one server (``ambiguous_lookups``): a busy mail server asks for
#: a big sender's SPF record far more often than its own mail needs (other checks, retries,
#: short TTLs): this many a minute, from mx1 for auth.bank1.example.
AMBIGUOUS_PER_MINUTE = 300.0

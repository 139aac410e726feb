"""Small, written-out traffic for the core's tests: minutes of OTP mail and the lookups behind it.

``Traffic`` builds mail-flow and DNS resolver lines minute by minute with a fixed rhythm (no
randomness), so a test says exactly what happened: "20 OTP mails a minute for 60 minutes, then for
5 minutes a quarter of them SERVFAIL".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from detector.core.events import to_builtins

T0 = 1795737600.0   # 2026-11-27T00:00:00Z


@dataclass
class Traffic:
    mail: list[bytes] = field(default_factory=list)
    dns: list[bytes] = field(default_factory=list)
    sequence: int = 0

    def minutes(self, start_min: float, count: int, otp_per_min: int, *, rcode: str = "NOERROR",
                bad_every: int = 0, fail_every: int = 0, status: str = "deferred",
                sender_domain: str = "auth.bank.example", resolver: str = "res-a",
                category: str = "otp", lookups: bool = True) -> "Traffic":
        """``count`` minutes from ``start_min``: ``otp_per_min`` mails a minute.

        Every ``bad_every``-th mail's lookup answers ``rcode`` and the mail is ``status``;
        every ``fail_every``-th other mail fails with healthy DNS (``failed`` 5.2.2).
        """
        for minute in range(count):
            for i in range(otp_per_min):
                self.sequence += 1
                ts = T0 + (start_min + minute) * 60 + (i + 0.5) * 60 / otp_per_min
                bad = bad_every and self.sequence % bad_every == 0
                failing = fail_every and not bad and self.sequence % fail_every == 0
                server = f"mx{self.sequence % 3}.mail.example"
                if lookups:
                    self.dns.append(orjson.dumps({
                        "ts": ts - 0.5, "qname": sender_domain, "qtype": "TXT",
                        "rcode": rcode if bad else "NOERROR", "answers": 0 if bad else 1,
                        "resolver": resolver, "client": server}))
                record = {
                    "ts": ts, "message_id": f"<m{self.sequence}@example>",
                    "status": status if bad else "failed" if failing else "delivered",
                    "sender": f"verify@{sender_domain}", "tenant": f"t{self.sequence % 4}.example",
                    "server": server, "category": category,
                    "status_code": "4.4.3" if bad else "5.2.2" if failing else "2.0.0"}
                if not lookups:
                    record["dns_lookups"] = []
                self.mail.append(orjson.dumps(record))
        return self

    def sorted(self) -> "Traffic":
        self.mail.sort(key=lambda line: orjson.loads(line)["ts"])
        self.dns.sort(key=lambda line: orjson.loads(line)["ts"])
        return self


def hourly_servfail_spikes(hours: int, otp_per_min: int = 60) -> Traffic:
    """``hours`` hours of quiet OTP mail; from the second hour on, five minutes of each hour in
    which a third of the mails' lookups SERVFAIL (one anomaly an hour, resolved before the next)."""
    traffic = Traffic()
    for hour in range(hours):
        start = hour * 60
        traffic.minutes(start, 50, otp_per_min, fail_every=150)
        if hour:
            traffic.minutes(start + 50, 5, otp_per_min, bad_every=3, rcode="SERVFAIL")
        else:
            traffic.minutes(start + 50, 5, otp_per_min, fail_every=150)
        traffic.minutes(start + 55, 5, otp_per_min, fail_every=150)
    return traffic.sorted()


def feed_all(detector, traffic: Traffic, batch: int = 500) -> list[dict]:
    """Feed both streams in alternating batches (aligned by position), then close; the events
    as the JSON objects the shells write (``to_builtins``)."""
    events: list[dict] = []
    detector.add_source("mail")
    detector.add_source("dns")
    mail, dns = traffic.mail, traffic.dns
    m = d = 0
    while m < len(mail) or d < len(dns):
        if d < len(dns):
            events += detector.feed("dns", dns[d:d + batch], source="dns").events
            d += batch
        if m < len(mail):
            events += detector.feed("mail", mail[m:m + batch], source="mail").events
            m += batch
    events += detector.close()
    return [to_builtins(event) for event in events]

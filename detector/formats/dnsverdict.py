"""DNS verdicts in log texts, and the contract DNS record the resolver adapters build.

Mail logs name a DNS outcome in free text (an SMTP reply, a policy server's reason, a bounce);
resolver logs give an rcode in their own spelling and a failure's reason. Both are read here, so a
condition gets the same outcome whichever log reports it.

Reply rules (``dns_outcome_of_reply``, first match wins; the Postfix and M365 adapters read their
reply and detail texts with them): a null MX (``nullMX``, X.7.27) is NOERROR (DNS answered; the
domain takes no mail); an rcode named in capitals (``NXDOMAIN``, ``SERVFAIL``, ...) is that rcode;
a DNS lookup that timed out (``DNS Timeout``, ``query timed out``, ``exceeded max query lookup
time``) is TIMEOUT; an SPF/DKIM/DMARC temperror (``4.7.24``, ``temperror``, policyd-spf's ``SPF
Temporary Error``) is SERVFAIL (RFC 7208 2.6.6: a transient DNS error while checking; TIMEOUT when
it says timeout; a permerror, 5.7.24, is a broken record, not a failed lookup: none); a 5xx
``rejected: Domain not found`` / ``Host not found`` (reject_unknown_sender_domain and kin) is
NXDOMAIN; ``Malformed DNS server reply`` is OTHER. A 4xx ``Domain not found`` gets none: Postfix's
default unknown_address_reject_code is 450 for a missing domain and a temporary failure alike.
Reverse-DNS rejects (X.7.25, ``cannot find your hostname``) get none: they do not say whether the
PTR was missing or mismatched.

Resolver rules: an rcode spelled otherwise than the contract (``NOTIMPL``) is the contract's
(``rcode_of``); a failure's reason that names a timeout (``upstream server timeout``, ``i/o
timeout``, ``deadline exceeded``) is TIMEOUT (``says_timeout``). A reason is logged on a line of
its own and explains the client lines within ``CAUSE_WINDOW_S`` of event time; ``remember`` keeps
such facts, bounded.

>>> dns_record(1795774502.0, "bank.example.", rcode_of("NOTIMPL"), "TXT", "10.0.0.5",
...            latency_ms=12.0)
{'ts': 1795774502.0, 'qname': 'bank.example.', 'rcode': 'NOTIMP', 'qtype': 'TXT', 'client': '10.0.0.5', 'latency_ms': 12.0}
"""

from __future__ import annotations

import re

from .lines import clip_field

#: How long (event time) a failure's cause and the client lines it explains may be apart.
CAUSE_WINDOW_S = 2.0
#: rcode spellings of the resolvers that differ from the contract's.
RCODE_ALIASES = {"NOTIMPL": "NOTIMP"}
#: rcode numbers (RFC 1035) of the rcodes the contract knows.
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
#: Answers kept per record: the core needs only their number, and a record must stay small.
MAX_ANSWERS = 32

_TIMEOUT_WORDS = re.compile(r"time ?out|timed out|deadline exceeded", re.IGNORECASE)

_NULL_MX = re.compile(r"(?i)\bnull ?MX\b|\b[45]\.7\.27\b")
_RCODE_NAMED = re.compile(r"\b(NXDOMAIN|SERVFAIL|REFUSED|NODATA|FORMERR|NOTIMP)\b")
_DNS_TIMEOUT = re.compile(
    r"(?i)\b(?:dns|resolver|name ?server|lookup|query)\b[^;()\[\]]{0,60}?"
    r"\b(?:timed out|time-?out|lookup time)\b"
    r"|\b(?:timed out|time-?out)\b[^;()\[\]]{0,30}?\b(?:dns|resolver|lookup|query)\b")
_AUTH_TEMPERROR = re.compile(r"(?i)\b4\.7\.24\b|\btemp ?error\b"
                             r"|\b(?:spf|dkim|dmarc)\b[^;]{0,40}?\btemporary (?:error|failure)\b")
_PERMANENT_REPLY = re.compile(r"\s*(?:5\d\d[ -]|5\.\d{1,3}\.\d{1,3}\s)")
_NOT_FOUND_REJECT = re.compile(r"rejected: (?:Domain|Host) not found\b")
_MALFORMED_REPLY = re.compile(r"(?i)malformed (?:DNS|name) server reply")


def dns_outcome_of_reply(reply: str) -> str | None:
    """The DNS verdict an SMTP reply or policy text names, or ``None`` (rules in the docstring).

    >>> dns_outcome_of_reply("451 4.7.24 SPF Temporary Error: DNS Timeout")
    'TIMEOUT'
    >>> dns_outcome_of_reply("550 5.1.8 <a@b.example>: Sender address rejected: Domain not found")
    'NXDOMAIN'
    >>> print(dns_outcome_of_reply("450 4.1.8 <a@b.example>: Sender address rejected: "
    ...                            "Domain not found"))
    None
    """
    # Each costly pattern runs only after a cheap test for a word it cannot match without.
    lowered = reply.lower()
    if ("null" in lowered or "7.27" in reply) and _NULL_MX.search(reply):
        return "NOERROR"
    named = _RCODE_NAMED.search(reply)
    if named:
        return named.group(1)
    if "time" in lowered and _DNS_TIMEOUT.search(reply):
        return "TIMEOUT"
    if ("temp" in lowered or "4.7.24" in reply) and _AUTH_TEMPERROR.search(reply):
        return "SERVFAIL"
    if ("not found" in reply and _NOT_FOUND_REJECT.search(reply)
            and _PERMANENT_REPLY.match(reply)):
        return "NXDOMAIN"
    if "malformed" in lowered and _MALFORMED_REPLY.search(reply):
        return "OTHER"
    return None


def says_timeout(text: str) -> bool:
    """Whether a failure reason names a timeout (``upstream server timeout``, ``i/o timeout``)."""
    return _TIMEOUT_WORDS.search(text) is not None


def rcode_of(text: str) -> str:
    """A resolver's rcode spelled as the contract does (unknown ones pass: the core's OTHER)."""
    code = text.upper()
    return RCODE_ALIASES.get(code, code)


def dns_record(ts: float, qname: str, rcode: str, qtype: str | None = None,
               client: str | None = None, resolver: str | None = None,
               latency_ms: float | None = None, answers: list[str] | None = None) -> dict:
    """A contract DNS record from parsed fields, strings cut to the contract's size.

    ``answers`` is given only by a log that lists them (an empty list is an answer without
    records); at most ``MAX_ANSWERS`` are kept.
    """
    record: dict = {"ts": ts, "qname": clip_field(qname), "rcode": rcode[:32]}
    if qtype:
        record["qtype"] = qtype[:32]
    if answers is not None:
        record["answers"] = [clip_field(answer) for answer in answers[:MAX_ANSWERS]]
    if client:
        record["client"] = clip_field(client)
    if resolver:
        record["resolver"] = clip_field(resolver)
    if latency_ms is not None and 0.0 <= latency_ms < 86_400_000.0:
        record["latency_ms"] = round(latency_ms, 3)
    return record


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

"""The join key: what puts a delivery and the lookups it depended on in the same partition.

A delivery is joined to the resolver's answers for the names its checks looked up: the sender's
SPF record (``bank.example``, or ``auth.bank.example`` for a subdomain sender), DKIM keys
(``sel._domainkey.bank.example``) and the DMARC policy (``_dmarc.bank.example``). All of these
share the sender's *registrable domain* (eTLD+1: the public suffix and one label more,
``bank.example``, ``bank.co.uk``), which the Public Suffix List defines
(https://publicsuffix.org/; the ``publicsuffixlist`` package ships it, updated with each
release, so no network access is needed). Keying the mail topic by the registrable domain of the
sender and the DNS topic by that of the question name puts both in the same partition (same key,
same partitioner, same partition count), so a join worker that owns partition *p* of both topics
sees a delivery and its lookups together.

What cannot join this way: a lookup of *another organisation's* name that the delivery's checks
depended on, e.g. the ``include:spf.protection.outlook.com`` of a sender's SPF record, or an MX
host's address. That answer is keyed by its own registrable domain and lands in that domain's
partition; in the sender's partition the lookup finds no answer and is ``UNMATCHED``
(``core.join``). The delivery takes the worst outcome of its lookups, and ``UNMATCHED`` ranks
below every DNS error and above ``NOERROR``: a delivery whose own lookups failed still counts
under that failure, one whose own lookups were healthy counts as ``UNMATCHED`` instead of
``NOERROR`` (a failed one still counts in ``ALL``), and a failure of the other organisation's
name alone is not seen as its DNS outcome. A single process that holds every partition
(``--role all``) joins such lookups as before, since all partitions meet there.

A name the list gives no registrable domain (a bare public suffix such as ``co.uk``, a single
label such as ``localhost``) is its own key; the empty name is no key.

**A reverse name is its own key.** The list makes ``in-addr.arpa`` and ``ip6.arpa`` suffixes, so
their "registrable domain" is one label more: every reverse lookup of 10/8 would be the one key
``10.in-addr.arpa``, and every reverse lookup of an IPv6 address in 2000::/4 (the whole global
unicast space in use) the one key ``2.ip6.arpa``. At a mail provider the PTR lookup of each
connecting address is a large share of the resolver's log, and a key is never split over join
workers, so those would be the hottest keys of all. A reverse name belongs to whoever runs the
address, never to a sender's organisation, so nothing is lost by spreading them: a delivery's
lookups of them can join in a split only by chance under either rule (the delivery is keyed by its
sender), and a mail record keyed by its first lookup (no sender, the null sender) is keyed by the
same whole name as that lookup's answers.
"""

from __future__ import annotations

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList()
#: Reverse-mapping zones (RFC 1035 section 3.5, RFC 3596 section 2.5): a name below one is its own
#: key (module docstring), not cached, since a log holds as many as there are client addresses.
REVERSE_SUFFIXES = (".in-addr.arpa", ".ip6.arpa")
_CACHE: dict[str, str] = {}
#: Distinct names remembered; a stream repeats a few thousand, so a full cache is just emptied.
CACHE_ENTRIES = 65_536
#: Longer names (no DNS name is over 253 characters) are looked up but not remembered, so a
#: hostile log cannot fill the cache with megabytes of junk.
CACHED_NAME_CHARS = 253


def registrable_domain(name: str) -> str:
    """The eTLD+1 of a DNS name (lower case, no trailing dot), or the name itself when it has
    none.

    >>> registrable_domain("_dmarc.Auth.Bank1.example.")
    'bank1.example'
    >>> registrable_domain("sel._domainkey.mail.bank.co.uk"), registrable_domain("co.uk")
    ('bank.co.uk', 'co.uk')

    A reverse name is its own key (module docstring):

    >>> registrable_domain("4.3.2.10.IN-ADDR.ARPA.")
    '4.3.2.10.in-addr.arpa'
    """
    key = _CACHE.get(name)
    if key is not None:
        return key
    normal = name.lower().rstrip(".")
    if normal.endswith(REVERSE_SUFFIXES):
        return normal
    key = _PSL.privatesuffix(normal) or normal
    if len(name) <= CACHED_NAME_CHARS:
        if len(_CACHE) >= CACHE_ENTRIES:
            _CACHE.clear()
        _CACHE[name] = key
    return key


def join_key(sender_domain: str | None = None, qname: str | None = None) -> str | None:
    """The partition key of a mail record (its sender's domain) or a DNS record (its question
    name): their registrable domain; ``None`` when there is no name (the null sender).

    >>> join_key(sender_domain="auth.bank.example"), join_key(qname="_dmarc.bank.example.")
    ('bank.example', 'bank.example')
    >>> join_key(qname="."), join_key(sender_domain=None)
    (None, None)
    """
    name = qname if qname is not None else sender_domain
    return (registrable_domain(name) or None) if name else None

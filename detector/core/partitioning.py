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
host's address. Such answers land in the partition of their own registrable domain; in the
sender's partition the lookup finds no answer and its delivery is counted ``UNMATCHED`` for it
(the outcome that says "no resolver record seen", which never hides a failure). Logs that name
such lookups on the mail record can be keyed by the sender regardless, since the mail record
carries the sender; the DNS record of the include is the one that goes elsewhere.

A name with no registrable domain (a bare public suffix such as ``co.uk``, ``localhost``, an
IP address) is its own key.
"""

from __future__ import annotations

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList()
_CACHE: dict[str, str] = {}
#: Distinct names remembered; a stream repeats a few thousand, so a full cache is just emptied.
CACHE_ENTRIES = 65_536


def registrable_domain(name: str) -> str:
    """The eTLD+1 of a DNS name (lower case, no trailing dot), or the name itself when it has
    none.

    >>> registrable_domain("_dmarc.Auth.Bank1.example.")
    'bank1.example'
    >>> registrable_domain("sel._domainkey.mail.bank.co.uk"), registrable_domain("co.uk")
    ('bank.co.uk', 'co.uk')
    """
    key = _CACHE.get(name)
    if key is not None:
        return key
    normal = name.lower().rstrip(".")
    key = _PSL.privatesuffix(normal) or normal
    if len(_CACHE) >= CACHE_ENTRIES:
        _CACHE.clear()
    _CACHE[name] = key
    return key


def join_key(sender_domain: str | None = None, qname: str | None = None) -> str | None:
    """The partition key of a mail record (its sender's domain) or a DNS record (its question
    name): their registrable domain; ``None`` when there is no name (the null sender)."""
    name = qname if qname is not None else sender_domain
    return registrable_domain(name) if name else None

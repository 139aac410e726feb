"""DNS resolution outcomes, their order of severity, and the anomaly keys built on them.

A delivery that depended on several lookups takes the *worst* of their outcomes. The order comes
from the contract: a timeout or a server failure says the resolver could not answer at all, which is
what breaks SPF/DKIM/DMARC checks and defers mail; NXDOMAIN and NODATA are answers (a name or a
record is gone); NOERROR is healthy. ``UNMATCHED`` (no resolver record found for a lookup) and
``NO_LOOKUP`` (the delivery depended on no lookup) are not DNS answers and rank below every error so
that one healthy, matched lookup never hides a failed one.
"""

from __future__ import annotations

# Severity order, worst first (index 0 is the worst).
SEVERITY_ORDER: tuple[str, ...] = (
    "TIMEOUT",
    "SERVFAIL",
    "REFUSED",
    "NXDOMAIN",
    "NODATA",
    "FORMERR",
    "NOTIMP",
    "OTHER",
    "UNMATCHED",
    "NOERROR",
    "NO_LOOKUP",
)

#: Every per-delivery outcome.
OUTCOMES: tuple[str, ...] = SEVERITY_ORDER

#: rcodes a resolver record may carry, as the contract names them; anything else is ``OTHER``.
RCODES: frozenset[str] = frozenset(
    {"NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT", "FORMERR", "NOTIMP"}
)

#: Rank of an outcome: lower is worse. Used to take the worst of a delivery's lookups.
RANK: dict[str, int] = {outcome: rank for rank, outcome in enumerate(SEVERITY_ORDER)}

#: Anomaly keys: one per outcome plus ``ALL`` (every failure, whatever its outcome).
KEYS: tuple[str, ...] = OUTCOMES + ("ALL",)
KEY_INDEX: dict[str, int] = {key: i for i, key in enumerate(KEYS)}
ALL_INDEX: int = KEY_INDEX["ALL"]
N_KEYS: int = len(KEYS)


def outcome_of_rcode(rcode: str, answers: int | None) -> str:
    """Map a resolver record's rcode (any case) and answer count to an outcome.

    >>> outcome_of_rcode("noerror", 0)
    'NODATA'
    >>> outcome_of_rcode("NOERROR", None)
    'NOERROR'
    >>> outcome_of_rcode("YXDOMAIN", None)
    'OTHER'
    """
    code = rcode.upper()
    if code not in RCODES:
        return "OTHER"
    if code == "NOERROR" and answers == 0:
        return "NODATA"
    return code

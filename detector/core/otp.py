"""Decide whether a mail-flow record is one-time-passcode (OTP/MFA) mail.

The mail system's own ``category`` wins when it is logged (``otp`` is OTP, any other value is not).
Without it, the configured rules decide: an exact sender address or sender domain on the
allow-list, a sender local part that OTP senders commonly use (``verify@``, ``otp@``, ``mfa@`` ...),
or a subject that names a code (verification/security/login code, one-time passcode, 2FA, in a few
languages). The defaults recognise the OTP mail of common identity providers and banks; operators
add their own senders to the allow-list, which is the precise tool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_SUBJECT_PATTERNS: tuple[str, ...] = (
    r"\b(verification|security|login|log-in|sign[- ]?in|confirmation|access|authentication|"
    r"authorization|one[- ]time|otp|2fa|mfa|auth) code\b",
    r"\bone[- ]time (pass ?code|password|pin|code)\b",
    r"\b(passcode|otp|2fa|mfa|totp)\b",
    r"\bverify (your )?(email|e-mail|account|identity|sign[- ]?in|login)\b",
    r"\bcode de (vérification|verification|sécurité|securite|connexion)\b",
    r"\b(bestätigungscode|sicherheitscode|anmeldecode)\b",
    r"\bc[óo]digo de (verificaci[óo]n|seguridad|acceso|verifica[çc][ãa]o)\b",
)
DEFAULT_SENDER_PATTERNS: tuple[str, ...] = (
    r"^(no-?reply[-.+_])?(otp|verify|verification|mfa|2fa|auth|signin|sign-in|login|"
    r"security-?code|passcode|one-?time)([-.+_][^@]*)?@",
)


class OtpRules:
    """Classifier of OTP mail from ``category``, sender allow-list and sender/subject patterns.

    Patterns are regular expressions matched case-insensitively anywhere in the subject, and from
    the start of the sender address for sender patterns.

    >>> rules = OtpRules(sender_allowlist=["codes@bank.example", "@id.shop.example"])
    >>> rules.is_otp(None, "codes@bank.example", "Hello")
    True
    >>> rules.is_otp(None, "x@id.shop.example", None)
    True
    >>> rules.is_otp(None, "news@shop.example", "Your verification code is 123456")
    True
    >>> rules.is_otp("marketing", "verify@bank.example", "Your code")
    False
    >>> rules.is_otp(None, "news@shop.example", "Weekly newsletter")
    False
    """

    def __init__(
        self,
        sender_allowlist: Iterable[str] = (),
        sender_patterns: Iterable[str] = DEFAULT_SENDER_PATTERNS,
        subject_patterns: Iterable[str] = DEFAULT_SUBJECT_PATTERNS,
    ) -> None:
        addresses, domains = set(), set()
        for entry in sender_allowlist:
            entry = entry.strip().lower()
            if entry.startswith("@"):
                domains.add(entry[1:].rstrip("."))
            elif "@" in entry:
                addresses.add(entry)
            elif entry:
                domains.add(entry.rstrip("."))
        self._addresses = frozenset(addresses)
        self._domains = frozenset(domains)
        self._sender = _combine(sender_patterns)
        self._subject = _combine(subject_patterns)
        self._verdicts: dict[str, bool] = {}
        # Subjects that matched no pattern: newsletters and notifications repeat theirs for
        # thousands of lines, where an OTP subject carries its code (so only misses are kept).
        self._plain_subjects: set[str] = set()

    def is_otp(self, category: str | None, sender: str | None, subject: str | None) -> bool:
        """``category`` is lower case already (the parser folds it); sender/subject as logged."""
        if category is not None:
            return category == "otp"
        if sender and self._sender_is_otp(sender):
            return True
        return (subject is not None and subject != "" and self._subject is not None
                and self._subject.search(subject) is not None)

    def otp_mails(self, mails: list) -> list:
        """The records (with ``category``, ``sender``, ``subject``) that ``is_otp``, in order:
        the rules over a batch in one loop. A sender's verdict is cached (a log repeats a few
        thousand senders for all its lines), and so are the subjects that matched nothing."""
        verdicts, subject_pattern, plain = self._verdicts, self._subject, self._plain_subjects
        found: list = []
        keep = found.append
        for mail in mails:
            category = mail.category
            if category is not None:
                if category == "otp":
                    keep(mail)
                continue
            sender = mail.sender
            if sender:
                verdict = verdicts.get(sender)
                if verdict is None:
                    verdict = self._sender_is_otp(sender)
                    if len(verdicts) >= 4096:
                        verdicts.clear()
                    if len(sender) <= 320:          # a hostile long "address" is not kept
                        verdicts[sender] = verdict
                if verdict:
                    keep(mail)
                    continue
            subject = mail.subject
            if not subject or subject_pattern is None or subject in plain:
                continue
            if subject_pattern.search(subject):
                keep(mail)
            elif len(subject) <= 200:               # a hostile long subject is not kept
                if len(plain) >= 4096:
                    plain.clear()
                plain.add(subject)
        return found

    def _sender_is_otp(self, sender: str) -> bool:
        address = sender.lower()
        if address in self._addresses or address.rpartition("@")[2] in self._domains:
            return True
        return self._sender is not None and self._sender.search(address) is not None


def _combine(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation instead of N searches: the subject is scanned once per record."""
    parts = [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None

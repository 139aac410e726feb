"""The times log lines start with, as epoch seconds: one year, rollover and time-zone rule for all.

Syslog's classic ``Nov 27 10:15:02`` has no year: ``LogTime`` takes ``year`` (if not given: the
current UTC year, or the previous one when the first line's month is still to come, as when
December's log is read in January; a replay of an old file then depends on when it runs, so pass
``year`` for old files), moves to the next year when the month falls back by more than six
(December, then January) and keeps a late line from last December in last year. Times without an
offset are wall-clock time in ``tz``. A leap second (``:60``) counts as second 59 plus its
fraction, as the core's parser counts it. The forms: syslog's (``BSD_TIME``), ISO 8601 / RFC 3339
(``ISO_TIME``: ``T`` or a space, any fraction, ``Z``, ``+hh:mm`` or ``+hhmm``), BIND's
``print-time`` (``BIND_TIME``: ``27-Nov-2026 10:15:02.123``), Go's ``log`` package (``GO_TIME``:
``2026/11/27 10:15:02``), a bracketed epoch (``EPOCH_TIME``: Unbound's ``[1795774502]``) and the
Common Log Format's ``27/Nov/2026:10:15:02 +0000``. Each ``*_TIME`` is a regex fragment with named
groups, and ``LogTime.of_match`` reads whichever of them a match made.

Records that carry ``ts`` as a number must stay below the core's millisecond threshold
(``MAX_EPOCH_S``); records that carry it as RFC 3339 text (``rfc3339``) reach the year 9999
(``LAST_RFC3339_SECOND``): ``LogTime(latest=...)`` says which.
"""

from __future__ import annotations

import re
from calendar import timegm
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from ..core.records import EPOCH_MS_THRESHOLD, MAX_EPOCH_MS, format_ts

#: The last epoch second a record may give as a number: the core reads larger numbers as ms.
MAX_EPOCH_S = EPOCH_MS_THRESHOLD
#: The last epoch second RFC 3339 can write (9999-12-31T23:59:59.999Z).
LAST_RFC3339_SECOND = MAX_EPOCH_MS / 1000.0
#: RFC 3339 text of a record's time; a log writes many records in the same second.
rfc3339 = lru_cache(maxsize=4096)(format_ts)

MONTHS = {name: i for i, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
BSD_TIME = (r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(?P<day>\d{1,2}) "
            r"(?P<hms>\d\d:\d\d:\d\d(?:\.\d+)?)")
ISO_TIME = r"(?P<iso>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[Zz]|[+-]\d\d:?\d\d)?)"
BIND_TIME = (r"(?P<bday>\d{2})-(?P<bmon>[A-Z][a-z]{2})-(?P<byear>\d{4}) "
             r"(?P<bhms>\d\d:\d\d:\d\d(?:\.\d+)?)")
GO_TIME = r"(?P<golog>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?)"
EPOCH_TIME = r"\[(?P<epoch>\d{1,11})\]"
_ISO_PARTS = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?([Zz]|[+-]\d\d:?\d\d)?")
_COMMON_LOG = re.compile(
    r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


class LogTime:
    """Epoch seconds from the time prefixes logs write (rules in the module docstring).

    ``tz``: the zone of times without an offset. ``year``: for syslog's ``Mon DD``. ``latest``:
    the last epoch second a time may be (later ones are impossible: None). Conversions are cached
    per minute, so a busy log pays for one ``datetime`` per minute, not per line.

    >>> clock = LogTime(year=2026)
    >>> clock.bsd("Dec", "31", "23:59:59"), clock.bsd("Jan", "1", "00:00:01")
    (1798761599.0, 1798761601.0)
    >>> clock.iso("2026-11-27T11:15:02.5+01:00"), clock.iso("2026-11-27 10:15:02")
    (1795774502.5, 1795774502.0)
    >>> clock.bind("27", "Nov", "2026", "10:15:02.5"), clock.go("2026/11/27 10:15:02")
    (1795774502.5, 1795774502.0)
    >>> clock.common_log("27/Nov/2026:11:15:02 +0100"), clock.iso("2026-11-27T10:15:60.5Z")
    (1795774502.0, 1795774559.5)
    """

    def __init__(self, tz: str = "UTC", year: int | None = None,
                 latest: float = MAX_EPOCH_S) -> None:
        self.tz = timezone.utc if tz.upper() == "UTC" else ZoneInfo(tz)
        #: None until the first ``Mon DD`` time when not given: then this year, or last year when
        #: that month is still to come (December's log read in January).
        self.year = year
        #: The latest month seen in ``year`` (0: none yet).
        self.last_month = 0
        self.latest = latest
        self._minutes: dict[tuple, float | None] = {}

    def wall(self, year: int, month: int, day: int, hour: int, minute: int, second: float,
             offset_s: int | None = None) -> float | None:
        """Epoch seconds of a calendar time (in ``tz``, or ``offset_s`` from UTC), or None."""
        key = (year, month, day, hour, minute, offset_s)
        base = self._minutes.get(key, False)
        if base is False:
            try:
                if offset_s is None:
                    base = datetime(year, month, day, hour, minute, tzinfo=self.tz).timestamp()
                else:
                    datetime(year, month, day, hour, minute)  # validates the calendar date
                    base = float(timegm((year, month, day, hour, minute, 0))) - offset_s
            except (ValueError, OverflowError):
                base = None
            if len(self._minutes) > 4096:
                self._minutes.clear()
            self._minutes[key] = base
        if base is None or not 0.0 <= second < 61.0:
            return None
        seconds = base + (second if second < 60.0 else second - 1.0)   # :60.5 counts as :59.5
        return seconds if 0.0 <= seconds <= self.latest else None

    def bsd(self, month_name: str, day: str, hms: str) -> float | None:
        """``Nov 27`` + ``10:15:02[.123]`` (syslog, Unbound's ``log-time-ascii``)."""
        month = MONTHS.get(month_name)
        if month is None or len(hms) < 8:
            return None
        if self.year is None:
            now = datetime.now(timezone.utc)
            self.year = now.year - (month > now.month)
        year = self.year
        if self.last_month and month < self.last_month - 6:
            self.year = year = year + 1          # December, then January: a new year
            self.last_month = month
        elif self.last_month and month > self.last_month + 6:
            year -= 1                            # a late line from last December
        else:
            self.last_month = max(self.last_month, month)
        try:
            return self.wall(year, month, int(day), int(hms[0:2]), int(hms[3:5]), float(hms[6:]))
        except ValueError:
            return None

    def iso(self, text: str) -> float | None:
        """ISO 8601 / RFC 3339: ``T`` or a space, any fraction, ``Z``, ``+hh:mm`` or ``+hhmm``."""
        match = _ISO_PARTS.fullmatch(text)
        if match is None:
            return None
        year, month, day, hour, minute, second, frac, offset = match.groups()
        offset_s = None
        if offset:
            if offset in ("Z", "z"):
                offset_s = 0
            else:
                digits = offset[1:].replace(":", "")
                offset_s = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * (
                    1 if offset[0] == "+" else -1)
        seconds = int(second) + (float("0." + frac) if frac else 0.0)
        return self.wall(int(year), int(month), int(day), int(hour), int(minute), seconds,
                         offset_s)

    def bind(self, day: str, month_name: str, year: str, hms: str) -> float | None:
        """BIND's ``print-time``: ``27-Nov-2026`` + ``10:15:02.123``, in ``tz``."""
        month = MONTHS.get(month_name)
        if month is None:
            return None
        return self.wall(int(year), month, int(day), int(hms[0:2]), int(hms[3:5]), float(hms[6:]))

    def go(self, text: str) -> float | None:
        """Go's ``log`` package: ``2026/11/27 10:15:02[.123]``, in ``tz``."""
        return self.wall(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                         int(text[14:16]), float(text[17:]))

    def common_log(self, text: str) -> float | None:
        """The Common Log Format's ``27/Nov/2026:10:15:02 +0000`` (None if it is not one)."""
        parts = _COMMON_LOG.fullmatch(text)
        month = MONTHS.get(parts.group(2)) if parts else None
        if parts is None or not month:
            return None
        day, _, year, hour, minute, second, sign, oh, om = parts.groups()
        offset_s = (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
        return self.wall(int(year), month, int(day), int(hour), int(minute), float(second),
                         offset_s)

    def epoch(self, text: str) -> float | None:
        """Whole epoch seconds (Unbound's ``[1795774502]``)."""
        seconds = float(text)
        return seconds if seconds <= self.latest else None

    def of_match(self, match: re.Match) -> float | None:
        """The time of a match made with the ``*_TIME`` fragments (None if it has none of them)."""
        groups = match.groupdict()
        if groups.get("iso"):
            return self.iso(groups["iso"])
        if groups.get("mon"):
            return self.bsd(groups["mon"], groups["day"], groups["hms"])
        if groups.get("byear"):
            return self.bind(groups["bday"], groups["bmon"], groups["byear"], groups["bhms"])
        if groups.get("golog"):
            return self.go(groups["golog"])
        if groups.get("epoch"):
            return self.epoch(groups["epoch"])
        return None

    def state(self) -> dict:
        return {"year": self.year, "last_month": self.last_month}

    def load(self, state: dict) -> None:
        year = state.get("year", self.year)
        self.year = int(year) if year is not None else None
        self.last_month = int(state.get("last_month", 0))

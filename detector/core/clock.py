"""Event time over several inputs: the watermark, and exact-duplicate suppression.

The watermark is the event time up to which the detector believes it has seen everything: the
*slowest* live input's newest timestamp minus an allowed lateness (the low-watermark of Akidau et
al. 2015, "The Dataflow Model", VLDB). Inputs are named by the shell (a file, a Kafka partition);
an input that is finished or idle is left out of the minimum so it stalls nothing. The watermark
never moves back. A record older than the watermark is *late*: the windows it belongs to may have
been judged already, so it is counted and dead-lettered instead of silently changing history,
which also keeps a replay and a live run of the same input identical.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple


class EventClock:
    """Per-input high-water marks and the watermark derived from them.

    >>> clock = EventClock(allowed_lateness_s=10)
    >>> clock.observe("mail", 100.0); clock.observe("dns", 80.0)
    >>> clock.advance()
    70.0
    >>> clock.finish("dns")
    >>> clock.advance()
    90.0
    """

    def __init__(self, allowed_lateness_s: float) -> None:
        self.allowed_lateness_s = allowed_lateness_s
        self.high: dict[str, float] = {}
        self.inactive: set[str] = set()
        self.watermark = -math.inf

    def add(self, source: str) -> None:
        """A new input: until it has data it holds the watermark back (it may be far behind)."""
        self.high.setdefault(source, -math.inf)
        self.inactive.discard(source)

    def observe(self, source: str, ts: float) -> None:
        if ts > self.high.get(source, -math.inf):
            self.high[source] = ts
        self.inactive.discard(source)

    def finish(self, source: str) -> None:
        """The input ended or went idle: it no longer holds the watermark back."""
        self.inactive.add(source)

    def advance(self) -> float:
        active = [ts for source, ts in self.high.items() if source not in self.inactive]
        if active:
            candidate = min(active) - self.allowed_lateness_s
        elif self.high:
            candidate = max(self.high.values()) - self.allowed_lateness_s
        else:
            return self.watermark
        if candidate == -math.inf:
            return self.watermark
        if candidate > self.watermark:
            self.watermark = candidate
        return self.watermark

    def snapshot(self) -> dict:
        return {"high": {k: (None if v == -math.inf else v) for k, v in self.high.items()},
                "inactive": sorted(self.inactive),
                "watermark": None if self.watermark == -math.inf else self.watermark}

    def restore(self, state: dict) -> None:
        self.high = {str(k): (-math.inf if v is None else float(v))
                     for k, v in state["high"].items()}
        self.inactive = set(state["inactive"])
        watermark = state["watermark"]
        self.watermark = -math.inf if watermark is None else float(watermark)


class _Record(NamedTuple):
    message_id: str
    status: str
    ts: float


class Deduplicator:
    """Exact duplicates by ``(message_id, status)`` within an event-time horizon, with a size cap.

    >>> dedup = Deduplicator(horizon_s=600, max_entries=10)
    >>> dedup.seen("m1", "delivered", 100.0), dedup.seen("m1", "delivered", 101.0)
    (False, True)
    >>> dedup.seen("m1", "deferred", 102.0)
    False
    """

    def __init__(self, horizon_s: float, max_entries: int = 5_000_000) -> None:
        self.horizon_s = horizon_s
        self.max_entries = max_entries
        self._keys: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()
        self.evicted = 0

    def seen(self, message_id: str, status: str, ts: float) -> bool:
        return not self.first_seen([_Record(message_id, status, ts)])

    def first_seen(self, records: list) -> list:
        """The records (with ``message_id``, ``status``, ``ts``) not seen before, in order;
        each is remembered as it passes, so a repeat within the batch is a duplicate too."""
        keys, order, cap = self._keys, self._order, self.max_entries
        add, remember = keys.add, order.append
        fresh: list = []
        keep = fresh.append
        if len(order) + len(records) <= cap:         # the usual batch: the cap is not reached
            for record in records:
                key = f"{record.message_id}\x00{record.status}"
                if key not in keys:
                    add(key)
                    remember((record.ts, key))
                    keep(record)
            return fresh
        for record in records:
            key = f"{record.message_id}\x00{record.status}"
            if key in keys:
                continue
            add(key)
            remember((record.ts, key))
            keep(record)
            if len(order) > cap:
                keys.discard(order.popleft()[1])
                self.evicted += 1
        return fresh

    def expire(self, watermark: float) -> None:
        cutoff = watermark - self.horizon_s
        order, keys = self._order, self._keys
        while order and order[0][0] < cutoff:
            keys.discard(order.popleft()[1])

    def __len__(self) -> int:
        return len(self._order)

    def snapshot(self) -> list:
        return [[ts, key] for ts, key in self._order]

    def restore(self, rows: list) -> None:
        self._order = deque((float(ts), key) for ts, key in rows)
        self._keys = {key for _, key in self._order}

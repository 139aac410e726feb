"""Delivery lanes: one thread per receiver, each at its own pace, each knowing what it has delivered.

The Kafka loop pushes every event it reads into every lane and moves on; a lane sends, retries
with back-off while its receiver is away (no answer, 408, 429, 5xx), dead-letters what the
receiver refuses (other 4xx), and reports per partition the offset below which everything is
accepted or dead-lettered (``done``). The loop commits the smallest of the lanes' offsets, so
an event is committed only once every receiver has it, and a receiver that is down holds back
only its own deliveries and the commit, never the others (nor the detector, which is another
process).

Back-off doubles from ``retry_backoff_min_s`` to ``retry_backoff_max_s`` and each wait is drawn
from [half, whole] of that (jitter), so many notifiers do not retry in step. On stop (SIGTERM) a
lane finishes the request in flight, starts no other, and leaves what is left undelivered and
uncommitted for the next start.

``AlertmanagerLane`` coalesces: it holds the newest alert per (anomaly, labels) and sends them
in batches, rendered at send time, so after an outage Alertmanager gets each alert's current
state with fresh end times, once, instead of every step it missed. ``WebhookLane`` sends every
event, in order, one request each.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, Callable

from .alerts import AlertIntent, render
from .receivers import AlertmanagerReceiver, Answer, WebhookReceiver
from .settings import NotifySettings

log = logging.getLogger(__name__)

#: ``dead_letter(raw, receiver, answer) -> bool``: True once the dead letter is acknowledged,
#: False when the notifier stopped first.
DeadLetter = Callable[[bytes, str, Answer], bool]
#: A firing alert ends this many re-send intervals ahead (Prometheus uses 4 too).
HORIZON_INTERVALS = 4


def backoff_s(failures: int, low: float, high: float, draw=random.uniform) -> float:
    """The wait before retry number ``failures + 1``.

    >>> [backoff_s(n, 0.5, 30, draw=lambda a, b: b) for n in range(9)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30, 30, 30]
    """
    ceiling = min(high, low * 2 ** min(failures, 32))
    return draw(ceiling / 2, ceiling)


class Lane(threading.Thread, ABC):
    """The delivery loop shared by both kinds of lane; subclasses say what a unit of work is."""

    def __init__(self, receiver, settings: NotifySettings, stopping: threading.Event, metrics,
                 dead_letter: DeadLetter) -> None:
        super().__init__(name=f"lane-{receiver.name}", daemon=True)
        self.receiver = receiver
        self.settings = settings
        self.stopping = stopping
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.cond = threading.Condition()
        self.seen: dict[Any, int] = {}       # partition -> next offset pushed
        self.failures = 0                    # consecutive unanswered or failed requests
        metrics.add_receiver(receiver.name)

    # ------------------------------------------------------------ subclass protocol
    @abstractmethod
    def _has_work(self) -> bool:
        """Whether there is something to send (under the lock)."""

    @abstractmethod
    def _next(self):
        """The next unit of work (under the lock)."""

    @abstractmethod
    def _post(self, unit) -> Answer:
        """One request for ``unit`` (outside the lock: pushes go on meanwhile)."""

    @abstractmethod
    def _refused(self, unit, answer: Answer) -> bool:
        """Dead-letter a refused unit; False when it is not finished after all."""

    @abstractmethod
    def _finish(self, unit, answer: Answer) -> None:
        """Account an accepted or dead-lettered unit (under the lock)."""

    @abstractmethod
    def _first_unfinished(self, tp) -> int | None:
        """The first offset of ``tp`` pushed and not yet finished, or None (under the lock)."""

    @abstractmethod
    def pending(self) -> int:
        """Events (alerts) held and not yet finished (under the lock)."""

    # ------------------------------------------------------------ shared
    def done(self, tp) -> int | None:
        """The next offset of ``tp`` to commit as far as this receiver is concerned."""
        with self.cond:
            first = self._first_unfinished(tp)
            return first if first is not None else self.seen.get(tp)

    def run(self) -> None:
        name = self.receiver.name
        while True:
            with self.cond:
                while not self.stopping.is_set() and not self._has_work():
                    self.cond.wait(0.5)
                if self.stopping.is_set():
                    return
                unit = self._next()
            try:
                answer = self._post(unit)
            except Exception as err:             # noqa: BLE001 - a bug must not stop the lane
                log.exception("a request could not be made", extra={"receiver": name})
                answer = Answer(None, error=repr(err), retryable=False)
            if answer.verdict == "retry":
                self.metrics.receiver_up.labels(receiver=name).set(0)
                self.metrics.retries.labels(receiver=name).inc()
                if self.failures == 0:
                    log.warning("receiver not answering; retrying with back-off",
                                extra={"receiver": name, "error": answer.describe()})
                wait = backoff_s(self.failures, self.settings.retry_backoff_min_s,
                                 self.settings.retry_backoff_max_s)
                self.failures += 1
                if self.stopping.wait(wait):
                    return
                continue
            if self.failures:
                log.info("receiver answers again", extra={"receiver": name,
                                                          "failed_requests": self.failures})
            self.failures = 0
            self.metrics.receiver_up.labels(receiver=name).set(1)
            if answer.verdict == "refused" and not self._refused(unit, answer):
                if self.stopping.is_set():
                    return
                continue
            with self.cond:
                self._finish(unit, answer)
                self.metrics.pending.labels(receiver=name).set(self.pending())

    def _dead_letter(self, intent_raw: bytes, event_id: str, answer: Answer) -> bool:
        log.warning("receiver refused an event: dead-lettered",
                    extra={"receiver": self.receiver.name, "anomaly_id": event_id,
                           "response": answer.describe()})
        return self.dead_letter(intent_raw, self.receiver.name, answer)

    def forget(self, tps: set) -> None:
        """Partitions the group moved elsewhere: their offsets are no longer this member's."""
        with self.cond:
            for tp in tps:
                self.seen.pop(tp, None)
            self._forget(tps)

    def _forget(self, tps: set) -> None:
        pass


class AlertmanagerLane(Lane):
    """Alerts to one Alertmanager: the newest per (anomaly, labels), in batches."""

    receiver: AlertmanagerReceiver

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pending_alerts: dict[tuple, AlertIntent] = {}
        self.pending_first: dict[Any, int] = {}    # partition -> first offset in pending
        self.inflight: dict[tuple, AlertIntent] = {}
        self.inflight_first: dict[Any, int] = {}
        self.refused_alerts: set[tuple] = set()    # not re-sent until a new event for them
        self.probe = False                         # a re-send is due, even of no alert
        self.singles = 0                           # isolating a refused alert: one per request
        self.horizon_s = HORIZON_INTERVALS * self.settings.resend_interval_s

    def push(self, tp, offset: int, intents: list[AlertIntent]) -> None:
        with self.cond:
            self.seen[tp] = offset + 1
            if intents:
                self.pending_first.setdefault(tp, offset)
            for intent in intents:
                self.refused_alerts.discard(intent.identity)
                _merge(self.pending_alerts, intent)
            self.cond.notify()
            self.metrics.pending.labels(receiver=self.receiver.name).set(self.pending())

    def push_refresh(self, intents: list[AlertIntent]) -> None:
        """Re-send these firing alerts (and probe the receiver when there are none)."""
        with self.cond:
            for intent in intents:
                if intent.identity not in self.refused_alerts:
                    _merge(self.pending_alerts, intent)
            self.probe = True
            self.cond.notify()

    def _has_work(self) -> bool:
        return bool(self.pending_alerts or self.inflight or self.probe)

    def _next(self) -> list[AlertIntent]:
        for intent in self.pending_alerts.values():
            _merge(self.inflight, intent)
        for tp, offset in self.pending_first.items():
            self.inflight_first[tp] = min(offset, self.inflight_first.get(tp, offset))
        self.pending_alerts, self.pending_first, self.probe = {}, {}, False
        size = 1 if self.singles else self.settings.max_batch
        return list(self.inflight.values())[:size]

    def _post(self, unit: list[AlertIntent]) -> Answer:
        now = time.time()
        settings = self.settings
        return self.receiver.post_alerts([render(intent, now, self.horizon_s,
                                                 settings.generator_url, settings.runbook_url)
                                          for intent in unit])

    def _refused(self, unit: list[AlertIntent], answer: Answer) -> bool:
        if not unit:                # a probe (no alert) refused: a proxy or auth in the way
            log.warning("Alertmanager refused a request with no alert in it",
                        extra={"receiver": self.receiver.name, "response": answer.describe()})
            return True
        if len(unit) > 1:           # one bad alert refuses the whole request: find it
            self.singles = len(unit)
            return False
        return self._dead_letter(unit[0].raw, unit[0].anomaly_id, answer)

    def _finish(self, unit: list[AlertIntent], answer: Answer) -> None:
        name = self.receiver.name
        for intent in unit:
            self.inflight.pop(intent.identity, None)
            if answer.verdict == "accepted":
                if intent.events:
                    self.metrics.sent.labels(receiver=name).inc(intent.events)
                else:
                    self.metrics.resent.labels(receiver=name).inc()
            else:
                self.refused_alerts.add(intent.identity)
                self.metrics.failed.labels(receiver=name, status=str(answer.status)).inc(
                    max(intent.events, 1))
        if self.singles:
            self.singles -= 1
        if not self.inflight:
            self.inflight_first = {}

    def _first_unfinished(self, tp) -> int | None:
        offsets = [o for o in (self.inflight_first.get(tp), self.pending_first.get(tp))
                   if o is not None]
        return min(offsets) if offsets else None

    def pending(self) -> int:
        return len(self.pending_alerts) + len(self.inflight)

    def _forget(self, tps: set) -> None:
        for tp in tps:
            self.pending_first.pop(tp, None)
            self.inflight_first.pop(tp, None)


def _merge(alerts: dict[tuple, AlertIntent], intent: AlertIntent) -> None:
    """The newer intent wins; the events the older one carried are still counted."""
    older = alerts.get(intent.identity)
    if older is not None and older.events:
        intent = AlertIntent(intent.anomaly_id, intent.labels, intent.event, intent.raw,
                             intent.ended_at, intent.events + older.events)
    alerts[intent.identity] = intent


class WebhookLane(Lane):
    """Every event to one webhook URL, in topic order, one request each."""

    receiver: WebhookReceiver

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queue: deque[tuple[Any, int, bytes, dict]] = deque()

    def push(self, tp, offset: int, raw: bytes, event: dict | None) -> None:
        with self.cond:
            self.seen[tp] = offset + 1
            if event is not None:
                self.queue.append((tp, offset, raw, event))
                self.cond.notify()
            self.metrics.pending.labels(receiver=self.receiver.name).set(len(self.queue))

    def _has_work(self) -> bool:
        return bool(self.queue)

    def _next(self):
        return self.queue[0]

    def _post(self, unit) -> Answer:
        _tp, _offset, raw, event = unit
        return self.receiver.post_event(raw, event)

    def _refused(self, unit, answer: Answer) -> bool:
        return self._dead_letter(unit[2], unit[3]["id"], answer)

    def _finish(self, unit, answer: Answer) -> None:
        if self.queue and self.queue[0] is unit:
            self.queue.popleft()
        name = self.receiver.name
        if answer.verdict == "accepted":
            self.metrics.sent.labels(receiver=name).inc()
        else:
            self.metrics.failed.labels(receiver=name, status=str(answer.status)).inc()

    def _first_unfinished(self, tp) -> int | None:
        return next((offset for item_tp, offset, _raw, _event in self.queue if item_tp == tp), None)

    def pending(self) -> int:
        return len(self.queue)

    def _forget(self, tps: set) -> None:
        self.queue = deque(item for item in self.queue if item[0] not in tps)

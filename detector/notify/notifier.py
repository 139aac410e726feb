"""The notifier's Kafka shell: read the anomalies topic, feed the lanes, commit what they delivered.

**Its own group.** ``otp-notifier`` (``notify.group_id``) reads the anomalies topic with the
project's transport (``io.transport``; the ``[kafka]`` settings, short group timeouts in tests),
so its offsets say what the receivers accepted and nothing about the detector's progress.

**State from the topic.** The open anomalies Alertmanager must keep hearing about are rebuilt
from the topic itself at every start, never from a side file: each assigned partition is read
from its beginning; events before the group's committed offset only rebuild the open set (they
were delivered), events from it on are delivered. Once every partition is read up to its committed
offset, every open anomaly is re-sent, then again every ``resend_interval_s``. The topic is small
(a few events per incident) and anomalies end within hours (the detector freezes a baseline for at
most 4 h), so reading it back takes moments; its retention must outlast the longest anomaly.

**At-least-once.** An event is committed when every receiver has accepted it or dead-lettered it
(``lanes``). A crash re-sends at most what was read since the last commit: Alertmanager merges a
re-sent alert with the one it has (same labels), and webhooks see the same idempotency key.
Messages that are not anomaly events are dead-lettered with their reason and skipped.

**Signals.** SIGTERM or SIGINT: the lanes finish the request in flight, what they finished is
committed, the member leaves the group, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from ..io.clients import ensure_topics
from ..io.transport import TP, Batch, Transport, TransportError, make_transport
from ..settings import Settings
from .alerts import EventError, OpenAnomalies, read_event
from .lanes import AlertmanagerLane, Lane, WebhookLane, backoff_s
from .metrics import NotifierMetrics
from .receivers import AlertmanagerReceiver, Answer, WebhookReceiver, tls_context
from .settings import NotifySettings, mask_url

log = logging.getLogger(__name__)

POLL_S = 0.2
#: A dead letter not acknowledged in this long is retried.
DEAD_LETTER_TIMEOUT_S = 10.0


def receiver_names(kind: str, urls: tuple[str, ...]) -> list[str]:
    """``kind`` for one URL, ``kind-1``, ``kind-2``... for several (the ``receiver`` label).

    >>> receiver_names("webhook", ("a", "b")), receiver_names("alertmanager", ("a",))
    (['webhook-1', 'webhook-2'], ['alertmanager'])
    """
    return [kind] if len(urls) == 1 else [f"{kind}-{n}" for n in range(1, len(urls) + 1)]


class Notifier:
    def __init__(self, notify: NotifySettings, shared: Settings, metrics: NotifierMetrics) -> None:
        self.notify = notify
        self.shared = shared
        self.metrics = metrics
        self.topic = shared.topics.anomalies
        self.stopping = threading.Event()
        self.book = OpenAnomalies()
        context = tls_context(notify.tls_verify, notify.ca_file)
        timeout = notify.request_timeout_s
        lane_args = (notify, self.stopping, metrics, self._dead_letter)
        self.alertmanagers = [
            AlertmanagerLane(AlertmanagerReceiver(name, url, timeout, context), *lane_args)
            for name, url in zip(receiver_names("alertmanager", notify.alertmanager_urls),
                                 notify.alertmanager_urls)]
        self.webhooks = [
            WebhookLane(WebhookReceiver(name, url, timeout, context, notify.webhook_secret),
                        *lane_args)
            for name, url in zip(receiver_names("webhook", notify.webhook_urls),
                                 notify.webhook_urls)]
        self.lanes: list[Lane] = [*self.alertmanagers, *self.webhooks]
        self.transport: Transport          # set by run(), before anything reads it
        self._changes = threading.Lock()          # assignment news from the client's thread
        self._assigned: set[TP] = set()
        self._revoked: set[TP] = set()
        self._dead_letters = threading.Lock()
        self.deliver_from: dict[TP, int] = {}     # the committed offset found at assignment
        self.rebuilding: set[TP] = set()          # still reading what was delivered before
        self.committed: dict[TP, int] = {}
        self.resend_at: float | None = None       # monotonic; None until the first rebuild
        self.rebuild_started = 0.0
        self.next_commit = 0.0
        self.held_back = False                    # paused: a receiver's backlog is full
        self.counts = {"events": 0, "delivered_from_topic": 0, "invalid": 0}

    # ---------------------------------------------------------------- lifecycle

    def stop(self, *_signal_args) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        notify, kafka = self.notify, self.shared.kafka
        log.info("starting", extra={"config": {"notify": notify.describe(),
                                               "kafka": self.shared.describe()["kafka"],
                                               "topic": self.topic},
                                    "receivers": {lane.receiver.name: mask_url(lane.receiver.url)
                                                  for lane in self.lanes}})
        if not notify.tls_verify:
            log.warning("TLS certificates of receivers are NOT verified (notify.tls_verify = false)")
        if self.shared.worker.create_topics:
            self._with_retry("create topics", lambda: ensure_topics(
                kafka, {notify.dead_letter_topic: {}}))
        transport = self._with_retry("connect", lambda: make_transport(
            kafka, notify.group_id, None))
        if transport is None:                       # stopped before Kafka could be reached
            return 0
        self.transport = transport
        self.transport.join([self.topic], on_assigned=self._on_assigned,
                            on_revoked=self._on_revoked)
        for lane in self.lanes:
            lane.start()
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    self._step()
                    failures = 0
                except TransportError as err:
                    log.warning("a Kafka operation failed; retrying", extra={"error": repr(err)})
                    self.stopping.wait(self._backoff(failures))
                    failures += 1
        finally:
            self.stopping.set()                     # lanes finish the request in flight
            for lane in self.lanes:
                lane.join(timeout=notify.request_timeout_s + 5)
            try:
                self._commit()
            except TransportError as err:
                log.warning("final commit failed; the next start re-sends from the last one",
                            extra={"error": repr(err)})
            self.transport.close()
        log.info("stopped", extra=self.counts)
        return 0

    def _backoff(self, failures: int) -> float:
        return backoff_s(failures, self.notify.retry_backoff_min_s, self.notify.retry_backoff_max_s)

    def _with_retry(self, what: str, action) -> Any:
        failures = 0
        while not self.stopping.is_set():
            try:
                return action()
            except Exception as err:               # noqa: BLE001 - the broker is away: retry
                log.warning(f"{what} failed; retrying", extra={"error": repr(err)})
                self.stopping.wait(self._backoff(failures))
                failures += 1
        return None

    # ---------------------------------------------------------------- the loop

    def _step(self) -> None:
        self._apply_assignment()
        for batch in self.transport.poll(POLL_S):
            self._take(batch)
        now = time.monotonic()
        if self.rebuilding:
            self.rebuilding = {tp for tp in self.rebuilding
                               if (self.transport.position(tp) or 0) < self.deliver_from[tp]}
            if not self.rebuilding:
                log.info("open anomalies rebuilt from the topic",
                         extra={"open": len(self.book),
                                "seconds": round(now - self.rebuild_started, 3)})
                self.resend_at = now               # Alertmanager may have forgotten them
        if self.resend_at is not None and now >= self.resend_at:
            firing = self.book.firing()
            for lane in self.alertmanagers:
                lane.push_refresh(firing)
            self.resend_at = now + self.notify.resend_interval_s
        if now >= self.next_commit:
            self._commit()
            self.next_commit = now + self.notify.commit_interval_s
        self._hold_back_if_full()

    def _take(self, batch: Batch) -> None:
        tp = batch.tp
        start = self.deliver_from.get(tp)
        if start is None:                           # revoked meanwhile
            return
        for value, offset in zip(batch.values, batch.offsets):
            self.counts["events"] += 1
            deliver = offset >= start
            try:
                event = read_event(value)
            except EventError as err:
                if deliver:
                    self.counts["invalid"] += 1
                    self.metrics.invalid.labels(reason=err.reason).inc()
                    log.warning("not an anomaly event: dead-lettered",
                                extra={"reason": err.reason, "partition": tp.partition,
                                       "offset": offset})
                    if not self._dead_letter(value, "notifier", Answer(None, error=err.reason)):
                        return                      # stopping: neither delivered nor committed
                    self._push(tp, offset, value, None, [])
                continue
            intents = self.book.apply(event, value, tp)
            if deliver:
                self.counts["delivered_from_topic"] += 1
                self._push(tp, offset, value, event, intents)
        self.metrics.consumed.inc(len(batch.values))
        self.metrics.open_anomalies.set(len(self.book))

    def _push(self, tp: TP, offset: int, value: bytes, event: dict | None, intents) -> None:
        for alertmanager in self.alertmanagers:
            alertmanager.push(tp, offset, intents)
        for webhook in self.webhooks:
            webhook.push(tp, offset, value, event)

    def _done(self, tp: TP) -> int | None:
        """The offset below which every receiver has every event of ``tp``."""
        done = [lane.done(tp) for lane in self.lanes]
        known = [offset for offset in done if offset is not None]
        return None if not done or len(known) < len(done) else min(known)

    def _commit(self, asynchronous: bool = False) -> None:
        offsets = {}
        for tp in list(self.deliver_from):
            done = self._done(tp)
            if done is not None and done > self.committed.get(tp, -1):
                offsets[tp] = done
        if offsets:
            self.transport.commit(offsets, asynchronous=asynchronous)
            self.committed.update(offsets)
            self.metrics.last_commit.set(time.time())

    def _hold_back_if_full(self) -> None:
        """Pause reading while a receiver holds ``max_pending`` events (memory stays bounded)."""
        backlog = max((lane.pending() for lane in self.lanes), default=0)
        if not self.held_back and backlog >= self.notify.max_pending:
            self.transport.pause(self.deliver_from)
            self.held_back = True
            log.warning("a receiver's backlog is full: reading paused", extra={"backlog": backlog})
        elif self.held_back and backlog < self.notify.max_pending // 2:
            self.transport.resume(self.deliver_from)
            self.held_back = False
            log.info("reading resumed", extra={"backlog": backlog})

    # ---------------------------------------------------------------- group changes

    def _on_assigned(self, assigned: set[TP]) -> None:
        """On the client's thread: hold the partitions until the loop has placed them."""
        if assigned:
            self.transport.pause(assigned)
            with self._changes:
                self._assigned |= assigned

    def _on_revoked(self, revoked: set[TP]) -> None:
        """On the client's thread: commit what the receivers have before another member reads."""
        offsets = {tp: done for tp in revoked & set(self.deliver_from)
                   if (done := self._done(tp)) is not None and done > self.committed.get(tp, -1)}
        if offsets:
            try:
                self.transport.commit(offsets, asynchronous=True)
            except TransportError as err:
                log.warning("commit at revocation failed", extra={"error": repr(err)})
        with self._changes:
            self._revoked |= revoked
            self._assigned -= revoked

    def _apply_assignment(self) -> None:
        with self._changes:
            assigned, self._assigned = self._assigned, set()
            revoked, self._revoked = self._revoked, set()
        if revoked:
            self.book.forget(revoked)
            for lane in self.lanes:
                lane.forget(revoked)
            for tp in revoked:
                self.deliver_from.pop(tp, None)
                self.committed.pop(tp, None)
            self.rebuilding -= revoked
        placed: set[TP] = set()
        try:
            for tp in sorted(assigned):
                self.transport.seek_to(tp, "committed")
                start = self.transport.position(tp) or 0
                self.transport.seek_to(tp, "earliest")
                self.deliver_from[tp] = self.committed[tp] = start
                self.rebuilding.add(tp)
                placed.add(tp)
        finally:
            if assigned - placed:                   # retried at the next step
                with self._changes:
                    self._assigned |= assigned - placed
        if placed:
            self.rebuild_started = time.monotonic()
            if not self.held_back:
                self.transport.resume(placed)
            log.info("partitions assigned: rebuilding the open anomalies",
                     extra={"deliver_from": {f"{tp.topic}/{tp.partition}": self.deliver_from[tp]
                                             for tp in sorted(placed)}})

    # ---------------------------------------------------------------- dead letters

    def _dead_letter(self, raw: bytes, receiver: str, answer: Answer) -> bool:
        """Write ``raw`` to the dead-letter topic with why; True once acknowledged, False when
        stopping first (then nothing is committed for it and the next start tries again)."""
        headers = [("receiver", receiver.encode()),
                   ("status", str(answer.status or "").encode()),
                   ("response", answer.body or answer.error.encode()),
                   ("source_topic", self.topic.encode())]
        failures = 0
        while True:
            with self._dead_letters:
                try:
                    handle = self.transport.send(self.notify.dead_letter_topic, None, raw, headers)
                    self.transport.flush(DEAD_LETTER_TIMEOUT_S)
                    error = self.transport.delivery_error(handle)
                except TransportError as err:
                    error = err
            if error is None:
                return True
            log.warning("dead-letter write failed; retrying", extra={"error": repr(error)})
            if self.stopping.wait(self._backoff(failures)):
                return False
            failures += 1

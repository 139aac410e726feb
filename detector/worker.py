"""The stream worker: Kafka in, the core, Kafka out; commits, checkpoints, signals and metrics.

``Worker.run()`` consumes the mail-flow and DNS topics as one consumer-group member, through a
transport (``io.transport``: librdkafka by default, kafka-python the pure-Python fallback), feeds
each polled partition batch to the core (the source name is ``topic/partition``), and produces what
the core returns: anomaly events to ``otp-anomalies`` (key = the event id) and rejected records to
the dead-letter topic (value = the original bytes; headers = reason and source coordinates).

**Delivery: at-least-once, no loss.** Every ``checkpoint_interval_s`` (and before partitions are
revoked, and at shutdown) the worker waits until every produced record is acknowledged
(``acks=all``), writes the core's state with the next offset of every partition to the state topic,
and only then commits those offsets. A crash therefore resumes from a state and offsets that agree:
records after the checkpoint are read again and re-derive the same events with the same ids. A
write that fails is retried with back-off while consumption is paused; nothing is committed past
it. A producer that keeps failing is closed and rebuilt. Only the member that owns the partitions
writes a checkpoint: one the group has moved on from (evicted after a stall) writes none, drops
its state and rejoins (``_save``).

**Event time.** Each partition is a source of the core's watermark, so the watermark follows the
slowest partition of both topics. A partition with no records for ``idle_timeout_s`` stops holding
it back. A partition more than ``max_lead_s`` of event time ahead of the watermark is paused until
the others catch up, which keeps memory bounded when reading history and lets DNS answers reach
the join before the mail that needed them.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from .core.events import AnomalyEvent, encode_event
from .core.pipeline import DNS, MAIL, Detector
from .core.records import Rejected, parse_ts
from .formats import CONTRACT, make_adapter
from .io.assignor import SingleActiveAssignor
from .io.clients import ensure_topics, unreachable
from .io.state_store import StateStore
from .io.transport import TP, Batch, MembershipLost, Transport, TransportError, make_transport
from .settings import Settings
from .shell import Rejection, Source, Task, envelope, restore, saved_adapters

log = logging.getLogger("detector.worker")

#: How long one attempt waits for acknowledgements before it counts as failed and is retried.
WRITE_TIMEOUT_S = 10.0


@dataclass
class Outgoing:
    """A record produced but not yet acknowledged, kept to be re-sent if its write fails."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    handle: Any = None             # the transport's handle of the write in flight
    error: Exception | None = None   # why the last attempt failed


@dataclass
class PartitionProgress:
    next_offset: int | None = None       # the offset after the last record fed to the core
                                         # (a checkpoint commits it); before what a source holds
    read_to: int | None = None           # the offset after the last record read

    def position(self) -> int | None:
        """Where reading is: after the last record read, else where it was told to start."""
        return self.read_to if self.read_to is not None else self.next_offset
    last_data: float = field(default_factory=time.monotonic)
    idle: bool = False
    paused: bool = False


class Worker:
    """One consumer-group member running the detector's core (see the module docstring)."""

    def __init__(self, settings: Settings, metrics=None) -> None:
        self.settings = settings
        self.metrics = metrics
        topics = settings.topics
        self.stream_of = {topics.mail: MAIL, topics.dns: DNS}
        self.formats = {topics.mail: topics.mail_format, topics.dns: topics.dns_format}
        #: Each assigned partition's step into the core (``shell.Source``), in partition order.
        self.sources: dict[TP, Source] = {}
        self.detector: Detector | None = None
        self.progress: dict[TP, PartitionProgress] = {}
        self.outgoing: list[Outgoing] = []
        self.failed_writes = 0
        self.writes_failing = False
        self.send_blocked: Exception | None = None
        self.stopping = threading.Event()
        self.assignor = SingleActiveAssignor()
        self.state_store = StateStore(settings.kafka, topics.state, settings.worker.group_id)
        self.first_assignment = True
        self.pending_assignment: set[TP] | None = None
        self.last_checkpoint = time.monotonic()
        #: A poll left records unread (a backlog): the step that reads the last of it
        #: checkpoints at once (``_step``).
        self.behind = False
        self.transport: Transport         # set by run(), before anything reads it
        self.healthy = True
        self.counts = {"consumed": 0, "produced": 0, "checkpoints": 0}

    # ---------------------------------------------------------------- lifecycle

    def stop(self, *_signal_args) -> None:
        """Finish the batch, checkpoint, commit and leave the group (signal-safe)."""
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        settings = self.settings
        log.info("starting", extra={"config": settings.describe()})
        if not self._wait_for_broker():
            log.info("stopped before the broker could be reached")
            return 0
        if settings.worker.create_topics:
            self._with_retry("create topics", lambda: ensure_topics(
                settings.kafka, self._topics_to_create()))
        problem = self._check_start()
        if problem is not None:
            log.error("cannot start", extra={"error": problem})
            return 2
        transport = self._with_retry("connect", lambda: make_transport(
            settings.kafka, self._group_id(), self.assignor))
        if transport is None:                      # stopped before Kafka could be reached
            return 0
        self.transport = transport
        log.info("transport", extra={"transport": self.transport.name})
        self.transport.join(self._topics(),
                            on_assigned=self._on_assigned, on_revoked=self._on_revoked,
                            on_lost=self._on_lost)
        idle_exit = settings.worker.exit_when_idle_s
        try:
            while not self.stopping.is_set():
                try:
                    self._step()
                except TransportError as err:      # pause, seek, assign...: retried next step
                    log.warning("a Kafka operation failed; retrying", extra={"error": repr(err)})
                    time.sleep(self._backoff())
                    continue
                if idle_exit and self._all_idle_for(idle_exit):
                    log.info("input idle: flushing and exiting", extra={"idle_s": idle_exit})
                    self._flush_input()
                    break
            if self.metrics is not None:
                self.metrics.observe_core()   # what the last flush joined and judged
            self._checkpoint(final=True)
            self.detector = None          # checkpointed: closing revokes nothing left to save
        finally:
            self.transport.close()
        log.info("stopped", extra={**self.counts, "cpu_s": round(time.process_time(), 3)})
        return 0

    # What a role changes (``stages``): the topics read, the group, topics to create, a check.

    def _topics(self) -> list[str]:
        return [self.settings.topics.mail, self.settings.topics.dns]

    def _group_id(self) -> str:
        return self.settings.worker.group_id

    def _topics_to_create(self) -> dict[str, dict[str, str]]:
        topics = self.settings.topics
        return {topics.anomalies: {}, topics.dead_letter: {},
                topics.state: {"cleanup.policy": "compact"}}

    def _check_start(self) -> str | None:
        """A reason not to start (one line), or None."""
        return None

    def _flush_input(self) -> None:
        """End of a batch run: records adapters still hold, then the core's last windows."""
        if self.detector is None:
            return
        for tp, source in self.sources.items():
            self._release(tp)
            fed = source.flush()
            self._dead_letters(tp, fed.rejected, [])
            self._emit(fed.events)
        self._emit(self.detector.close())

    def _release(self, tp: TP) -> None:
        """The partition has no more for now: what its source holds is judged (``Source``)."""
        source, progress = self.sources.get(tp), self.progress.get(tp)
        if source is None or source.held_from is None:
            return
        fed = source.release(time.time())
        self._dead_letters(tp, fed.rejected, [])
        self._emit(fed.events)
        if progress is not None:
            progress.next_offset = progress.read_to

    # -------------------------------------------------------------------- loop

    def _step(self) -> None:
        if self.pending_assignment:
            self._restore(self.pending_assignment)
        if self.writes_failing and not self._checkpoint():
            time.sleep(self._backoff())
            return
        try:
            batches = self.transport.poll(0.5)
        except TransportError as err:
            log.warning("poll failed; retrying", extra={"error": repr(err)})
            time.sleep(self._backoff())
            return
        started = time.perf_counter()
        now_wall = time.time()
        now = time.monotonic()
        for batch in batches:
            if self.detector is None:
                break
            self._feed(batch, now_wall, now)
        if batches and self.metrics is not None:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        caught_up = False
        if self.detector is not None:
            if batches:
                caught_up = self._read_to_the_end()
            self._mark_idle(now)
            self._align()
            self._update_metrics()
        if (caught_up or now - self.last_checkpoint
                >= self.settings.worker.checkpoint_interval_s):
            self._checkpoint()

    def _feed(self, batch: Batch, now_wall: float, now: float) -> None:
        tp, offsets = batch.tp, batch.offsets
        count, read_to = len(batch.values), offsets[-1] + 1
        source = self.sources[tp]
        fed = source.feed(batch.values, now=now_wall, refs=offsets)
        self._dead_letters(tp, fed.rejected, offsets)
        self._emit(fed.events)
        progress = self.progress.setdefault(tp, PartitionProgress())
        # Records the source holds for the next batch (``Source``) are not in the core's state:
        # a checkpoint commits the offset before them, so a restart reads them again.
        held = source.held_from
        progress.next_offset = read_to if held is None else held
        progress.read_to = read_to
        progress.last_data = now
        progress.idle = False
        self.counts["consumed"] += count
        if self.metrics is not None:
            self.metrics.consumed(tp.topic, count)

    def _read_to_the_end(self) -> bool:
        """True once, when a backlog has just been read to its end (as of the last fetch).

        Then the worker checkpoints at once rather than at the next interval: what it has read
        is committed as soon as there is no more, so a restart right after re-reads nothing, and
        a backfill is committed when it is done (the group's lag says so). A live worker reads
        each fetch to its end, so this fires only after a burst that one poll could not take.
        """
        transport = self.transport
        behind = False
        for tp, progress in self.progress.items():
            high, read_to = transport.highwater(tp), progress.position()
            if high is not None and read_to is not None and read_to < high:
                behind = True
                break
        was_behind, self.behind = self.behind, behind
        return was_behind and not behind

    def _dead_letters(self, tp: TP, rejected: list[Rejection], offsets: list[int]) -> None:
        """What a step rejected, each as it came: a value with its offset; a record the
        adapter made with the offset range of the batch it came from (``"flush"`` at the end)."""
        for rejection in rejected:
            if rejection.position is not None:            # (the offset: ``refs`` of the feed)
                offset = str(rejection.position)
            elif offsets:
                offset = f"{offsets[0]}-{offsets[-1]}"
            else:
                offset = "flush"
            self._dead_letter(tp, rejection.raw, rejection.reason, offset)

    def _dead_letter(self, tp: TP, value: bytes, reason: str, offset: str) -> None:
        headers = [("reason", reason.encode()), ("source_topic", tp.topic.encode()),
                   ("source_partition", str(tp.partition).encode()),
                   ("source_offset", offset.encode())]
        form = self.formats.get(tp.topic, CONTRACT)      # (the judge's steps: internal)
        if form != CONTRACT:
            headers.append(("format", form.encode()))
        self._send(self.settings.topics.dead_letter, None, value, headers)

    def _emit(self, events: list[AnomalyEvent]) -> None:
        for event in events:
            self._send(self.settings.topics.anomalies, event.id.encode(), encode_event(event), [])
            log.info("anomaly", extra={"id": event.id, "state": event.state,
                                       "outcome": event.key["outcome"],
                                       "severity": event.severity})

    def _send(self, topic: str, key: bytes | None, value: bytes,
              headers: list[tuple[str, bytes]]) -> None:
        outgoing = Outgoing(topic, key, value, headers)
        self._start_send(outgoing)
        self.outgoing.append(outgoing)

    def _start_send(self, outgoing: Outgoing) -> None:
        if self.send_blocked is not None:
            # A send already blocked and failed in this round (no metadata, buffer full): the
            # others would block just as long, one after another. They wait for the retry.
            outgoing.handle, outgoing.error = None, self.send_blocked
            return
        try:
            outgoing.handle = self.transport.send(outgoing.topic, outgoing.key, outgoing.value,
                                                  outgoing.headers)
            outgoing.error = None
        except TransportError as err:           # buffer full, metadata unavailable, closed
            outgoing.handle, outgoing.error = None, err
            self.send_blocked = err

    def _flush_outgoing(self) -> bool:
        """Wait for every outstanding write; start again the ones that failed. True when all
        are acknowledged."""
        self.send_blocked = None
        try:
            self.transport.flush(WRITE_TIMEOUT_S)
        except TransportError as err:
            log.warning("flush failed", extra={"error": repr(err)})
        failed = []
        for outgoing in self.outgoing:
            if outgoing.handle is not None:
                outgoing.error = self.transport.delivery_error(outgoing.handle)
            if outgoing.error is not None:
                failed.append(outgoing)
        self.counts["produced"] += len(self.outgoing) - len(failed)
        self.outgoing = failed
        if failed:
            log.warning("writes failed", extra={"failed": len(failed),
                                                "error": repr(failed[0].error)})
            if self.metrics is not None:
                self.metrics.write_failures.inc(len(failed))
            for outgoing in failed:
                self._start_send(outgoing)
        return not failed

    def _rebuild_producer(self) -> None:
        log.warning("rebuilding the producer after repeated failures")
        try:
            self.transport.rebuild_producer()
        except TransportError as err:              # brokers unreachable: keep retrying
            log.warning("producer rebuild failed; retrying later", extra={"error": repr(err)})

    def _backoff(self) -> float:
        worker = self.settings.worker
        return min(worker.retry_backoff_max_s,
                   worker.retry_backoff_min_s * 2 ** min(self.failed_writes, 10))

    def _with_retry(self, what: str, action) -> Any:
        delay = self.settings.worker.retry_backoff_min_s
        while not self.stopping.is_set():
            try:
                return action()
            except (KafkaError, TransportError) as err:
                log.warning(f"{what} failed; retrying", extra={"error": repr(err)})
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.worker.retry_backoff_max_s)
        return None

    def _wait_for_broker(self) -> bool:
        """Until a bootstrap server accepts a connection: logged at once and at every retry,
        and a signal ends the wait at once. The Kafka clients would wait 30 s or more before
        saying anything, and hold signals off while they do. False when stopped first."""
        servers = self.settings.kafka.bootstrap_servers
        delay = self.settings.worker.retry_backoff_min_s
        waited = False
        while not self.stopping.is_set():
            problem = unreachable(servers, timeout_s=1.0)
            if problem is None:
                if waited:
                    log.info("broker reachable", extra={"bootstrap_servers": servers})
                return True
            waited = True
            log.warning("broker unreachable; retrying", extra={
                "bootstrap_servers": servers, "error": problem, "retry_in_s": delay})
            self.stopping.wait(delay)
            delay = min(delay * 2, self.settings.worker.retry_backoff_max_s)
        return False

    # ------------------------------------------------------------- event time

    def _mark_idle(self, now: float) -> None:
        """A partition is idle when it has been read to its end and no record came for
        ``idle_timeout_s``; a partition with a backlog is slow, not idle, and keeps holding the
        watermark (its records would be late otherwise)."""
        timeout = self.settings.worker.idle_timeout_s
        detector = self.detector
        assert detector is not None
        for tp, progress in self.progress.items():
            if progress.idle or progress.paused or now - progress.last_data < timeout:
                continue
            if self._caught_up(tp, progress):
                progress.idle = True
                log.debug("partition idle", extra={"partition": f"{tp.topic}/{tp.partition}"})
                self._release(tp)
                self._emit(detector.finish_source(f"{tp.topic}/{tp.partition}"))

    def _caught_up(self, tp: TP, progress: PartitionProgress) -> bool:
        transport = self.transport
        try:
            end = transport.highwater(tp)
            if end is None:      # nothing fetched since the assignment: ask the broker
                end = transport.end_offset(tp)
            position = progress.position()
            if position is None:
                position = transport.position(tp)
        except TransportError:
            return False
        return end is not None and position is not None and position >= end

    def _all_idle_for(self, seconds: float) -> bool:
        if not self.progress or self.detector is None:
            return False
        now = time.monotonic()
        return all(p.idle and now - p.last_data >= seconds for p in self.progress.values())

    def _align(self) -> None:
        """Pause partitions too far ahead of the watermark; resume them as it catches up."""
        detector = self.detector
        assert detector is not None
        lead = self.settings.worker.max_lead_s
        floor = detector.watermark + detector.config.clock.allowed_lateness_s
        if floor == -math.inf:
            self._hold_for_silent_partitions()
            return
        to_pause, to_resume = [], []
        for tp, progress in self.progress.items():
            high = detector.clock.high.get(f"{tp.topic}/{tp.partition}", -math.inf)
            if not progress.paused and high - floor > lead:
                progress.paused = True
                to_pause.append(tp)
            elif progress.paused and high - floor <= lead / 2:
                progress.paused = False
                progress.last_data = time.monotonic()
                to_resume.append(tp)
        if to_pause:
            log.debug("pausing partitions ahead of the watermark",
                      extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in to_pause]})
            self.transport.pause(to_pause)
        if to_resume:
            log.debug("resuming partitions", extra={
                "partitions": [f"{tp.topic}/{tp.partition}" for tp in to_resume]})
            self.transport.resume(to_resume)

    def _hold_for_silent_partitions(self) -> None:
        """While a partition has delivered nothing and is not idle, the partitions that have
        wait (paused): a replay, too, reads every input before going on with any, so each batch
        meets the watermark it would meet in a replay of the same files (README, "Replay and
        worker"), and nothing piles up in memory behind a watermark that cannot move."""
        detector = self.detector
        assert detector is not None
        high = detector.clock.high
        if not any(not p.idle and high.get(f"{tp.topic}/{tp.partition}", -math.inf) == -math.inf
                   for tp, p in self.progress.items()):
            return
        hold = [tp for tp, p in self.progress.items() if not p.paused
                and high.get(f"{tp.topic}/{tp.partition}", -math.inf) > -math.inf]
        if hold:
            for tp in hold:
                self.progress[tp].paused = True
            log.debug("holding partitions until every partition has delivered",
                      extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in hold]})
            self.transport.pause(hold)

    def _pause_all(self) -> None:
        self.transport.pause(self.transport.assignment())

    def _resume_after_writes(self) -> None:
        """Resume what ``_pause_all`` paused, except partitions paused for being ahead."""
        ahead = {tp for tp, p in self.progress.items() if p.paused}
        resume = [tp for tp in self.transport.paused() if tp not in ahead]
        if resume:
            self.transport.resume(resume)

    # ------------------------------------------------------ checkpoint/commit

    def _checkpoint(self, final: bool = False, in_callback: bool = False) -> bool:
        """Acks for every write, then the state, then the offsets. False when writes failed.

        While writes fail, consumption is paused (the backlog stays in Kafka, not in memory),
        nothing is committed, and each step retries with back-off; a producer that keeps failing
        is rebuilt. Inside a rebalance callback the consumer cannot block, so the offsets are
        committed asynchronously there; the checkpoint carries them and is what a restore trusts.
        """
        self.last_checkpoint = time.monotonic()
        if (not self.outgoing or self._flush_outgoing()) and self._save(in_callback):
            if self.writes_failing:
                log.info("writes recovered; resuming consumption",
                         extra={"attempts": self.failed_writes})
                self._resume_after_writes()
            self.writes_failing, self.failed_writes, self.healthy = False, 0, True
            return True
        self.failed_writes += 1
        self.healthy = False
        if not self.writes_failing and not in_callback:
            log.warning("writes failing: consumption paused, nothing committed, retrying")
            self._pause_all()
        self.writes_failing = True
        if self.failed_writes % 5 == 0:
            self._rebuild_producer()
        if final:
            self._drain_on_exit()
        return False

    def _save(self, in_callback: bool, only: set[TP] | None = None) -> bool:
        """The state with its offsets to the state topic, then the offsets to the group. True
        when saved, or when the state is not this member's to save (below); False when a write
        failed (``_checkpoint`` retries it).

        **Only the owner writes.** A member that stalls past its session timeout (a long pause,
        a frozen VM) is evicted, and the group gives its partitions to another member, which
        restores the last checkpoint and writes newer ones. When the stalled member runs again
        its client does not know yet. Kafka refuses its commits (its generation is gone) but not
        its writes to the state topic, where a stale checkpoint would replace the new owner's
        (an older state, or parts written over the slot the owner's manifest names). So the
        state is written only while the client holds a confirmed membership
        (``Transport.membership()``: joined, the group stable, a heartbeat answered within the
        session timeout); otherwise this checkpoint is skipped and the loop polls, which rejoins
        the group, and a member the group has moved on from drops its state unsaved
        (``_on_lost``). The commit that follows the write is the broker's own check: refused
        (``MembershipLost``), the member drops its state as a revocation would, nothing is
        retried, and it keeps polling to rejoin; the partitions' owner keeps its checkpoints.

        Why this order, state then offsets, and a check before rather than a rule in the
        restore: committing first would leave committed offsets past any saved state if the
        write then failed, and a restore without a checkpoint starts at the committed offsets,
        losing what that state held. A restore that took the newest group generation's
        checkpoint (the manifest records it) would be wrong after a group is deleted and made
        again, when generations start at 1. What the check leaves open is a stall that begins
        after it and outlasts the rest of the session before the write lands (the write takes
        milliseconds, the session seconds): then a stale checkpoint can land after the owner's,
        its commit is refused, and the member's rejoining makes the group rebalance, in which
        the owner checkpoints at its revocation before anyone restores, so the newest state is
        the owner's again.
        """
        if self.detector is None:
            return True
        membership = self.transport.membership()
        if membership is None:
            log.warning("group membership not confirmed (a stall, or a rebalance): no checkpoint "
                        "until the group has settled")
            return True
        try:
            size, commit = self._write_state(membership.generation, only)
            if commit:
                self.transport.commit(commit, asynchronous=in_callback)
        except MembershipLost as err:
            log.warning("commit refused: the group has moved on without this member; dropping "
                        "its state (the partitions' owner restores the last checkpoint) and "
                        "rejoining", extra={"error": repr(err)})
            self._leave_ownership(set(self.progress))
            return True
        except Exception as err:                   # noqa: BLE001 - retried with back-off
            log.warning("checkpoint failed", extra={"error": repr(err)})
            return False
        self.counts["checkpoints"] += 1
        if self.metrics is not None:
            self.metrics.checkpoints.inc()
            self.metrics.checkpoint_bytes.set(size)
            self.metrics.last_checkpoint.set(time.time())
        return True

    def _write_state(self, generation: int,
                     only: set[TP] | None) -> tuple[int, dict[TP, int]]:
        """Write the checkpoint (the state with its offsets) to the state topic; its size and
        the offsets to commit. ``only`` (a role that saves per partition: the partitions whose
        state to save) does not apply here: one core holds every partition, saved whole."""
        assert self.detector is not None          # (``_save`` writes only while it has one)
        offsets = {f"{tp.topic}/{tp.partition}": p.next_offset
                   for tp, p in self.progress.items() if p.next_offset is not None}
        state = envelope(self.detector, {s.name: s for s in self.sources.values()})
        size = self.state_store.write(self.transport, state, offsets,
                                      timeout_s=WRITE_TIMEOUT_S, generation=generation)
        return size, {tp: p.next_offset for tp, p in self.progress.items()
                      if p.next_offset is not None}

    def _drain_on_exit(self) -> None:
        """At shutdown, keep retrying failed writes for a while before giving up uncommitted."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(self._backoff())
            if self._checkpoint():
                return
        log.error("exiting with unacknowledged writes; their records were not committed and "
                  "will be read again", extra={"unacknowledged": len(self.outgoing)})

    # --------------------------------------------------------------- rebalance

    def _on_revoked(self, revoked: set[TP]) -> None:
        if self.detector is not None and revoked:
            log.info("partitions revoked: checkpointing", extra={"partitions": len(revoked)})
            self._checkpoint(in_callback=True)
        self._drop_state(revoked)

    def _on_lost(self, lost: set[TP]) -> None:
        """The group moved on without this member (evicted after a stall): the partitions may
        be another member's already, restored from the last checkpoint. Nothing is saved or
        committed for them (see ``_save``); the state is dropped and the member rejoins."""
        if self.detector is not None:
            log.warning("partitions lost: the group moved on without this member; dropping its "
                        "state unsaved", extra={"partitions": len(lost)})
        self._leave_ownership(lost)

    def _leave_ownership(self, partitions: set[TP]) -> None:
        """Drop the state, and join again as a standby: the member that took the partitions
        over says it is active, and keeps them (sticky assignment)."""
        self.assignor.active = False
        self._drop_state(partitions)

    def _drop_state(self, partitions: set[TP]) -> None:
        """Forget the core, the partitions' progress and their sources (revoked or lost)."""
        if self.metrics is not None:
            # What the core counted last; a partition this member no longer owns has no lag here.
            self.metrics.revoked(partitions)
        self.detector = None
        self.progress = {}
        self.sources = {}
        self.pending_assignment = None

    def _on_assigned(self, assigned: set[TP]) -> None:
        """Runs on the client's IO thread, which must not block (heartbeats): pause the new
        partitions and leave reading the checkpoint to the main loop (``_restore``)."""
        if not assigned:
            log.info("standby: no partitions assigned")
            if self.metrics is not None:
                self.metrics.standby()
            return
        self.transport.pause(assigned)
        self.pending_assignment = set(assigned)

    def _restore(self, assigned: set[TP]) -> None:
        """Become active: restore the last checkpoint, seek to its offsets, resume."""
        worker = self.settings.worker
        start = worker.start_from if self.first_assignment else "committed"
        restored = None
        times: dict[TP, int | None] = {}
        if start not in ("committed", "earliest", "latest"):
            try:                                   # --from TIME: ask before changing anything
                millis = int(parse_start_time(start) * 1000)
                times = {tp: self.transport.offset_for_time(tp, millis) for tp in assigned}
            except TransportError as err:
                log.warning("finding the start offsets failed; retrying",
                            extra={"error": repr(err)})
                time.sleep(self._backoff())
                return
        if start == "committed":
            try:
                restored = self.state_store.read()
            except (KafkaError, TransportError) as err:  # the broker went away: retry next step
                log.warning("reading the checkpoint failed; retrying", extra={"error": repr(err)})
                time.sleep(self._backoff())
                return
        self.pending_assignment = None
        if restored is not None:
            state, offsets = restored
            try:
                self.detector = restore(state, self.settings.detector)
            except (ValueError, KeyError, TypeError) as err:
                log.warning("checkpoint unusable; starting fresh", extra={"error": repr(err)})
                self.detector, offsets = Detector(self.settings.detector), {}
        else:
            self.detector, offsets = Detector(self.settings.detector), {}
        if self.metrics is not None:
            self.metrics.follow(self.detector)
        try:
            self._seek_and_resume(assigned, start, restored, offsets, times)
        except TransportError:
            # Not active after all: the next step starts the restore again from the checkpoint.
            self.detector, self.progress, self.sources = None, {}, {}
            self.pending_assignment = set(assigned)
            raise
        self.first_assignment = False

    def _seek_and_resume(self, assigned: set[TP], start: str, restored, offsets: dict,
                         times: dict) -> None:
        detector = self.detector
        assert detector is not None              # (made by _restore before)
        self.progress = {tp: PartitionProgress() for tp in assigned}
        saved = saved_adapters(restored[0]) if restored is not None else {}
        self.sources = {}
        for tp in sorted(assigned):
            self.sources[tp] = self._source(tp, detector, saved)
            self._seek_start(tp, start, offsets, times)
        self.transport.resume(assigned)
        log.info("partitions assigned", extra={
            "partitions": len(assigned), "restored": restored is not None, "start": start})

    def _source(self, tp: TP, task: Task, saved: dict[str, dict]) -> Source:
        """A partition's step into ``task`` (``topic/partition``, its format's adapter restored
        from ``saved``, the adapters' states by source)."""
        name = f"{tp.topic}/{tp.partition}"
        stream = self.stream_of[tp.topic]
        return Source(task, stream, name, make_adapter(self.formats[tp.topic], stream),
                      saved.get(name))

    def _seek_start(self, tp: TP, start: str, offsets: dict[str, int],
                    times: dict[TP, int | None]) -> None:
        """Where a newly assigned partition starts: its checkpoint's offset; else ``start``
        (earliest, latest, committed); else the offset of ``--from TIME`` (``times``)."""
        source = f"{tp.topic}/{tp.partition}"
        progress = self.progress[tp]
        if source in offsets:
            self.transport.seek(tp, offsets[source])
            progress.next_offset = offsets[source]
        elif start in ("earliest", "latest", "committed"):
            # "committed" with no checkpoint offset for it (a new member, a partition the
            # checkpoint does not know): the group's offset, never wherever the client was.
            self.transport.seek_to(tp, start)
        elif tp in times:
            offset = times[tp]
            if offset is None:                     # nothing at or after that time: the end
                self.transport.seek_to(tp, "latest")
            else:
                self.transport.seek(tp, offset)
                progress.next_offset = offset

    # ----------------------------------------------------------------- metrics

    def _update_metrics(self) -> None:
        """Once per step: the core's counters and gauges, and the lag of each partition."""
        if self.metrics is None:
            return
        self.metrics.observe_core()
        for tp, progress in self.progress.items():
            high, position = self.transport.highwater(tp), progress.position()
            if high is not None and position is not None:
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - position))

    def health(self) -> tuple[bool, dict]:
        detail = {"healthy": self.healthy, "active": self.detector is not None,
                  "unacknowledged_writes": len(self.outgoing), **self.counts}
        return self.healthy, detail


def parse_start_time(text: str) -> float:
    """``--from TIME``: an RFC 3339 time, as in the records."""
    try:
        return parse_ts(text)
    except Rejected:
        raise ValueError(f"--from: not earliest, latest, committed or an RFC 3339 time: {text!r}") from None

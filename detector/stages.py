"""The two stages of a scaled-out detector: join workers and the judge (``detector run --role``).

**Join workers** (``--role join``, any number, one consumer group) own *tasks*: task *p* is
partition *p* of the mail topic and partition *p* of the DNS topic, co-partitioned by the join key
(README, "Co-partitioning for scale-out"), assigned whole and sticky by ``io.task_assignor`` with
incremental cooperative rebalancing (KIP-429), so a member joining or leaving moves only the tasks
that have to move. Each task is a ``core.task.JoinTask`` with its own event clock: it parses,
validates, de-duplicates, joins and counts, and publishes every step it closes (its partial counts
with evidence, and how far it has got) to the steps topic (``topics.steps``, one partition, key =
the task) as JSON. Each task checkpoints on its own (its state, its adapters, the offsets of its
two partitions; key ``<group>/task/<p>`` in the state topic), so a task that moves to another
member is restored there without re-reading history.

**The judge** (``--role judge``, one active member and standbys: the steps topic has one
partition, so a group gives it to one member) reads the steps topic and runs ``core.judge.Judge``:
it merges a step once every task has passed it (a task whose inputs are idle stops holding it
back), judges it, and publishes anomaly events as the single-process worker does. It checkpoints
the model and the open anomalies with its offset in the steps topic.

**Delivery: at-least-once, nothing counted twice.** A join worker's checkpoint waits until every
step message and dead letter it produced is acknowledged, then writes each task's state and then
commits offsets; after a crash a task is restored from its last checkpoint and re-reads from its
offsets, re-deriving steps it may have published already: the judge keeps per task the newest step
it has and drops repeats (``Judge.offer``). The judge's own checkpoint follows the same order
(events acknowledged, state, offset), and a replayed event has the same id.

``--role all`` (the default) is the single-process worker (``worker.Worker``), one task over every
partition and the judge in one process.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
from kafka.errors import KafkaError

from .core.config import DetectorConfig
from .core.events import AnomalyEvent
from .core.judge import Judge
from .core.pipeline import FeedResult
from .core.task import Carry, Closed, JoinTask
from .io.copartition import copartition_problem, partition_counts
from .io.state_store import StateStore, read_many
from .io.task_assignor import TaskAssignor
from .io.transport import TP, Batch, TransportError
from .settings import Settings
from .shell import saved_adapters
from .worker import WRITE_TIMEOUT_S, PartitionProgress, Worker, parse_start_time

log = logging.getLogger("detector.stages")


def task_name(partition: int) -> str:
    """A task's name: its partition number (in the judge, the state store, the steps' keys)."""
    return str(partition)


def encode_steps(task: str, closed: Closed, idle: bool) -> bytes:
    """A steps message: the task, whether it is idle, and its ``Closed`` (steps, progress)."""
    return orjson.dumps({"task": task, "idle": idle, **closed.to_plain()})


def decode_steps(value: bytes) -> tuple[str, Closed, bool]:
    """A steps message read back; raises ``ValueError`` (or ``KeyError``/``TypeError``) for one
    that is not."""
    data = orjson.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise ValueError("not a steps message")
    return data["task"], Closed.from_plain(data), bool(data["idle"])


class TaskGroup:
    """The core of a join worker: the ``JoinTask`` of each task it owns, behind the verbs the
    worker and ``shell.Source`` use on a ``Detector`` (sources are named ``topic/partition``).

    What a task hands over goes to ``outbox`` as ``(task, Closed, idle)`` whenever it closed a
    step or got further (a night without OTP mail still moves the judge on), for the worker to
    publish. A task whose inputs are all idle is flushed (``JoinTask.close``: what it holds is
    joined and handed over) and says so, so it stops holding the judge back.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.tasks: dict[int, JoinTask] = {}
        self.outbox: list[tuple[str, Closed, bool]] = []
        #: Per task, the last (through, idle) published.
        self.published: dict[int, tuple[int | None, bool]] = {}

    @staticmethod
    def partition_of(source: str) -> int:
        return int(source.rpartition("/")[2])

    def add_task(self, partition: int, state: dict | None = None) -> JoinTask:
        task = self.tasks[partition] = JoinTask(self.config, state=state)
        self.published[partition] = (task.through, False)
        return task

    def drop_task(self, partition: int) -> None:
        self.tasks.pop(partition, None)
        self.published.pop(partition, None)

    # The verbs a Source and the worker call.

    def add_source(self, source: str) -> None:
        self.tasks[self.partition_of(source)].add_source(source)

    def feed(self, stream: str, lines: list, source: str | None = None,
             now: float | None = None, *, carry: bool = False,
             limit: float | None = None) -> FeedResult:
        assert source is not None
        partition = self.partition_of(source)
        task = self.tasks[partition]
        carried: list[Carry] | None = [] if carry else None
        rejected = task.feed(stream, lines, source, now, carry=carried, limit=limit)
        self._hand_over(partition, task.advance(), idle=False)
        return FeedResult([], rejected, carried[0] if carried else None)

    def finish_source(self, source: str) -> list[AnomalyEvent]:
        partition = self.partition_of(source)
        task = self.tasks[partition]
        task.finish_source(source)
        if task.idle():
            self._hand_over(partition, task.close(), idle=True)
        else:
            self._hand_over(partition, task.advance(), idle=False)
        return []

    def close(self) -> list[AnomalyEvent]:
        for partition, task in self.tasks.items():
            self._hand_over(partition, task.close(), idle=True)
        return []

    def _hand_over(self, partition: int, closed: Closed, idle: bool) -> None:
        if closed.steps or self.published.get(partition) != (closed.through, idle):
            self.outbox.append((task_name(partition), closed, idle))
            self.published[partition] = (closed.through, idle)

    def snapshot(self) -> dict:
        """Every task's state (a join worker checkpoints each task on its own instead)."""
        return {task_name(p): task.snapshot() for p, task in sorted(self.tasks.items())}

    def task_watermark(self, partition: int) -> float:
        task = self.tasks.get(partition)
        return task.watermark if task is not None else -math.inf

    def high(self, source: str) -> float:
        task = self.tasks.get(self.partition_of(source))
        return task.clock.high.get(source, -math.inf) if task is not None else -math.inf

    @property
    def watermark(self) -> float:
        """The slowest task's watermark (for the metrics)."""
        marks = [t.watermark for t in self.tasks.values()]
        return min(marks) if marks else -math.inf

    def stats(self) -> dict:
        """The tasks' counters and gauges, summed."""
        out: dict[str, int] = {}
        for task in self.tasks.values():
            for key, value in task.stats().items():
                out[key] = out.get(key, 0) + value
        return out


class JoinWorker(Worker):
    """A join worker: its tasks' records in, their closed steps out (module docstring)."""

    def __init__(self, settings: Settings, metrics=None) -> None:
        super().__init__(settings, metrics)
        self.assignor = TaskAssignor()
        self.group = TaskGroup(settings.detector)
        self.pending_assignment = set()
        #: Each owned task's checkpoints; a store remembers its slots between writes.
        self.stores: dict[int, StateStore] = {}

    # The worker's single core is the group of tasks; it exists while any task is owned.
    def _topics(self) -> list[str]:
        return [self.settings.topics.mail, self.settings.topics.dns]

    def _topics_to_create(self) -> dict[str, dict[str, str]]:
        topics = self.settings.topics
        return {**super()._topics_to_create(), topics.steps: {}}

    def _check_start(self) -> str | None:
        topics = self.settings.topics
        return copartition_problem(self.settings.kafka, topics.mail, topics.dns)

    def _store(self, partition: int) -> StateStore:
        """Task ``partition``'s checkpoints (key ``<group>/task/<p>`` in the state topic)."""
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = StateStore(
                self.settings.kafka, self.settings.topics.state,
                f"{self.settings.worker.group_id}/task/{partition}")
        return store

    # ------------------------------------------------------------------ loop

    def _feed(self, batch: Batch, now_wall: float, now: float) -> None:
        super()._feed(batch, now_wall, now)
        self._publish()

    def _mark_idle(self, now: float) -> None:
        super()._mark_idle(now)
        self._publish()

    def _flush_input(self) -> None:
        super()._flush_input()
        self._publish()

    def _publish(self) -> None:
        steps = self.settings.topics.steps
        for task, closed, idle in self.group.outbox:
            self._send(steps, task.encode(), encode_steps(task, closed, idle), [])
        self.group.outbox.clear()

    def _align(self) -> None:
        """Per task: pause a partition too far ahead of its task's watermark, resume it as the
        task catches up; and hold a task's partitions while one of them has delivered nothing."""
        lead = self.settings.worker.max_lead_s
        lateness = self.settings.detector.clock.allowed_lateness_s
        to_pause, to_resume = [], []
        for tp, progress in self.progress.items():
            source = f"{tp.topic}/{tp.partition}"
            floor = self.group.task_watermark(tp.partition) + lateness
            high = self.group.high(source)
            if floor == -math.inf:
                # The task's watermark waits for its other partition: this one holds (a replay
                # reads every input before going on with any).
                silent = any(not p.idle and self.group.high(f"{t.topic}/{t.partition}")
                             == -math.inf for t, p in self.progress.items()
                             if t.partition == tp.partition and t != tp)
                if silent and not progress.paused and high > -math.inf:
                    progress.paused = True
                    to_pause.append(tp)
                elif progress.paused and not silent:
                    progress.paused = False
                    to_resume.append(tp)
                continue
            if not progress.paused and high - floor > lead:
                progress.paused = True
                to_pause.append(tp)
            elif progress.paused and high - floor <= lead / 2:
                progress.paused = False
                progress.last_data = time.monotonic()
                to_resume.append(tp)
        if to_pause:
            self.transport.pause(to_pause)
        if to_resume:
            self.transport.resume(to_resume)

    # ------------------------------------------------------------ checkpoint

    def _write_state(self, generation: int,
                     only: set[TP] | None) -> tuple[int, dict[TP, int]]:
        """Each task's checkpoint (its state, its adapters, the offsets of its partitions), only
        those of the partitions in ``only`` when given (the tasks being revoked); the offsets to
        commit. ``Worker._save`` decides whether this member may write at all."""
        tasks = None if only is None else {tp.partition for tp in only}
        commit: dict[TP, int] = {}
        size = 0
        for partition, task in sorted(self.group.tasks.items()):
            if tasks is not None and partition not in tasks:
                continue
            mine = {tp: p.next_offset for tp, p in self.progress.items()
                    if tp.partition == partition and p.next_offset is not None}
            state = {"task": task.snapshot(),
                     "adapters": {s.name: s.adapter.snapshot()
                                  for tp, s in self.sources.items()
                                  if tp.partition == partition and s.adapter is not None}}
            size += self._store(partition).write(
                self.transport, state, {f"{tp.topic}/{tp.partition}": n for tp, n in mine.items()},
                timeout_s=WRITE_TIMEOUT_S, generation=generation)
            commit.update(mine)
        return size, commit

    # ------------------------------------------------------------- rebalance

    def _on_revoked(self, revoked: set[TP]) -> None:
        """Only the revoked tasks are saved and dropped: the others keep running (cooperative
        rebalancing gives this member only what changed)."""
        partitions = {tp.partition for tp in revoked} & set(self.group.tasks)
        if partitions:
            log.info("tasks revoked: checkpointing them", extra={"tasks": sorted(partitions)})
            self._publish()
            # Only with every step message acknowledged: otherwise the new owner restores the
            # checkpoint before and publishes those steps itself.
            if not self.outgoing or self._flush_outgoing():
                self._save(in_callback=True, only={tp for tp in self.progress
                                                   if tp.partition in partitions})
        self._drop_tasks(partitions)
        self.pending_assignment = {tp for tp in self.pending_assignment or set()
                                   if tp not in revoked}

    def _on_lost(self, lost: set[TP]) -> None:
        super()._on_lost(lost)
        self.pending_assignment = set()

    def _leave_ownership(self, partitions: set[TP]) -> None:
        """The group moved on without this member: its tasks there are dropped unsaved (their
        new owners restore them); the assignor's claims carry their generation, so no standby
        flag to clear."""
        self._drop_tasks({tp.partition for tp in partitions})

    def _drop_tasks(self, partitions: set[int]) -> None:
        """Forget tasks (revoked or lost): their core, progress and sources. (kafka-python calls
        the revoke callback after the partitions left the assignment: the worker's own
        bookkeeping says which they were.)"""
        gone = {tp for tp in self.progress if tp.partition in partitions}
        for tp in gone:
            self.progress.pop(tp, None)
            self.sources.pop(tp, None)
        for partition in partitions:
            self.group.drop_task(partition)
            self.stores.pop(partition, None)
        if self.metrics is not None and gone:
            self.metrics.revoked(gone)
        if not self.group.tasks:
            self.detector = None

    def _on_assigned(self, assigned: set[TP]) -> None:
        """Runs on the client's IO thread: pause the new partitions, restore in the main loop."""
        if not assigned:
            return
        self.transport.pause(assigned)
        self.pending_assignment = (self.pending_assignment or set()) | set(assigned)

    def _restore(self, assigned: set[TP]) -> None:
        """Take over new tasks: each from its own checkpoint (or fresh), at its offsets."""
        start = self.settings.worker.start_from if self.first_assignment else "committed"
        partitions = sorted({tp.partition for tp in assigned} - set(self.group.tasks))
        restored: dict[int, tuple[dict, dict[str, int]] | None] = {}
        times: dict[TP, int | None] = {}
        try:
            if start not in ("committed", "earliest", "latest"):   # --from TIME
                millis = int(parse_start_time(start) * 1000)
                times = {tp: self.transport.offset_for_time(tp, millis) for tp in assigned}
            if start == "committed":
                checkpoints = read_many([self._store(p) for p in partitions])
                restored = dict(zip(partitions, checkpoints))
        except (KafkaError, TransportError) as err:
            log.warning("reading a task checkpoint failed; retrying", extra={"error": repr(err)})
            time.sleep(self._backoff())
            return
        self.pending_assignment = set()
        for partition in partitions:
            found = restored.get(partition)
            state, offsets = found if found is not None else (None, {})
            try:
                self.group.add_task(partition, state["task"] if state is not None else None)
            except (ValueError, KeyError, TypeError) as err:
                log.warning("task checkpoint unusable; starting it fresh",
                            extra={"task": partition, "error": repr(err)})
                self.group.add_task(partition)
                state, offsets = None, {}
            saved = saved_adapters(state)
            for tp in sorted(t for t in assigned if t.partition == partition):
                self.sources[tp] = self._source(tp, self.group, saved)
                self.progress[tp] = PartitionProgress()
                self._seek_start(tp, start, offsets, times)
        self.first_assignment = False
        self.detector = self.group          # type: ignore[assignment]
        if self.metrics is not None:
            self.metrics.follow(self.group)
        self.transport.resume(assigned)
        log.info("tasks assigned", extra={"tasks": partitions,
                                          "restored": [p for p in partitions if restored.get(p)]})


class JudgeWorker(Worker):
    """The judge: the steps topic in, anomaly events out (module docstring)."""

    def __init__(self, settings: Settings, metrics=None) -> None:
        super().__init__(settings, metrics)
        self.state_store = StateStore(settings.kafka, settings.topics.state,
                                      f"{settings.worker.group_id}-judge")

    @property
    def judge(self) -> Judge | None:
        """The worker's core, while this member is the active judge."""
        return self.detector                # type: ignore[return-value]

    def _group_id(self) -> str:
        return f"{self.settings.worker.group_id}-judge"

    def _topics(self) -> list[str]:
        return [self.settings.topics.steps]

    def _topics_to_create(self) -> dict[str, dict[str, str]]:
        return {**super()._topics_to_create(), self.settings.topics.steps: {}}

    def _feed(self, batch: Batch, now_wall: float, now: float) -> None:
        judge = self.judge
        assert judge is not None
        tp = batch.tp
        for value, offset in zip(batch.values, batch.offsets):
            try:
                task, closed, idle = decode_steps(value)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError):
                self._dead_letter(tp, value, "bad_steps_message", str(offset))
                continue
            judge.offer(task, closed, idle)
            self._emit(judge.advance())
        progress = self.progress.setdefault(tp, PartitionProgress())
        progress.next_offset = batch.offsets[-1] + 1
        progress.last_data = now
        self.counts["consumed"] += len(batch.values)

    def _mark_idle(self, now: float) -> None:
        """The judge's input has no watermark of its own: the tasks' progress is in it."""
        timeout = self.settings.worker.idle_timeout_s
        for tp, progress in self.progress.items():
            if not progress.idle and now - progress.last_data >= timeout and \
                    self._caught_up(tp, progress):
                progress.idle = True

    def _all_idle_for(self, seconds: float) -> bool:
        """For ``--exit-when-idle``: the steps topic idle, and every task idle too."""
        judge = self.judge
        return (judge is not None and bool(judge.tasks)
                and all(p.idle for p in judge.tasks.values())
                and super()._all_idle_for(seconds))

    def _align(self) -> None:
        return

    def _flush_input(self) -> None:
        if self.judge is not None:
            self._emit(self.judge.close())

    def _restore(self, assigned: set[TP]) -> None:
        """Become the active judge: restore the last checkpoint, seek, resume."""
        restored = None
        if self.settings.worker.start_from == "committed":
            try:
                restored = self.state_store.read()
            except (KafkaError, TransportError) as err:
                log.warning("reading the checkpoint failed; retrying", extra={"error": repr(err)})
                time.sleep(self._backoff())
                return
        self.pending_assignment = None
        state, offsets = restored if restored is not None else (None, {})
        try:
            judge = Judge(self.settings.detector,
                          state=state["detector"] if state is not None else None)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("checkpoint unusable; starting fresh", extra={"error": repr(err)})
            judge, offsets = Judge(self.settings.detector), {}
        try:
            mail = self.settings.topics.mail
            tasks = partition_counts(self.settings.kafka, [mail]).get(mail) or 0
        except Exception as err:                   # noqa: BLE001 - the tasks announce themselves
            log.warning("cannot read the mail topic's partitions; waiting for the tasks' first "
                        "steps", extra={"error": repr(err)})
            tasks = 0
        for partition in range(tasks):
            judge.add_task(task_name(partition))
        self.detector = judge              # type: ignore[assignment]
        if self.metrics is not None:
            self.metrics.follow(judge)
        self.progress = {tp: PartitionProgress() for tp in assigned}
        self.sources = {}
        for tp in assigned:
            self._seek_start(tp, "committed", offsets, {})
        self.transport.resume(assigned)
        log.info("judging", extra={"tasks": len(judge.tasks),
                                   "restored": restored is not None})


def make_worker(settings: Settings, metrics: Any = None) -> Worker:
    """The worker of ``settings.worker.role``."""
    role = settings.worker.role
    if role == "join":
        return JoinWorker(settings, metrics)
    if role == "judge":
        return JudgeWorker(settings, metrics)
    return Worker(settings, metrics)


__all__ = ["JoinWorker", "JudgeWorker", "TaskGroup", "decode_steps", "encode_steps",
           "make_worker", "task_name"]

"""The state store: checkpoints of the detector's state in a compacted Kafka topic.

A checkpoint is a manifest (key = the group id) and its parts (key = ``<group>#<slot>#<n>``),
gzip-compressed JSON cut into parts that fit in a Kafka message. Checkpoints rotate over three
slots (``SLOTS``) and the manifest, written last, names the slot, so a worker killed while writing
a checkpoint leaves the previous one whole; the parts carry the checkpoint id, so a part of
another checkpoint is never mixed in. Compaction keeps the topic at three checkpoints per group.

Only the member that owns the partitions may write here: Kafka fences a stale member's commits,
not its writes to this topic, so the worker checks its membership before each write (see
``Worker._save`` for why that, and not a rule in ``read``). The manifest names the group
generation the writer belonged to, for whoever reads the topic; ``read`` does not order by it,
because generations start again at 1 when a group is deleted and re-created.

Risky here: a restore trusts what ``read`` returns (state and offsets together). A checkpoint
whose parts and manifest disagree must read as missing, never as another checkpoint's state.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time

import orjson
from kafka import TopicPartition

from ..settings import KafkaSettings
from .clients import make_consumer

log = logging.getLogger(__name__)

#: A checkpoint part's size: under Kafka's default 1 MB message limit with room for headers.
STATE_PART_BYTES = 900_000
STATE_FORMAT = 2
#: Checkpoint slots. Two would do if a failed manifest write never landed; but a write reported
#: failed (timed out) may still be delivered later, naming the slot the retry is overwriting.
#: With three, a retry never writes the slot of the last good checkpoint nor that of the failed
#: attempt, so whichever manifest lands last names parts that are whole.
SLOTS = 3


class StateStore:
    """Checkpoints of the detector's state in a compacted topic (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, topic: str, group_id: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.group_id = group_id
        self.slot = 0            # the slot of the newest complete checkpoint
        self.attempted: int | None = None   # a failed write's slot: its manifest may land late

    def write(self, transport, state: dict, offsets: dict[str, int],
              timeout_s: float = 30.0, generation: int | None = None) -> int:
        """Write one checkpoint through ``transport`` (an ``io.transport.Transport``) and wait
        for every part's acknowledgement; returns its size. Raises when a write fails.
        ``generation`` is the writer's group generation, recorded in the manifest."""
        blob = gzip.compress(orjson.dumps(state), compresslevel=1)
        checkpoint_id = f"{time.time_ns():x}-{hashlib.sha1(blob).hexdigest()[:12]}"
        parts = [blob[i:i + STATE_PART_BYTES] for i in range(0, len(blob), STATE_PART_BYTES)] or [b""]
        slot = next(s for s in range(SLOTS) if s not in (self.slot, self.attempted))
        self.attempted = slot
        handles = [transport.send(self.topic, self._part_key(slot, n), part,
                                  [("checkpoint", checkpoint_id.encode())])
                   for n, part in enumerate(parts)]
        _await(transport, handles, timeout_s)
        manifest = {"format": STATE_FORMAT, "group": self.group_id, "checkpoint": checkpoint_id,
                    "slot": slot, "parts": len(parts), "sha1": hashlib.sha1(blob).hexdigest(),
                    "offsets": offsets, "written_at": time.time(), "generation": generation}
        _await(transport, [transport.send(self.topic, self.group_id.encode(),
                                          orjson.dumps(manifest), [])], timeout_s)
        self.slot, self.attempted = slot, None
        return len(blob)

    def _part_key(self, slot: int, n: int) -> bytes:
        return f"{self.group_id}#{slot}#{n}".encode()

    def read(self, idle_s: float = 1.0, timeout_s: float = 60.0,
             latest: dict | None = None) -> tuple[dict, dict[str, int]] | None:
        """The newest complete checkpoint of this group: ``(state, offsets)``, or ``None``.

        Reads the whole topic (``scan``; compaction keeps it small on a real cluster), or takes
        ``latest``, a scan already made (``read_many``: several keys, one scan).
        """
        if latest is None:
            latest = scan(self.kafka, self.topic, idle_s, timeout_s)
        found = latest.get(self.group_id.encode())
        if found is None or not found[0]:
            return None
        manifest = orjson.loads(found[0])
        self.slot = manifest["slot"]
        parts = []
        for n in range(manifest["parts"]):
            part = latest.get(self._part_key(manifest["slot"], n))
            if part is None or part[1].get("checkpoint", b"").decode() != manifest["checkpoint"]:
                log.warning("checkpoint %s is incomplete (part %d missing); starting fresh",
                            manifest["checkpoint"], n)
                return None
            parts.append(part[0])
        blob = b"".join(parts)
        if hashlib.sha1(blob).hexdigest() != manifest["sha1"]:
            log.warning("checkpoint %s fails its checksum; starting fresh", manifest["checkpoint"])
            return None
        return orjson.loads(gzip.decompress(blob)), manifest["offsets"]


def read_many(stores: list[StateStore], idle_s: float = 1.0,
              timeout_s: float = 60.0) -> list[tuple[dict, dict[str, int]] | None]:
    """The newest checkpoint of each store (all on one topic), from one scan of the topic."""
    if not stores:
        return []
    latest = scan(stores[0].kafka, stores[0].topic, idle_s, timeout_s)
    return [store.read(latest=latest) for store in stores]


def scan(kafka: KafkaSettings, topic: str, idle_s: float = 1.0,
         timeout_s: float = 60.0) -> dict[bytes, tuple[bytes, dict[str, bytes]]]:
    """The last value (and headers) of every key in the topic, as of the start of the scan.

    It reads to the end offsets taken when it starts, then for ``idle_s`` more at most (or until
    ``idle_s`` without records): some brokers report an end offset short of the true end, by the
    records of the last batch, which that time brings in. It does not wait for the topic to go
    quiet: other writers (other tasks, other groups, the judge) checkpoint to the same topic all
    the time, and what a restore needs was written before it started.
    """
    consumer = make_consumer(kafka, None, consumer_timeout_ms=int(idle_s * 1000))
    latest: dict[bytes, tuple[bytes, dict[str, bytes]]] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return latest
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        reached: float | None = None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            now = time.monotonic()
            if batch:
                quiet_since = now
                for records in batch.values():
                    for record in records:
                        if record.key is not None:
                            latest[record.key] = (record.value, dict(record.headers or []))
            if reached is None and all(consumer.position(tp) >= ends[tp] for tp in tps):
                reached = now
            if reached is not None and (now - quiet_since >= idle_s or now - reached >= idle_s):
                break
    finally:
        consumer.close()
    return latest


def _await(transport, handles: list, timeout_s: float) -> None:
    transport.flush(timeout_s)
    for handle in handles:
        error = transport.delivery_error(handle)
        if error is not None:
            raise error

"""The Kafka transport: client construction, topic creation, the assignor, and the state store.

Thin on purpose: the worker decides, this module only talks to Kafka (kafka-python). Values are
bytes in both directions; decoding is the core's job, never a ``value_deserializer`` (a
deserializer that raises makes kafka-python's next ``poll()`` hang).

**Assignment.** The detector judges all OTP mail together, so one member of the consumer group
holds every partition of both input topics and the others are hot standbys (``SingleActiveAssignor``):
a standby takes over in one rebalance when the active member leaves or dies, restoring the
active member's last checkpoint. The assignment is sticky: a member joining never takes the
partitions from a healthy active member.

**State store.** Checkpoints go to a compacted topic. A checkpoint is a manifest (key = the group
id) and its parts (key = ``<group>#<slot>#<n>``), gzip-compressed JSON cut into parts that fit in a
Kafka message. Checkpoints rotate over three slots (``SLOTS``) and the manifest, written last,
names the slot, so a worker killed while writing a checkpoint leaves the previous one whole; the
parts carry the checkpoint id, so a part of another checkpoint is never mixed in. Compaction keeps
the topic at three checkpoints per group.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import socket
import time
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.errors import TopicAlreadyExistsError
from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                              ConsumerProtocolSubscription)

from ..settings import KafkaSettings

log = logging.getLogger(__name__)

#: A checkpoint part's size: under Kafka's default 1 MB message limit with room for headers.
STATE_PART_BYTES = 900_000
STATE_FORMAT = 2
#: Checkpoint slots. Two would do if a failed manifest write never landed; but a write reported
#: failed (timed out) may still be delivered later, naming the slot the retry is overwriting.
#: With three, a retry never writes the slot of the last good checkpoint nor that of the failed
#: attempt, so whichever manifest lands last names parts that are whole.
SLOTS = 3


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Kafka topic (Kafka's own rule), or None when it can."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        return (f"{name!r} is not a valid topic name (1 to 249 of letters, digits, '.', '_' "
                "and '-', and not '.' or '..')")
    return None


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a bootstrap list (``[::1]:9092`` for IPv6); ValueError naming a
    bad entry."""
    out = []
    for entry in (s.strip() for s in servers.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap server {entry!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no bootstrap server given")
    return out


def unreachable(servers: str, timeout_s: float = 2.0) -> str | None:
    """None when one of the bootstrap servers accepts a TCP connection, else why none did.

    A cheap check before a Kafka client is built: the clients retry for 30 s or more before they
    say anything, and block signals while they do.
    """
    problems = []
    for host, port in bootstrap_addresses(servers):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return None
        except OSError as err:
            problems.append(f"{host}:{port}: {err.strerror or err}")
    return "; ".join(problems)


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by every client."""
    config: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol.startswith("SASL"):
        config.update(sasl_mechanism=kafka.sasl_mechanism,
                      sasl_plain_username=kafka.sasl_username,
                      sasl_plain_password=kafka.sasl_password.get_secret_value())
    if kafka.security_protocol.endswith("SSL"):
        config.update(ssl_check_hostname=kafka.ssl_check_hostname)
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            value = getattr(kafka, key)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if value:
                config[key] = value
    return config


def make_consumer(kafka: KafkaSettings, group_id: str | None, assignor=None,
                  **overrides: Any) -> KafkaConsumer:
    config = client_config(kafka)
    config.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        max_poll_records=kafka.max_poll_records,
        enable_incremental_fetch_sessions=kafka.incremental_fetch_sessions,
    )
    if assignor is not None:
        config["partition_assignment_strategy"] = [assignor]
    config.update(overrides)
    return KafkaConsumer(**config)


def make_producer(kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """acks=all and idempotence: an event is written once per send, and only when every in-sync
    replica has it. ``max_block_ms`` is short so a broker outage surfaces as a retryable error
    instead of a minute-long stall."""
    config = client_config(kafka)
    config.update(acks="all", linger_ms=kafka.linger_ms, batch_size=262_144,
                  max_block_ms=5_000, max_request_size=4_000_000)
    config.update(overrides)
    return KafkaProducer(**config)


def release_parked_fetches(consumer: KafkaConsumer) -> None:
    """Work around a kafka-python 3.0 fetcher bug before each ``poll()``.

    Records fetched for a partition that is then paused are parked, and given back on resume
    only when the fetcher's in-line slot is ``None``; but a drained slot keeps its empty
    ``PartitionRecords`` object, so a resumed partition stays parked and is never fetched again
    (the worker stalls while reading history with paused partitions). Emptying a drained slot is
    what the fetcher does itself when it parks, so this changes nothing else. A no-op on client
    versions without these attributes.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current and getattr(fetcher, "_paused_partition_records", None):
        setattr(fetcher, "_next_partition_records", None)


def ensure_topics(kafka: KafkaSettings, topics: dict[str, dict[str, str]]) -> list[str]:
    """Create the named topics that do not exist (``{name: topic configs}``); returns created."""
    admin = KafkaAdminClient(**client_config(kafka))
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, num_partitions=1, replication_factor=kafka.replication_factor,
                            topic_configs=configs)
                   for name, configs in topics.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass       # created by another member meanwhile
        return [t.name for t in missing]
    finally:
        admin.close()


class SingleActiveAssignor(AbstractPartitionAssignor):
    """Every partition to one member (sticky), none to the others: active/standby.

    Each member says in its subscription's user data whether it holds partitions now; the group
    leader keeps that member active if it is still there, otherwise picks the first member by id.
    """

    name = "otp-single-active"
    version = 0

    def __init__(self) -> None:
        self.active = False

    def metadata(self, topics):
        return ConsumerProtocolSubscription(self.version, sorted(topics),
                                            b"active" if self.active else b"standby")

    def assign(self, cluster, members):
        ordered = sorted(members, key=lambda m: m.member_id)
        chosen = next((m for m in ordered if _user_data(m) == b"active"), ordered[0])
        topics = sorted({t for m in members for t in m.metadata.topics})
        owned = []
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                owned.append((topic, sorted(partitions)))
        return {m.member_id: ConsumerProtocolAssignment(
                    self.version, owned if m is chosen else [], b"")
                for m in members}

    def on_assignment(self, assignment, generation=None):
        self.active = bool(assignment.partitions())


def _user_data(member) -> bytes:
    data = getattr(member.metadata, "user_data", b"")
    return bytes(data) if isinstance(data, (bytes, bytearray)) else b""


class StateStore:
    """Checkpoints of the detector's state in a compacted topic (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, topic: str, group_id: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.group_id = group_id
        self.slot = 0            # the slot of the newest complete checkpoint
        self.attempted: int | None = None   # a failed write's slot: its manifest may land late

    def write(self, transport, state: dict, offsets: dict[str, int],
              timeout_s: float = 30.0) -> int:
        """Write one checkpoint through ``transport`` (an ``io.transport.Transport``) and wait
        for every part's acknowledgement; returns its size. Raises when a write fails."""
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
                    "offsets": offsets, "written_at": time.time()}
        _await(transport, [transport.send(self.topic, self.group_id.encode(),
                                          orjson.dumps(manifest), [])], timeout_s)
        self.slot, self.attempted = slot, None
        return len(blob)

    def _part_key(self, slot: int, n: int) -> bytes:
        return f"{self.group_id}#{slot}#{n}".encode()

    def read(self, idle_s: float = 1.0, timeout_s: float = 60.0) -> tuple[dict, dict[str, int]] | None:
        """The newest complete checkpoint of this group: ``(state, offsets)``, or ``None``.

        Reads the whole topic (compaction keeps it small on a real cluster) and keeps the last
        value per key. It stops at the end offsets *and* after ``idle_s`` without records, because
        some brokers report end offsets short of the true end.
        """
        consumer = make_consumer(self.kafka, None, consumer_timeout_ms=int(idle_s * 1000))
        latest: dict[bytes, tuple[bytes, dict[str, bytes]]] = {}
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return None
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout_s
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=200)
                if batch:
                    quiet_since = time.monotonic()
                    for records in batch.values():
                        for record in records:
                            if record.key is not None:
                                latest[record.key] = (record.value, dict(record.headers or []))
                elif time.monotonic() - quiet_since >= idle_s:
                    ends = consumer.end_offsets(tps)
                    if all(consumer.position(tp) >= ends[tp] for tp in tps):
                        break
        finally:
            consumer.close()
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


def _await(transport, handles: list, timeout_s: float) -> None:
    transport.flush(timeout_s)
    for handle in handles:
        error = transport.delivery_error(handle)
        if error is not None:
            raise error

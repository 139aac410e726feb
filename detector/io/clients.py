"""Kafka clients built from the settings: connection and security config for both clients,
factories, topic creation and the checks made before a client is built.

Every client the project builds (the worker's, the notifier's, the state store's reader, the
demo's, ``detector produce``'s) gets its settings here, so the settings production depends on are
in one place: ``acks=all`` and idempotence for every write, the same murmur2 partitioner in both
clients (a key lands in the same partition whichever client wrote it), and short blocking times
so a broker outage surfaces as a retryable error. Values are bytes in both directions; decoding
is the core's job, never a ``value_deserializer`` (a deserializer that raises makes
kafka-python's next ``poll()`` hang).

Risky here: a default changed in ``make_producer`` or ``rdkafka_producer_config`` changes what
"acknowledged" means for every checkpoint and every event.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ..settings import KafkaSettings

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



def rdkafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection and security settings in librdkafka's names."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(s.strip() for s in kafka.bootstrap_servers.split(",")
                                      if s.strip()),
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol,
        "socket.timeout.ms": kafka.request_timeout_ms,
        # librdkafka's own log lines (connection refused, ...) through the project's logging,
        # in the worker's log format, instead of raw lines on stderr.
        "logger": logging.getLogger("detector.rdkafka"),
    }
    if kafka.security_protocol.startswith("SASL"):
        config.update({"sasl.mechanism": kafka.sasl_mechanism,
                       "sasl.username": kafka.sasl_username,
                       "sasl.password": kafka.sasl_password.get_secret_value()})
    if kafka.security_protocol.endswith("SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none")
        for ours, theirs in (("ssl_cafile", "ssl.ca.location"),
                             ("ssl_certfile", "ssl.certificate.location"),
                             ("ssl_keyfile", "ssl.key.location"),
                             ("ssl_password", "ssl.key.password")):
            value = getattr(kafka, ours)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if value:
                config[theirs] = value
    return config


def rdkafka_producer_config(kafka: KafkaSettings, linger_ms: int,
                            delivery_timeout_ms: int) -> dict[str, Any]:
    """A librdkafka producer's settings, for the worker's writes and ``detector produce``:
    ``acks=all`` and idempotent (per key, in order and once), and as kafka-python and the Java
    client: the same key to the same partition whichever client wrote it (murmur2), records up
    to 4 MB. A write not acknowledged within ``delivery_timeout_ms`` is reported failed."""
    return {
        **rdkafka_config(kafka),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "delivery.timeout.ms": delivery_timeout_ms,
        "partitioner": "murmur2_random",
        "message.max.bytes": 4_000_000,
    }

"""The worker's configuration: one typed object from a TOML file, the environment and flags.

Precedence, lowest first: built-in defaults (right for a production Kafka cluster), the TOML file
(``--config``), environment variables, command-line flags. Every key of every table can be set from
the environment as ``DETECTOR_<TABLE>_<KEY>`` (``DETECTOR_KAFKA_SASL_PASSWORD``,
``DETECTOR_MODEL_BUCKET_S``); the few the flags name have short forms too
(``DETECTOR_BOOTSTRAP_SERVERS``). A bad value fails with one line naming the key. ``describe()``
prints the effective configuration with secrets masked.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .config import CORE_TABLES, read_toml
from .core.config import ConfigError, DetectorConfig, build_section

SECRET_KEYS = ("sasl_password", "ssl_password")
#: Numbers that may be negative (-1: the broker's default replication).
SIGNED_KEYS = ("replication_factor",)
TRANSPORTS = ("kafka-python", "confluent")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SHORT_ENV = {
    "DETECTOR_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "DETECTOR_GROUP_ID": ("worker", "group_id"),
    "DETECTOR_FROM": ("worker", "start_from"),
    "DETECTOR_METRICS_PORT": ("worker", "metrics_port"),
}


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    client_id: str = "otp-detector"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = ""
    ssl_check_hostname: bool = True
    #: Kafka's own defaults: a member is declared dead after 45 s without a heartbeat. Tests use
    #: much shorter values (see tests/conftest.py); production keeps these.
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    request_timeout_ms: int = 30_000
    max_poll_records: int = 5_000
    #: KIP-227 incremental fetch sessions (Kafka >= 1.1). Some Kafka-compatible brokers stop
    #: returning a partition that was paused and resumed within a session; turn this off there.
    incremental_fetch_sessions: bool = True
    #: Batch produced records for up to 20 ms: anomaly events are few, dead letters come in bursts.
    linger_ms: int = 20
    #: Topic creation for missing output/state topics (-1: the broker's default replication).
    replication_factor: int = -1
    #: "kafka-python" (pure Python, always installed) or "confluent" (records decoded and
    #: produced by librdkafka; the extra ``otp-dns-detector[confluent]``): 1.2-1.3x the worker's
    #: throughput in the benchmark, for a worker that cannot keep up with its topics.
    transport: str = "kafka-python"


@dataclass(frozen=True, slots=True)
class TopicSettings:
    mail: str = "mail-flow"
    dns: str = "dns-resolver"
    anomalies: str = "otp-anomalies"
    dead_letter: str = "detector-dead-letter"
    state: str = "detector-state"
    #: The log format of each input topic: "json" (the contract's records) or an adapter's name
    #: (postfix, m365, zeek-smtp; zeek-dns, unbound, bind, coredns).
    mail_format: str = "json"
    dns_format: str = "json"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    group_id: str = "otp-detector"
    #: Where to start: "committed" resumes from the last checkpoint (or the earliest offset for a
    #: new group, so history warms the baseline up); "earliest", "latest" or an RFC 3339 time
    #: reprocess from there with a fresh state.
    start_from: str = "committed"
    #: A partition with no records for this long stops holding the watermark back.
    idle_timeout_s: float = 30.0
    #: Partitions more than this far ahead of the watermark (event time) are paused while the
    #: others catch up, so history is read in step and memory stays bounded (to about this much
    #: traffic). Ten minutes is larger than what one poll brings of a partition, so partitions
    #: are not paused and resumed at every poll.
    max_lead_s: float = 600.0
    #: State checkpoint and offset commit interval (wall clock).
    checkpoint_interval_s: float = 5.0
    #: Create missing output, dead-letter and state topics at start.
    create_topics: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0          # 0: no metrics endpoint
    log_format: str = "json"
    log_level: str = "INFO"
    #: Exit 0 once every assigned partition has been idle this long (0: never). For batch-like
    #: runs (make demo, backfills); a deployed worker keeps it at 0.
    exit_when_idle_s: float = 0.0
    #: Back-off bounds when the broker is unreachable or a write fails.
    retry_backoff_min_s: float = 0.5
    retry_backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        kafka = self.kafka
        if kafka.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"kafka.security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if kafka.transport not in TRANSPORTS:
            raise ConfigError(f"kafka.transport must be one of {', '.join(TRANSPORTS)}")
        if kafka.security_protocol.startswith("SASL") and kafka.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"kafka.sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}")
        from .formats import FORMATS

        for stream, name in (("mail", self.topics.mail_format), ("dns", self.topics.dns_format)):
            if name not in FORMATS[stream]:
                raise ConfigError(f"topics.{stream}_format must be one of {', '.join(FORMATS[stream])}")
        if self.worker.log_format not in ("json", "text"):
            raise ConfigError("worker.log_format must be 'json' or 'text'")
        if not kafka.bootstrap_servers.strip():
            raise ConfigError("kafka.bootstrap_servers is empty")

    def describe(self) -> dict[str, Any]:
        """The effective configuration, secrets masked, for the start-up log line."""
        kafka = asdict(self.kafka)
        for key in SECRET_KEYS:
            if kafka[key]:
                kafka[key] = "***"
        return {"kafka": kafka, "topics": asdict(self.topics), "worker": asdict(self.worker),
                "detector": self.detector.to_mapping()}


_SHELL_TABLES = {"kafka": KafkaSettings, "topics": TopicSettings, "worker": WorkerSettings}
#: Tables another command reads with its own loader (``[notify]``: ``detector.notify.settings``),
#: accepted here so one file can configure every command.
OTHER_COMMAND_TABLES = ("notify",)


def load_settings(path: str | None = None, environ: dict[str, str] | None = None,
                  overrides: dict[tuple[str, str], Any] | None = None) -> Settings:
    """Defaults < TOML file < environment < ``overrides`` (flags, as ``{(table, key): value}``)."""
    data: dict[str, dict[str, Any]] = read_toml(path) if path else {}
    for table in data:
        if table not in _SHELL_TABLES and table not in CORE_TABLES \
                and table not in OTHER_COMMAND_TABLES:
            known = ", ".join([*_SHELL_TABLES, *CORE_TABLES, *OTHER_COMMAND_TABLES])
            raise ConfigError(f"unknown table [{table}] (known: {known})")
    for (table, key), value in _from_environment(os.environ if environ is None else environ).items():
        data.setdefault(table, {})[key] = value
    for (table, key), value in (overrides or {}).items():
        if value is not None:
            data.setdefault(table, {})[key] = value
    shells = {table: build_section(table, kind, data.get(table, {}), SIGNED_KEYS)
              for table, kind in _SHELL_TABLES.items()}
    detector = DetectorConfig.from_mapping({t: v for t, v in data.items() if t in CORE_TABLES})
    return Settings(detector=detector, **shells)


def _from_environment(environ: dict[str, str]) -> dict[tuple[str, str], str]:
    """``DETECTOR_<TABLE>_<KEY>`` variables (and the short forms), as raw strings."""
    tables = {**_SHELL_TABLES,
              **{table: type(getattr(DetectorConfig(), table)) for table in CORE_TABLES}}
    keys = {table: {f.name for f in fields(kind)} for table, kind in tables.items()}
    found: dict[tuple[str, str], str] = {}
    for variable, value in environ.items():
        if variable in SHORT_ENV:
            found[SHORT_ENV[variable]] = value
        elif variable.startswith("DETECTOR_"):
            table, _, key = variable[len("DETECTOR_"):].lower().partition("_")
            if key in keys.get(table, ()):
                found[(table, key)] = value
    return found

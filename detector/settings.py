"""One configuration for every command: a TOML file, the environment and flags, in that order.

``load_settings`` reads them through one pydantic-settings model: the shells' tables
(``[kafka]``, ``[topics]``, ``[worker]``) are pydantic models written here; the core's tables are
derived from the core's own frozen dataclasses (``detector.core.config.DetectorConfig``: one table
per field, one key per field of that section, type and default from the dataclass), so a field or
a section added there is read from the file, the environment and flags with no change here. A
command uses the tables it needs and ignores the rest, so a replay and a worker given the same file
and environment run the same detector. Other commands' tables built the same way from their own
dataclasses (``COMMAND_TABLES``: ``[notify]``) are read by the same model.

Precedence, lowest first: defaults (right for a production Kafka cluster), the TOML file
(``--config``), environment variables, command-line flags. Every key can be set from the
environment as ``DETECTOR_<TABLE>_<KEY>`` (``DETECTOR_KAFKA_SASL_PASSWORD``,
``DETECTOR_MODEL_BUCKET_S``; lists comma-separated); ``DETECTOR_BOOTSTRAP_SERVERS``,
``DETECTOR_GROUP_ID``, ``DETECTOR_FROM`` and ``DETECTOR_METRICS_PORT`` are short forms. A
``DETECTOR_*`` name that is neither is reported by ``unknown_environment`` (a misspelt key must
not silently keep a default). Every number must be finite and not negative (``replication_factor``
may be -1), and the ones that divide must be positive; a bad value fails with one line naming the
key and the rule (``ConfigError``). ``Settings.describe()`` prints the effective configuration
with secrets masked.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr,
                      ValidationError, create_model)
from pydantic_settings import (BaseSettings, EnvSettingsSource, NoDecode,
                               PydanticBaseSettingsSource, SettingsConfigDict, SettingsError,
                               TomlConfigSettingsSource)


from .core.config import ConfigError, DetectorConfig
from .notify.settings import NotifySettings

ENV_PREFIX = "DETECTOR_"
SECRET_KEYS = ("sasl_password", "ssl_password")
SHORT_ENV = {
    "DETECTOR_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "DETECTOR_GROUP_ID": ("worker", "group_id"),
    "DETECTOR_ROLE": ("worker", "role"),
    "DETECTOR_FROM": ("worker", "start_from"),
    "DETECTOR_METRICS_PORT": ("worker", "metrics_port"),
}
#: Every table: no NaN or infinity anywhere, no key that is not a field, nothing changed after.
TABLE = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)
TRANSPORTS = ("confluent", "kafka-python")


def _comma_list(value: Any) -> Any:
    """A list from the environment: ``a, b`` is ``("a", "b")``."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _topic_name(name: str) -> str:
    from .io.clients import topic_problem

    problem = topic_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def _format_of(stream: str):
    def check(name: str) -> str:
        from .formats import FORMATS

        if name not in FORMATS[stream]:
            raise ValueError(f"must be one of {', '.join(FORMATS[stream])}")
        return name
    return check


def _start_from(text: str) -> str:
    if text in ("earliest", "latest", "committed"):
        return text
    from .core.records import Rejected, parse_ts

    try:
        parse_ts(text)
    except Rejected:
        raise ValueError("must be earliest, latest, committed or an RFC 3339 time") from None
    return text


def _log_level(text: str) -> str:
    import logging

    levels = logging.getLevelNamesMapping()
    if text.upper() not in levels:
        raise ValueError(f"must be one of {', '.join(sorted(levels, key=levels.__getitem__))}")
    return text.upper()


def _bootstrap(text: str) -> str:
    from .io.clients import bootstrap_addresses

    bootstrap_addresses(text)          # ValueError naming the bad entry
    return text


Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Topic = Annotated[str, AfterValidator(_topic_name)]


class KafkaSettings(BaseModel):
    """``[kafka]``: connection, security and client settings."""

    model_config = TABLE

    bootstrap_servers: Annotated[str, AfterValidator(_bootstrap)] = "localhost:9092"
    client_id: str = "otp-detector"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: SecretStr = SecretStr("")
    ssl_check_hostname: bool = True
    #: Kafka's own defaults: a member is declared dead after 45 s without a heartbeat. Tests use
    #: much shorter values (see tests/conftest.py); production keeps these.
    session_timeout_ms: PositiveInt = 45_000
    heartbeat_interval_ms: PositiveInt = 3_000
    max_poll_interval_ms: PositiveInt = 300_000
    request_timeout_ms: PositiveInt = 30_000
    max_poll_records: PositiveInt = 5_000
    #: KIP-227 incremental fetch sessions (Kafka >= 1.1). Some Kafka-compatible brokers stop
    #: returning a partition that was paused and resumed within a session; turn this off there.
    incremental_fetch_sessions: bool = True
    #: Batch produced records for up to 20 ms: anomaly events are few, dead letters come in bursts.
    linger_ms: NonNegativeInt = 20
    #: Topic creation for missing output/state topics (-1: the broker's default replication).
    replication_factor: Annotated[int, Field(ge=-1)] = -1
    #: "confluent" (records fetched, decoded and produced by librdkafka, in C) or "kafka-python"
    #: (pure Python: the fallback where librdkafka cannot be installed). The worker with the
    #: confluent transport is the faster one in the benchmark (README, "Transports").
    transport: Literal["confluent", "kafka-python"] = "confluent"


class TopicSettings(BaseModel):
    """``[topics]``: the worker's topics and the log format of each input topic."""

    model_config = TABLE

    mail: Topic = "mail-flow"
    dns: Topic = "dns-resolver"
    anomalies: Topic = "otp-anomalies"
    dead_letter: Topic = "detector-dead-letter"
    state: Topic = "detector-state"
    #: Scaled out (``worker.role`` join/judge): the join workers' closed steps for the judge.
    #: One partition, so one judge reads every task's steps in order.
    steps: Topic = "detector-steps"
    #: The log format of each input topic: "json" (the contract's records) or an adapter's name
    #: (postfix, m365, zeek-smtp; zeek-dns, unbound, bind, coredns).
    mail_format: Annotated[str, AfterValidator(_format_of("mail"))] = "json"
    dns_format: Annotated[str, AfterValidator(_format_of("dns"))] = "json"


class WorkerSettings(BaseModel):
    """``[worker]``: the stream worker's group, start, pacing, checkpoints and observability."""

    model_config = TABLE

    group_id: Annotated[str, Field(min_length=1)] = "otp-detector"
    #: "all": one process joins and judges (one active member, standbys); "join": a join
    #: worker, one of any number sharing the input partitions as tasks; "judge": the judge of
    #: their steps (one active, standbys in the group "<group_id>-judge"). README, "Scaling".
    role: Literal["all", "join", "judge"] = "all"
    #: Where to start: "committed" resumes from the last checkpoint (or the earliest offset for a
    #: new group, so history warms the baseline up); "earliest", "latest" or an RFC 3339 time
    #: reprocess from there with a fresh state.
    start_from: Annotated[str, AfterValidator(_start_from)] = "committed"
    #: A partition with no records for this long stops holding the watermark back.
    idle_timeout_s: NonNegative = 30.0
    #: Partitions more than this far ahead of the watermark (event time) are paused while the
    #: others catch up (resumed at half of it), so history is read in step. Everything read
    #: ahead of the watermark waits in the detector's state, which every checkpoint writes
    #: whole: state and memory grow with this lead times the traffic. Two minutes cover the
    #: join's window and the allowed lateness several times over; measured on 3.4 M records
    #: over 3 h, checkpoints were 10-30 MB of JSON at ten minutes and the worker's peak RSS
    #: 410 MiB, against 310 MiB at two minutes, for the same time. Pausing costs little (the
    #: records already fetched are kept in hand), so a poll that pauses a partition is cheap.
    max_lead_s: Positive = 120.0
    #: State checkpoint and offset commit interval (wall clock).
    checkpoint_interval_s: Positive = 5.0
    #: Create missing output, dead-letter and state topics at start.
    create_topics: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0          # 0: no metrics endpoint
    log_format: Literal["json", "text"] = "json"
    log_level: Annotated[str, AfterValidator(_log_level)] = "INFO"
    #: Exit 0 once every assigned partition has been idle this long (0: never). For batch-like
    #: runs (make demo, backfills); a deployed worker keeps it at 0.
    exit_when_idle_s: NonNegative = 0.0
    #: Back-off bounds when the broker is unreachable or a write fails.
    retry_backoff_min_s: Positive = 0.5
    retry_backoff_max_s: Positive = 30.0


SHELL_TABLES: dict[str, type[BaseModel]] = {
    "kafka": KafkaSettings, "topics": TopicSettings, "worker": WorkerSettings}


# ------------------------------------------------------------ the core's tables, derived

def _key_type(hint: Any) -> Any:
    """The type a key of the core's dataclasses is read as: numbers finite (the table config)
    and not negative, lists from a comma-separated string too, nested dataclasses as tables."""
    origin = typing.get_origin(hint)
    if hint in (int, float):
        return Annotated[hint, Field(ge=0)]
    if origin in (tuple, list, frozenset, set):
        return Annotated[hint, NoDecode, BeforeValidator(_comma_list)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _table_model(hint)
    return hint


_TABLE_MODELS: dict[type, type[BaseModel]] = {}


def _table_model(kind: type) -> type[BaseModel]:
    """A pydantic model with the fields of the stdlib dataclass ``kind`` (same names, types and
    defaults), made once per dataclass."""
    model = _TABLE_MODELS.get(kind)
    if model is None:
        hints = typing.get_type_hints(kind)
        keys: dict[str, Any] = {}
        for item in dataclasses.fields(kind):
            if item.default is not dataclasses.MISSING:
                default = item.default
            elif item.default_factory is not dataclasses.MISSING:
                default = item.default_factory()
            else:
                default = ...
            typed = _key_type(hints[item.name])
            if isinstance(typed, type) and issubclass(typed, BaseModel) and default is not ...:
                default = typed(**_plain_fields(default))
            keys[item.name] = (typed, default)
        model = create_model(f"{kind.__name__}Table", __config__=TABLE, **keys)
        _TABLE_MODELS[kind] = model
    return model


def _plain_fields(instance: Any) -> dict[str, Any]:
    return {item.name: getattr(instance, item.name) for item in dataclasses.fields(instance)}


def _to_dataclass(kind: type, table: BaseModel) -> Any:
    """The validated table as the core's dataclass ``kind`` (nested tables too)."""
    hints = typing.get_type_hints(kind)
    values = {}
    for item in dataclasses.fields(kind):
        value = getattr(table, item.name)
        if isinstance(value, BaseModel):
            value = _to_dataclass(hints[item.name], value)
        values[item.name] = value
    return kind(**values)


def core_tables() -> dict[str, type]:
    """The core's tables: ``{table name: section dataclass}``, from ``DetectorConfig``."""
    hints = typing.get_type_hints(DetectorConfig)
    return {item.name: hints[item.name] for item in dataclasses.fields(DetectorConfig)}


#: Tables of other commands, each a frozen dataclass read like the core's: one file for all.
COMMAND_TABLES: dict[str, type] = {"notify": NotifySettings}


def dataclass_tables() -> dict[str, type]:
    """Every table read from a dataclass: the core's and the other commands'."""
    return {**core_tables(), **COMMAND_TABLES}


# ------------------------------------------------------------------------ the settings

@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration: the shells' tables and the core's ``DetectorConfig``."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    notify: NotifySettings = field(default_factory=NotifySettings)

    def describe(self) -> dict[str, Any]:
        """The effective configuration, secrets masked, for the start-up log line."""
        kafka = self.kafka.model_dump()
        for key in SECRET_KEYS:
            kafka[key] = "***" if kafka[key].get_secret_value() else ""
        return {"kafka": kafka, "topics": self.topics.model_dump(),
                "worker": self.worker.model_dump(), "detector": self.detector.to_mapping()}


class _ShortForms(PydanticBaseSettingsSource):
    """``DETECTOR_BOOTSTRAP_SERVERS`` and the other short forms, as their tables' keys."""

    def __init__(self, settings_cls, environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.found: dict[str, dict[str, str]] = {}
        upper = {name.upper(): value for name, value in environ.items()}
        for name, (table, key) in SHORT_ENV.items():
            if name in upper:
                self.found.setdefault(table, {})[key] = upper[name]

    def get_field_value(self, field, field_name):        # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.found


def _loader(path: str | None, environ: Mapping[str, str]) -> type[BaseSettings]:
    """The pydantic-settings root model for one load: defaults < TOML < environment < init."""

    known = _environment_names()
    # Only the variables that name a key: the others are warned about (unknown_environment),
    # never an error, as a stray DETECTOR_* variable in a shared environment must not stop a job.
    ours = {name: value for name, value in environ.items() if name.upper() in known}

    class Environment(EnvSettingsSource):
        def _load_env_vars(self):
            from pydantic_settings.sources.utils import parse_env_vars

            return parse_env_vars(ours, self.case_sensitive, self.env_ignore_empty,
                                  self.env_parse_none_str)

    class Root(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="_", env_nested_max_split=1,
            case_sensitive=False, extra="forbid", frozen=True, allow_inf_nan=False)

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            sources = [init_settings, Environment(settings_cls), _ShortForms(settings_cls, environ)]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    tables: dict[str, Any] = {name: (model, Field(default_factory=model))
                              for name, model in SHELL_TABLES.items()}
    for name, kind in dataclass_tables().items():
        model = _table_model(kind)
        tables[name] = (model, Field(default_factory=model))
    return create_model("DetectorSettings", __base__=Root, **tables)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable, binary or malformed file raises ConfigError
    naming it."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as err:
        raise ConfigError(f"config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None,
                  overrides: dict[tuple[str, str], Any] | None = None) -> Settings:
    """Defaults < TOML file < environment < ``overrides`` (flags, as ``{(table, key): value}``;
    a ``None`` value is a flag not given). Raises ConfigError with one line naming the key."""
    environ = os.environ if environ is None else environ
    if path is not None:
        read_toml(path)                     # its own errors, one line each, before pydantic's
    flags: dict[str, dict[str, Any]] = {}
    for (table, key), value in (overrides or {}).items():
        if value is not None:
            flags.setdefault(table, {})[key] = value
    try:
        # Its tables are fields made at run time (one per table), so typed as Any here.
        root: Any = _loader(path, environ)(**flags)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(_one_line(err, environ)) from None
    except SettingsError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    try:
        detector = DetectorConfig(**{name: _to_dataclass(kind, getattr(root, name))
                                     for name, kind in core_tables().items()})
        notify = _to_dataclass(NotifySettings, root.notify)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return Settings(kafka=root.kafka, topics=root.topics, worker=root.worker, detector=detector,
                    notify=notify)


def detector_config(tables: Mapping[str, Mapping[str, Any]] | None = None) -> DetectorConfig:
    """The core's configuration from ``{table: {key: value}}`` alone (no file, no environment):
    for tests and benchmarks that set a few keys."""
    overrides = {(table, key): value for table, keys in (tables or {}).items()
                 for key, value in keys.items()}
    return load_settings(environ={}, overrides=overrides).detector


def _known_keys() -> dict[str, list[str]]:
    known = {name: list(model.model_fields) for name, model in SHELL_TABLES.items()}
    for name, kind in dataclass_tables().items():
        known[name] = [item.name for item in dataclasses.fields(kind)]
    return known


def _one_line(err: ValidationError, environ: Mapping[str, str]) -> str:
    """The first problem of a validation error, naming the key and the rule."""
    problem = err.errors()[0]
    where = [str(part) for part in problem["loc"]]
    known = _known_keys()
    if problem["type"] == "extra_forbidden":
        if len(where) == 1:
            return f"unknown table [{where[0]}] (known: {', '.join(known)})"
        return (f"unknown key {'.'.join(where)} "
                f"(known: {', '.join(sorted(known.get(where[0], [])))})")
    name = ".".join(where)
    message = problem["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    given = problem.get("input")
    text = f"{name}: {message[:1].lower() + message[1:]}"
    if where[-1] not in SECRET_KEYS and not isinstance(given, dict):
        text += f", got {given!r}"
    variable = f"{ENV_PREFIX}{'_'.join(where[:2]).upper()}"
    if any(v.upper() == variable for v in environ):
        text += f" (from {variable})"
    return text


def _environment_names() -> set[str]:
    """Every variable that names a key: ``DETECTOR_<TABLE>_<KEY>``, a whole table (JSON) as
    ``DETECTOR_<TABLE>``, and the short forms."""
    names = set(SHORT_ENV)
    for table, keys in _known_keys().items():
        names.add(f"{ENV_PREFIX}{table.upper()}")
        names.update(f"{ENV_PREFIX}{table.upper()}_{key.upper()}" for key in keys)
    return names


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``DETECTOR_*`` variable that names no key (a misspelling keeps a
    default silently otherwise), with the nearest known name."""
    environ = os.environ if environ is None else environ
    names = _environment_names()
    warnings = []
    for variable in sorted(environ):
        if variable.upper().startswith(ENV_PREFIX) and variable.upper() not in names:
            near = difflib.get_close_matches(variable.upper(), names, n=1)
            warnings.append(f"unknown environment variable {variable}: ignored"
                            + (f" (did you mean {near[0]}?)" if near else ""))
    return warnings


__all__ = ["ConfigError", "KafkaSettings", "Settings", "TopicSettings", "WorkerSettings",
           "core_tables", "detector_config", "load_settings", "read_toml", "unknown_environment"]

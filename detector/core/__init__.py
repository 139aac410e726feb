"""The detector's core: raw mail-flow and DNS resolver lines in, anomaly events out, no I/O.

The shells (``detector replay`` over files, ``detector run`` over Kafka) feed it batches of
lines and write what it returns; a program can do the same. What is exported here is the
public API; the submodules' other names may change between releases.

- ``Detector``: ``feed(stream, lines, source)`` -> ``FeedResult`` (events, rejected lines),
  ``finish_source``, ``close``, ``snapshot`` / ``Detector(state=...)``, ``stats``.
- ``DetectorConfig`` and its tables (``ModelConfig``, ``AlertConfig``, ``SliceConfig``...).
- ``AnomalyEvent`` and its parts, ``encode_event`` / ``decode_event``; ``State``, ``Rule``,
  ``Severity``.
- ``MailRecord``, ``DnsRecord``, ``parse_mail``, ``parse_dns``, ``Rejected``: the contract's
  records, validated.
- ``OUTCOMES`` (per delivery, worst first) and ``KEYS`` (the outcome-wide keys, with ``ALL``).
"""

from .config import (AlertConfig, ClockConfig, ConfigError, DetectorConfig, JoinConfig,
                     ModelConfig, OtpConfig, SliceConfig)
from .events import (AnomalyEvent, Evidence, Expected, Observed, Rule, Severity, State,
                     ValueCount, Window, decode_event, encode_event)
from .outcomes import KEYS, OUTCOMES
from .pipeline import STATE_VERSION, Carry, Detector, FeedResult
from .records import DnsRecord, MailRecord, Rejected, parse_dns, parse_mail

__all__ = [
    "AlertConfig", "AnomalyEvent", "Carry", "ClockConfig", "ConfigError", "Detector", "DetectorConfig",
    "DnsRecord", "Evidence", "Expected", "FeedResult", "JoinConfig", "KEYS", "MailRecord",
    "ModelConfig", "OUTCOMES", "Observed", "OtpConfig", "Rejected", "Rule", "STATE_VERSION",
    "Severity", "SliceConfig", "State", "ValueCount", "Window", "decode_event", "encode_event",
    "parse_dns", "parse_mail",
]

"""The core's parameters: one typed, immutable object with defaults chosen for OTP mail.

Each default is justified where it is declared. The shells read it from a TOML file, the
environment and flags (``detector.settings``: one table per section, one key per field, derived
from these dataclasses); ``__post_init__`` checks what the core needs to run (finite numbers,
positive windows that divide each other) and ``to_mapping`` gives it back for printing and for
checkpoints.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .otp import DEFAULT_SENDER_PATTERNS, DEFAULT_SUBJECT_PATTERNS


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class ClockConfig:
    #: Records may arrive this far out of event-time order. Mail and resolver logs shipped by
    #: syslog/Fluent Bit/Kafka are seconds apart; 10 s covers that without delaying alerts much.
    allowed_lateness_s: float = 10.0
    #: Exact duplicates (message_id, status) are recognised this long: upstream re-sends after a
    #: shipper retry arrive within minutes.
    dedup_horizon_s: float = 600.0
    #: A record more than this ahead of the rest of its batch (or of the wall clock, in the
    #: worker) is rejected (``future_ts``), so one host with a wrong clock cannot drag the
    #: watermark and make everyone else late.
    max_future_skew_s: float = 300.0
    #: Bound on remembered (message_id, status) pairs, oldest evicted first (counted): ten
    #: minutes of a large provider's mail fit with room to spare; a flood of distinct ids
    #: cannot grow memory past it.
    dedup_max_entries: int = 1_000_000


@dataclass(frozen=True, slots=True)
class JoinConfig:
    #: SPF/DKIM/DMARC lookups happen during the SMTP transaction, seconds before the delivery
    #: attempt is logged; 30 s before covers slow transactions and resolver retries.
    window_before_s: float = 30.0
    #: Resolver logs are stamped when the answer is given; a few seconds after covers clock skew
    #: between the mail server and the resolver.
    window_after_s: float = 5.0
    #: Bound on buffered resolver records (oldest evicted first, counted).
    max_buffered_dns: int = 2_000_000
    #: Match a resolver record's ``client`` to the mail's ``server`` where both are spelt alike
    #: (two addresses or two host names; ``join.may_be_same_host``). Turn off when the two logs
    #: name one server two ways of one kind (a public and an internal address).
    match_client: bool = True


@dataclass(frozen=True, slots=True)
class OtpConfig:
    sender_allowlist: tuple[str, ...] = ()
    sender_patterns: tuple[str, ...] = DEFAULT_SENDER_PATTERNS
    subject_patterns: tuple[str, ...] = DEFAULT_SUBJECT_PATTERNS


@dataclass(frozen=True, slots=True)
class ModelConfig:
    #: Short window: a minute of OTP mail is what a user waits for a code before retrying.
    bucket_s: int = 60
    #: Windows slide by this step; 10 s keeps detection delay well under a minute.
    step_s: int = 10
    #: Long window: catches a small rise that no single minute shows.
    long_window_s: int = 900
    #: Baseline forgetting: half the weight is gone after 3 h, so the baseline follows the day
    #: without absorbing a 30-minute incident.
    half_life_s: float = 3 * 3600.0
    #: Beta prior pseudo-counts (failures, successes): a weak prior at a 0.1 % failure rate.
    prior_failures: float = 0.5
    prior_successes: float = 500.0
    #: No alert until the baseline has seen this much: 30 min and 1000 OTP attempts.
    warmup_s: float = 1800.0
    warmup_attempts: int = 1000
    #: A bucket whose score reaches this is not learned (the onset of an incident must not raise
    #: the baseline that judges it).
    learn_max_score: float = 3.0
    #: A baseline is frozen while its key is anomalous, but not forever: after this it learns
    #: again, accepting a lasting change as the new normal.
    max_freeze_s: float = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class AlertConfig:
    #: Score is -log10 of the tail probability; 6 (one in a million per test) keeps false alarms
    #: from thousands of tests a day rare.
    open_score: float = 6.0
    #: An anomaly stays open while the score stays at or above this (hysteresis).
    resolve_score: float = 2.0
    #: "One failure of two at 3 a.m. is not an incident": at least this many failures in a window.
    min_failures: int = 4
    #: At high volume a tiny rise is significant but not an incident: the failure rate must be
    #: at least this multiple of the baseline ...
    min_lift: float = 2.0
    #: ... and exceed it by this share of all OTP attempts (0.5 %: one code in 200 lost).
    min_excess_rate: float = 0.005
    #: The long window may fire on a smaller lift (it has more data).
    long_min_lift: float = 1.5
    #: Quiet for this long before an anomaly is resolved (no flapping).
    resolve_hold_s: float = 300.0
    #: ``critical`` when the excess failure rate reaches this share of all OTP attempts.
    critical_excess_rate: float = 0.05
    #: ``update`` when the failure rate moved by this factor since the last event.
    update_change: float = 1.5
    #: Evidence lists keep this many values; samples this many message ids.
    evidence_top: int = 5
    evidence_samples: int = 5
    #: The sequential test's false-alarm budget, per day: half for the outcome-wide keys, half
    #: shared by all slices (``sequential.threshold``). One false page in 20 days at most keeps
    #: a pager trusted; the windows' guards above make it rarer still.
    false_alarms_per_day: float = 0.05


@dataclass(frozen=True, slots=True)
class SliceConfig:
    #: Sender domains watched one by one (the busiest, Space-Saving). A large provider's OTP
    #: comes from a few hundred to a few thousand sending domains (banks, shops, identity
    #: providers); past the busiest 2048 a sender sends too few codes for its own test to
    #: become significant within minutes, and the outcome-wide keys still see it. 0: none.
    sender_capacity: int = 2048
    #: Resolvers watched one by one: a resolver fleet has tens to a few hundred instances.
    resolver_capacity: int = 256
    #: Weight (in attempts) of a slice's prior, centred on its outcome's provider-wide rate: 20
    #: attempts let a sender's own few hours of history dominate, while its first minutes are
    #: judged by what is normal for everyone.
    prior_attempts: float = 20.0
    #: A slice may alarm once its baseline has learned this many (decayed) attempts: at the
    #: 3 h half-life every sender with about one OTP mail in five minutes or more qualifies.
    warmup_attempts: float = 50.0


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    clock: ClockConfig = field(default_factory=ClockConfig)
    join: JoinConfig = field(default_factory=JoinConfig)
    otp: OtpConfig = field(default_factory=OtpConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    slices: SliceConfig = field(default_factory=SliceConfig)

    def __post_init__(self) -> None:
        m, a = self.model, self.alerts
        for section in fields(self):
            for key, value in asdict(getattr(self, section.name)).items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{section.name}.{key}: must be a finite number, got {value}")
        for key in ("bucket_s", "step_s", "long_window_s", "half_life_s", "prior_failures",
                    "prior_successes"):
            if not getattr(m, key) > 0:
                raise ConfigError(f"model.{key}: must be greater than 0, got {getattr(m, key)}")
        if m.bucket_s % m.step_s:
            raise ConfigError(f"model.bucket_s ({m.bucket_s}) must be a multiple of "
                              f"model.step_s ({m.step_s})")
        if m.long_window_s % m.bucket_s or m.long_window_s < m.bucket_s:
            raise ConfigError(f"model.long_window_s ({m.long_window_s}) must be a multiple of "
                              f"model.bucket_s ({m.bucket_s})")
        if not a.false_alarms_per_day > 0:
            raise ConfigError(f"alerts.false_alarms_per_day: must be greater than 0, got "
                              f"{a.false_alarms_per_day}")
        s = self.slices
        for key in ("prior_attempts", "warmup_attempts"):
            if not getattr(s, key) > 0:
                raise ConfigError(f"slices.{key}: must be greater than 0, got {getattr(s, key)}")
        if not a.resolve_score <= a.open_score:
            raise ConfigError("alerts.resolve_score must not exceed alerts.open_score")
        for name in ("sender_patterns", "subject_patterns"):
            for pattern in getattr(self.otp, name):
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ConfigError(f"otp.{name}: bad regular expression {pattern!r}: {err}") from None

    def to_mapping(self) -> dict[str, Any]:
        return {f.name: _plain(asdict(getattr(self, f.name))) for f in fields(self)}


def _plain(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in mapping.items()}

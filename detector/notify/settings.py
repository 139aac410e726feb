"""The notifier's configuration: the ``[notify]`` table, ``DETECTOR_NOTIFY_*`` variables and flags.

``NotifySettings`` is one of the tables of the project's one settings model
(``detector.settings``), with the same precedence as every other command: defaults < the
``--config`` file's ``[notify]`` table < the environment (``DETECTOR_NOTIFY_<KEY>``) < flags. The
Kafka connection (``[kafka]``) and the anomalies topic (``[topics] anomalies``) come from the
same load, so the notifier reads what the worker writes.

The webhook signing secret is read from the environment only (``DETECTOR_NOTIFY_WEBHOOK_SECRET``),
never from the file, and is masked wherever the configuration is printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.config import ConfigError

SECRET_ENV = "DETECTOR_NOTIFY_WEBHOOK_SECRET"


@dataclass(frozen=True, slots=True)
class NotifySettings:
    #: Alertmanager base URLs (``http://am:9093``); alerts go to ``<url>/api/v2/alerts``. Give
    #: every instance of an Alertmanager cluster, as Prometheus does: each gets every alert.
    alertmanager_urls: tuple[str, ...] = ()
    #: URLs that get every event as JSON (POST), with an idempotency key and a signature.
    webhook_urls: tuple[str, ...] = ()
    #: Its own group, so its offsets (what the receivers accepted) never mix with the detector's.
    group_id: str = "otp-notifier"
    #: Events a receiver refused (4xx) go here with the response (value = the event's bytes).
    dead_letter_topic: str = "otp-notifier-dead-letter"
    #: Every open anomaly is re-sent this often. Alertmanager drops a firing alert that is not
    #: re-sent before its end time; each alert is sent ending 4 intervals ahead (as Prometheus
    #: does), so three lost re-sends in a row still do not resolve it. 60 s is Prometheus' own
    #: ``rules.alert.resend-delay``.
    resend_interval_s: float = 60.0
    #: Annotation ``runbook_url`` and the alert's ``generatorURL``; ``{id}`` is replaced by the
    #: anomaly's id (a link to a dashboard or a search for it). Empty: not sent.
    runbook_url: str = ""
    generator_url: str = ""
    #: One HTTP request's limit. Alertmanager answers in milliseconds; 10 s is a receiver in
    #: trouble, retried with back-off, not waited on.
    request_timeout_s: float = 10.0
    #: Back-off between retries: doubles from min to max, each wait drawn in [half, whole]
    #: (jitter), so receivers coming back are not hit by every sender at once.
    retry_backoff_min_s: float = 0.5
    retry_backoff_max_s: float = 30.0
    #: TLS: verify the receiver's certificate (with ``ca_file`` for a private CA, else the
    #: system's). Turning it off is logged as a warning at start.
    tls_verify: bool = True
    ca_file: str = ""
    #: HMAC-SHA256 key for the webhooks' signature header; from the environment only.
    webhook_secret: str = ""
    #: Alerts in one POST to Alertmanager (it takes a list; Prometheus sends up to 64 a request,
    #: more is fine and keeps a backlog quick to drain).
    max_batch: int = 500
    #: Events held for one receiver before consumption pauses (memory bound while one is down).
    max_pending: int = 10_000
    #: Accepted offsets are committed at most this often (and at shutdown); a crash re-sends at
    #: most this much, which receivers de-duplicate (alerts by labels, webhooks by the key).
    commit_interval_s: float = 1.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0          # 0: no /metrics endpoint
    log_format: str = "json"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for key in ("alertmanager_urls", "webhook_urls"):
            for url in getattr(self, key):
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ConfigError(f"notify.{key}: {url!r} is not an http(s) URL")
        if self.resend_interval_s <= 0 or self.request_timeout_s <= 0:
            raise ConfigError("notify.resend_interval_s and notify.request_timeout_s must be > 0")
        if not 0 < self.retry_backoff_min_s <= self.retry_backoff_max_s:
            raise ConfigError("notify: need 0 < retry_backoff_min_s <= retry_backoff_max_s")
        if self.max_batch < 1 or self.max_pending < 1:
            raise ConfigError("notify.max_batch and notify.max_pending must be at least 1")
        if self.log_format not in ("json", "text"):
            raise ConfigError("notify.log_format must be 'json' or 'text'")

    def describe(self) -> dict[str, Any]:
        """The effective settings for the start-up log: secret and URL credentials masked."""
        described = asdict(self)
        described["webhook_secret"] = "***" if self.webhook_secret else ""
        for key in ("alertmanager_urls", "webhook_urls"):
            described[key] = [mask_url(url) for url in described[key]]
        return described


def mask_url(url: str) -> str:
    """``url`` with a password in it replaced by ``***`` (for logs).

    >>> mask_url("https://bot:s3cret@hooks.example/otp?x=1")
    'https://bot:***@hooks.example/otp?x=1'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def load_notify_settings(path: str | None, environ: dict[str, str] | None = None,
                         overrides: dict[str, Any] | None = None) -> NotifySettings:
    """Defaults < ``[notify]`` of the TOML file at ``path`` < ``DETECTOR_NOTIFY_*`` < ``overrides``
    (flags; ``None`` and empty values are not given). Raises ConfigError naming the key."""
    from ..settings import load_settings, read_toml   # the settings model reads this module

    if path and "webhook_secret" in read_toml(path).get("notify", {}):
        raise ConfigError(f"notify.webhook_secret: put the secret in {SECRET_ENV}, not in a file")
    flags = {("notify", key): value for key, value in (overrides or {}).items()
             if value is not None and value != ()}
    return load_settings(path, environ, flags).notify

"""``detector notify``: the click command over ``Notifier`` (registered in ``detector.cli``)."""

from __future__ import annotations

import logging
import sys

import click

from ..core.config import ConfigError


@click.command()
@click.option("--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers.")
@click.option("--alertmanager-url", "alertmanager_urls", multiple=True, metavar="URL",
              help="Alertmanager base URL (alerts to URL/api/v2/alerts); repeat for each "
                   "instance of a cluster.")
@click.option("--webhook-url", "webhook_urls", multiple=True, metavar="URL",
              help="POST every event's JSON here; repeat for several.")
@click.option("--config", "config_path", metavar="PATH",
              help="TOML configuration file ([notify], [kafka], [topics]).")
@click.option("--group-id", metavar="ID", help="Consumer group (default otp-notifier).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics here.")
@click.option("--log-format", type=click.Choice(["json", "text"]), help="Log line format.")
def notify(bootstrap_servers, alertmanager_urls, webhook_urls, config_path, group_id,
           metrics_port, log_format) -> None:
    """Hand every anomaly event on to Alertmanager and webhooks, in a consumer group of its own."""
    from ..logs import configure_logging
    from ..settings import load_settings
    from .settings import load_notify_settings

    try:
        shared = load_settings(config_path, overrides={("kafka", "bootstrap_servers"):
                                                       bootstrap_servers})
        settings = load_notify_settings(config_path, overrides={
            "alertmanager_urls": tuple(alertmanager_urls), "webhook_urls": tuple(webhook_urls),
            "group_id": group_id, "metrics_port": metrics_port, "log_format": log_format})
    except ConfigError as err:
        _fail(str(err))
    if not settings.alertmanager_urls and not settings.webhook_urls:
        _fail("no receiver: give --alertmanager-url or --webhook-url "
              "(or notify.alertmanager_urls / notify.webhook_urls)")
    if shared.kafka.transport == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            from ..io.transport import CONFLUENT_MISSING

            _fail(CONFLUENT_MISSING)
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("kafka").setLevel(logging.WARNING)     # the client's chatter is not ours
    from prometheus_client import disable_created_metrics

    from .metrics import NotifierMetrics
    from .notifier import Notifier

    disable_created_metrics()       # as the worker's (README, "Metrics and health")
    metrics = NotifierMetrics()
    try:
        notifier = Notifier(settings, shared, metrics)
    except OSError as err:                      # an unreadable ca_file
        _fail(f"notify.ca_file: {err}")
    server = None
    if settings.metrics_port:
        try:
            server = metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as err:
            _fail(f"metrics endpoint {settings.metrics_host}:{settings.metrics_port}: {err}")
    notifier.install_signal_handlers()
    try:
        code = notifier.run()
    finally:
        if server is not None:
            server.shutdown()
    sys.exit(code)


def _fail(message: str) -> None:
    click.echo(f"detector: error: {message}", err=True)
    sys.exit(2)

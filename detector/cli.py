"""Command line: each command is a few lines over the core and its shells (``detector --help``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from .core.config import ConfigError

# The format names, without importing the adapters for every command (kept in step by a test).
MAIL_FORMATS = ("json", "postfix", "m365", "zeek-smtp")
DNS_FORMATS = ("json", "zeek-dns", "unbound", "bind", "coredns")


def _fail(message: str) -> None:
    """One clear line on stderr and exit status 2: a usage or configuration problem."""
    click.echo(f"detector: error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Detect spikes of OTP mail delivery failures tied to DNS resolution outcomes."""


@main.command()
@click.option("--mail", "mail_paths", multiple=True, required=True, metavar="PATH",
              help="Mail-flow log (.jsonl, .jsonl.gz or -); repeat for several files.")
@click.option("--dns", "dns_paths", multiple=True, required=True, metavar="PATH",
              help="DNS resolver log (.jsonl, .jsonl.gz or -); repeat for several files.")
@click.option("--out", required=True, metavar="PATH", help="Anomaly events, JSON lines (- for stdout).")
@click.option("--dead-letter", metavar="PATH", help="Rejected lines with their reason, JSON lines.")
@click.option("--config", "config_path", metavar="PATH", help="TOML configuration file.")
@click.option("--state", "state_path", metavar="PATH",
              help="Load the detector's state from PATH if it exists, save it there at the end.")
@click.option("--mail-format", default="json", show_default=True,
              type=click.Choice([*MAIL_FORMATS, "auto"]), help="Format of the --mail files.")
@click.option("--dns-format", default="json", show_default=True,
              type=click.Choice([*DNS_FORMATS, "auto"]), help="Format of the --dns files.")
def replay(mail_paths, dns_paths, out, dead_letter, config_path, state_path, mail_format,
           dns_format) -> None:
    """Replay historical logs in event-time order and write anomaly events."""
    from .config import load_detector_config
    from .io.files import JsonLinesSink, check_readable
    from .replay import replay as run_replay

    try:
        config = load_detector_config(config_path)
        for path in (*mail_paths, *dns_paths):
            check_readable(path)
        if [*mail_paths, *dns_paths].count("-") > 1:
            raise ConfigError("standard input (-) can be given only once")
    except (ConfigError, OSError) as err:
        _fail(str(err))
    progress = _progress_printer() if sys.stderr.isatty() else None
    sink = JsonLinesSink(out)
    dead = JsonLinesSink(dead_letter) if dead_letter else None
    try:
        summary = run_replay(list(mail_paths), list(dns_paths), sink, dead, config,
                             state_path=state_path, progress=progress, mail_format=mail_format,
                             dns_format=dns_format, announce=lambda text: click.echo(text, err=True))
    finally:
        sink.close()
        if dead is not None:
            dead.close()
    if progress is not None:
        click.echo("", err=True)
    click.echo(summary.format(), err=True)


def _progress_printer():
    last = [0.0]

    def show(done: int, total: int) -> None:
        if total and (done - last[0]) / total >= 0.01:
            last[0] = done
            click.echo(f"\rreplay: {100 * done / total:5.1f} % of input read", err=True, nl=False)

    return show


@main.command()
@click.argument("scenario")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--seed", default=1, show_default=True, help="Random seed.")
@click.option("--hours", type=float, default=None, help="Length (default: the scenario's own).")
def generate(scenario, outdir, seed, hours) -> None:
    """Write synthetic logs of SCENARIO with labelled incidents (truth.json) to OUTDIR.

    Scenarios: seed-incident, resolver-timeout, nxdomain-deleted, downstream-reject,
    decoy-volume-surge, decoy-dns-storm, decoy-bounce-wave, decoy-tiny-tenant, mixed (72 h, all
    of them). See the README.
    """
    from .synth import SCENARIOS, generate as run_generate

    if scenario not in SCENARIOS:
        _fail(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    Path(outdir).mkdir(parents=True, exist_ok=True)
    summary = run_generate(scenario, Path(outdir), seed=seed, hours=hours).to_dict()
    click.echo(f"{scenario} (seed {seed}): {summary['start']} to {summary['end']}, "
               f"{summary['mail_records']} mail and {summary['dns_records']} DNS records, "
               f"{summary['incidents']} incidents, {summary['decoys']} decoys -> {outdir}", err=True)


@main.command()
@click.argument("anomalies", type=click.Path(exists=True, dir_okay=False))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(anomalies, truth, as_json) -> None:
    """Recall, false alarms and detection delay of ANOMALIES against TRUTH."""
    from .evaluate import evaluate as run_evaluate, format_table, load_events

    report = run_evaluate(load_events(anomalies), orjson.loads(Path(truth).read_bytes()))
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_table(report))


def _settings(config_path, overrides):
    from .settings import load_settings

    try:
        return load_settings(config_path, overrides=overrides)
    except ConfigError as err:
        _fail(str(err))


@main.command()
@click.option("--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers.")
@click.option("--from", "start_from", metavar="WHERE",
              help="earliest | latest | committed (default) | an RFC 3339 time.")
@click.option("--config", "config_path", metavar="PATH", help="TOML configuration file.")
@click.option("--group-id", metavar="ID", help="Consumer group (default otp-detector).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics and /healthz here.")
@click.option("--exit-when-idle", type=float, metavar="SECONDS",
              help="Flush and exit once the input has been idle this long (batch runs).")
@click.option("--log-format", type=click.Choice(["json", "text"]), help="Log line format.")
def run(bootstrap_servers, start_from, config_path, group_id, metrics_port, exit_when_idle,
        log_format) -> None:
    """Run the stream worker: consume mail-flow and DNS topics, publish anomaly events."""
    from .logs import configure_logging
    from .worker import Worker, parse_start_time

    settings = _settings(config_path, {
        ("kafka", "bootstrap_servers"): bootstrap_servers, ("worker", "start_from"): start_from,
        ("worker", "group_id"): group_id, ("worker", "metrics_port"): metrics_port,
        ("worker", "exit_when_idle_s"): exit_when_idle, ("worker", "log_format"): log_format})
    if settings.worker.start_from not in ("earliest", "latest", "committed"):
        try:
            parse_start_time(settings.worker.start_from)
        except ValueError as err:
            _fail(str(err))
    if settings.kafka.transport == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            from .io.transport import CONFLUENT_MISSING

            _fail(CONFLUENT_MISSING)
    configure_logging(settings.worker.log_level, settings.worker.log_format)
    import logging

    logging.getLogger("kafka").setLevel(logging.WARNING)     # the client's chatter is not ours
    from .worker_metrics import serve_worker_metrics

    worker = Worker(settings)
    server = serve_worker_metrics(worker, settings.worker.metrics_host, settings.worker.metrics_port)
    worker.install_signal_handlers()
    try:
        code = worker.run()
    finally:
        if server is not None:
            server.stop()
    sys.exit(code)


@main.command()
@click.option("--topic", required=True, help="Topic to write to.")
@click.argument("files", nargs=-1, required=True)
@click.option("--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers.")
@click.option("--config", "config_path", metavar="PATH", help="TOML configuration file.")
@click.option("--speed", type=float, help="Replay event time at this multiple of real time.")
@click.option("--no-key", is_flag=True, help="Send without keys (default: the join key).")
@click.option("--format", "format_name", default="json", show_default=True,
              type=click.Choice([*MAIL_FORMATS, *DNS_FORMATS[1:]]),
              help="Convert lines of this log format to contract records before sending.")
def produce(topic, files, bootstrap_servers, config_path, speed, no_key, format_name) -> None:
    """Load log FILES (.jsonl, .jsonl.gz, -) into a Kafka topic, line by line."""
    from .formats import ADAPTERS, make_adapter
    from .io.files import check_readable
    from .io.produce import produce_files

    settings = _settings(config_path, {("kafka", "bootstrap_servers"): bootstrap_servers})
    try:
        for path in files:
            check_readable(path)
    except OSError as err:
        _fail(str(err))
    adapter = (make_adapter(format_name, ADAPTERS[format_name].stream)
               if format_name != "json" else None)
    sent = produce_files(settings.kafka, topic, list(files), speed=speed, keyed=not no_key,
                         adapter=adapter)
    click.echo(f"produced {sent} records to {topic}", err=True)


@main.command()
@click.option("--format", "format_name", required=True,
              type=click.Choice([*MAIL_FORMATS[1:], *DNS_FORMATS[1:], "auto-mail", "auto-dns"]),
              help="The file's log format (auto-mail/auto-dns: recognise it).")
@click.argument("file")
def convert(format_name, file) -> None:
    """Print the contract records FILE turns into: what the detector sees of it."""
    from .formats import ADAPTERS, SNIFF_LINES, convert_chunks, detect, make_adapter
    from .io.files import LineSource, check_readable

    try:
        check_readable(file)
    except OSError as err:
        _fail(str(err))
    source = LineSource(file, "any")
    if format_name.startswith("auto-"):
        stream = format_name.split("-", 1)[1]
        format_name, score = detect(source.peek(SNIFF_LINES), stream)
        click.echo(f"{file}: {stream} format {format_name} (score {score:.2f})", err=True)
        if format_name == "json":
            _fail("the file is already in the contract's JSON form")
    adapter = make_adapter(format_name, ADAPTERS[format_name].stream)
    output = click.get_binary_stream("stdout")
    rejected, records, skipped = {}, 0, 0
    for batch, numbers in convert_chunks(adapter, source.chunks()):
        for record in batch.records:
            output.write(record + b"\n")
        records += len(batch.records)
        skipped += batch.skipped
        for index, reason in batch.rejected:
            rejected[reason] = rejected.get(reason, 0) + 1
            click.echo(f"{file}:{numbers[index] if numbers else 'end'}: rejected ({reason})",
                       err=True)
    source.close()
    click.echo(f"{records} records, {skipped} lines skipped, rejected: "
               + (", ".join(f"{r} {n}" for r, n in sorted(rejected.items())) or "none"), err=True)


@main.command()
@click.option("--port", type=int, default=9092, show_default=True, help="Loopback port.")
def broker(port) -> None:
    """Run a local Kafka-compatible broker (tansu, memory storage) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from .io.broker import LocalBroker

    local = LocalBroker(port=port)
    try:
        local.start()
    except RuntimeError as err:
        _fail(str(err))
    click.echo(local.bootstrap)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and local.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        local.stop()
    click.echo("broker stopped", err=True)


def _register_bench() -> None:
    from .bench.cli import bench

    main.add_command(bench)


_register_bench()


def _register_notify() -> None:
    from .notify.command import notify

    main.add_command(notify)


_register_notify()

if __name__ == "__main__":
    main()

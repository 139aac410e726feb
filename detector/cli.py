"""Command line: each command is a few lines over the core and its shells (``detector --help``).

Exit statuses (the README's "Command line" lists them too): 0 the work was done, whatever the
input held; 2 a usage, configuration or input error, with one line on stderr naming it and nothing
written; 3 an input broke off part-way (a truncated gzip, trailing garbage, the broker lost while
producing): what was done is summarised, and no output file was replaced; 130 interrupted
(Ctrl-C), no output file replaced. Never a Python traceback for an operator's mistake.
"""

from __future__ import annotations

import sys
import time
from typing import NoReturn
from pathlib import Path

import click
import orjson

from . import gcpolicy
from .core.config import ConfigError
from .core.events import AnomalyEvent, to_builtins

# The format names, without importing the adapters for every command (kept in step by a test).
MAIL_FORMATS = ("json", "postfix", "m365", "zeek-smtp")
DNS_FORMATS = ("json", "zeek-dns", "unbound", "bind", "coredns")

EXIT_OK, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 2, 3, 130


def _fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    """One clear line on stderr and exit status 2: a usage or configuration problem."""
    click.echo(f"detector: error: {message}", err=True)
    sys.exit(status)


def _warn(message: str) -> None:
    click.echo(f"detector: warning: {message}", err=True)


class _Commands(click.Group):
    """click's group with one line for a usage error and no ``Aborted!`` traceback story."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        gcpolicy.tune()             # every command is one process over many records
        try:
            return super().main(args, prog_name or "detector", complete_var,
                                standalone_mode=False, **extra)
        except click.UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:
                click.echo(err.ctx.get_help())          # `detector` alone: the help
                sys.exit(EXIT_OK)
            command = err.ctx.command_path if err.ctx is not None else "detector"
            click.echo(f"detector: error: {command}: {err.format_message()} "
                       f"(see {command} --help)", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as err:          # a bad file argument, ...
            click.echo(f"detector: error: {err.format_message()}", err=True)
            sys.exit(EXIT_USAGE)
        except (click.Abort, KeyboardInterrupt):
            click.echo("detector: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:                      # `detector convert ... | head`
            sys.stderr.close()
            sys.exit(EXIT_OK)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--series", "series_path", metavar="PATH",
              help="The per-step failure series, JSON lines (for detector report).")
@click.option("--report", "report_path", metavar="PATH",
              help="A self-contained HTML report: rates, anomalies, evidence, this summary.")
def replay(mail_paths, dns_paths, out, dead_letter, config_path, state_path, mail_format,
           dns_format, series_path, report_path) -> None:
    """Replay historical logs in event-time order and write anomaly events."""
    from .io.files import (InputError, JsonLinesSink, OutputError, OutputFile, check_distinct,
                           check_readable)
    from .replay import StateError, load_state, replay as run_replay

    if report_path:
        _needs_plotly()
    inputs = [*(("--mail", p) for p in mail_paths), *(("--dns", p) for p in dns_paths)]
    outputs = [("--out", out), ("--dead-letter", dead_letter), ("--state", state_path),
               ("--series", series_path), ("--report", report_path)]
    opened: list[JsonLinesSink | OutputFile] = []
    try:
        config = _settings(config_path, {}).detector
        for _, path in inputs:
            check_readable(path)
        if [*mail_paths, *dns_paths].count("-") > 1:
            raise ConfigError("standard input (-) can be given only once")
        check_distinct([*inputs, *([("--config", config_path)] if config_path else [])],
                       outputs)
        state = load_state(state_path, config) if state_path else None
        # Every output is opened (as a temporary file beside it) before the first record.
        sink = JsonLinesSink(out, "--out")
        opened.append(sink)
        dead = JsonLinesSink(dead_letter, "--dead-letter") if dead_letter else None
        if dead is not None:
            opened.append(dead)
        state_out = OutputFile(state_path, "--state") if state_path else None
        if state_out is not None:
            opened.append(state_out)
        series_out = JsonLinesSink(series_path, "--series") if series_path else None
        if series_out is not None:
            opened.append(series_out)
        report_out = OutputFile(report_path, "--report") if report_path else None
        if report_out is not None:
            opened.append(report_out)
    except (ConfigError, OSError, OutputError, StateError) as err:
        for output in opened:
            output.abort()
        _fail(str(err))
    progress = _progress_printer() if sys.stderr.isatty() else None
    # The report needs the events and the series after the replay: kept in memory for it.
    events: list[dict] = []
    series: list[dict] = []

    def on_series(rows: list[dict]) -> None:
        if series_out is not None:
            series_out.write_many(rows)
        if report_out is not None:
            series.extend(rows)

    try:
        summary = run_replay(list(mail_paths), list(dns_paths),
                             _KeepEvents(sink, events) if report_out else sink, dead, config,
                             state=state, save_state=state_out.write if state_out else None,
                             progress=progress, mail_format=mail_format,
                             dns_format=dns_format, announce=lambda text: click.echo(text, err=True),
                             warn=_warn, now=time.time(),
                             series=on_series if series_out or report_out else None)
        if summary.error is None:
            if report_out is not None:
                from .htmlreport import render
                report_out.write(render(events, series, summary).encode())
            for output in opened:          # all on disk before any replaces its file
                output.flush()
            for output in opened:
                output.close() if isinstance(output, JsonLinesSink) else output.commit()
    except (InputError, OutputError) as err:
        for output in opened:
            output.abort()
        _fail(str(err))
    except BaseException:
        for output in opened:
            output.abort()
        raise
    if progress is not None:
        click.echo("", err=True)
    click.echo(summary.format(), err=True)
    for warning in summary.warnings():
        _warn(warning)
    if summary.error is not None:
        for output in opened:
            output.abort()
        _fail(f"{summary.error}; the summary above is of what was read, and no output file "
              "was replaced", EXIT_PARTIAL)


class _KeepEvents:
    """The ``--out`` sink, also keeping the events it is given as the JSON objects it wrote (for
    ``--report``, which reads them as it would read them from a file)."""

    def __init__(self, sink, events: list[dict]) -> None:
        self.sink, self.events = sink, events

    def write_many(self, events: list[AnomalyEvent]) -> None:
        self.sink.write_many(events)
        self.events.extend(to_builtins(event) for event in events)


def _needs_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        _fail("the HTML report needs plotly, which is not installed: "
              "pip install 'otp-dns-detector[report]'")


@main.command()
@click.option("--anomalies", required=True, metavar="FILE",
              help="Anomaly events, JSON lines (detector replay --out, or the anomalies topic).")
@click.option("--series", "series_path", required=True, metavar="FILE",
              help="The per-step series, JSON lines (detector replay --series).")
@click.option("--out", required=True, metavar="PATH", help="The HTML report to write.")
def report(anomalies, series_path, out) -> None:
    """One self-contained HTML page: failure rates per DNS outcome over time with their
    expected rates, the anomalies shaded and tabled with their evidence."""
    from .evaluate import EvaluationInputError, load_events
    from .htmlreport import ReportInputError, load_series, render
    from .io.files import OutputError, OutputFile, check_distinct, check_readable

    _needs_plotly()
    try:
        for path in (anomalies, series_path):
            check_readable(path)
        check_distinct([("--anomalies", anomalies), ("--series", series_path)], [("--out", out)])
        events, series = load_events(anomalies), load_series(series_path)
        page = render(events, series).encode()
        output = OutputFile(out, "--out")
    except (OSError, OutputError, EvaluationInputError, ReportInputError) as err:
        _fail(str(err))
    try:
        output.write(page)
        output.commit()
    except BaseException:
        output.abort()
        raise
    click.echo(f"report: {len(events)} anomaly events, {len(series)} steps -> {out}", err=True)


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
    import math

    from .synth import SCENARIOS, generate as run_generate

    if scenario not in SCENARIOS:
        _fail(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    if hours is not None and not (math.isfinite(hours) and hours > 0):
        _fail(f"--hours must be a positive number of hours, got {hours:g}")
    try:
        Path(outdir).mkdir(parents=True, exist_ok=True)
        summary = run_generate(scenario, Path(outdir), seed=seed, hours=hours).to_dict()
    except OSError as err:
        _fail(f"OUTDIR {outdir}: {err.strerror or err}"
              + (f": {err.filename}" if getattr(err, "filename", None) else ""))
    click.echo(f"{scenario} (seed {seed}): {summary['start']} to {summary['end']}, "
               f"{summary['mail_records']} mail and {summary['dns_records']} DNS records, "
               f"{summary['incidents']} incidents, {summary['decoys']} decoys -> {outdir}", err=True)


@main.command()
@click.argument("anomalies", type=click.Path(exists=True, dir_okay=False))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(anomalies, truth, as_json) -> None:
    """Recall, false alarms and detection delay of ANOMALIES against TRUTH."""
    from .evaluate import (EvaluationInputError, evaluate as run_evaluate, format_table,
                           load_events, load_truth)

    try:
        report = run_evaluate(load_events(anomalies), load_truth(truth))
    except EvaluationInputError as err:
        _fail(str(err))
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_table(report))


def _settings(config_path, overrides):
    """The one configuration (file < environment < flags), or one line and exit 2; a warning
    for each DETECTOR_* variable that names no key."""
    from .settings import load_settings, unknown_environment

    for warning in unknown_environment():
        _warn(warning)
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
@click.option("--role", type=click.Choice(["all", "join", "judge"]),
              help="all (default): join and judge in one process; join: a join worker (scale "
                   "out); judge: the judge of the join workers' steps.")
def run(bootstrap_servers, start_from, config_path, group_id, metrics_port, exit_when_idle,
        log_format, role) -> None:
    """Run the stream worker: consume mail-flow and DNS topics, publish anomaly events."""
    from .logs import configure_logging
    from .stages import make_worker

    settings = _settings(config_path, {
        ("kafka", "bootstrap_servers"): bootstrap_servers, ("worker", "start_from"): start_from,
        ("worker", "group_id"): group_id, ("worker", "metrics_port"): metrics_port,
        ("worker", "exit_when_idle_s"): exit_when_idle, ("worker", "log_format"): log_format,
        ("worker", "role"): role})
    if settings.kafka.transport == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            from .io.transport import CONFLUENT_MISSING

            _fail(CONFLUENT_MISSING)
    configure_logging(settings.worker.log_level, settings.worker.log_format)
    import logging

    logging.getLogger("kafka").setLevel(logging.WARNING)     # the client's chatter is not ours
    from prometheus_client import disable_created_metrics

    from .worker_metrics import serve_worker_metrics

    disable_created_metrics()       # no `_created` series per counter (README, "Metrics and health")
    worker = make_worker(settings)
    try:
        server = serve_worker_metrics(worker, settings.worker.metrics_host,
                                      settings.worker.metrics_port)
    except OSError as err:
        _fail(f"--metrics-port {settings.worker.metrics_port}: cannot serve metrics on "
              f"{settings.worker.metrics_host}:{settings.worker.metrics_port}: "
              f"{err.strerror or err}")
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
@click.option("--no-key", is_flag=True,
              help="Send without keys (default: the join key, and a check that the configured "
                   "mail and DNS topics have as many partitions).")
@click.option("--format", "format_name", default="json", show_default=True,
              type=click.Choice([*MAIL_FORMATS, *DNS_FORMATS[1:]]),
              help="Convert lines of this log format to contract records before sending.")
def produce(topic, files, bootstrap_servers, config_path, speed, no_key, format_name) -> None:
    """Load log FILES (.jsonl, .jsonl.gz, -) into a Kafka topic, line by line.

    Keyed records go into one of the configured input topics (topics.mail, topics.dns) only when
    the other has as many partitions, or does not exist yet (this one is then created with the
    other's count); otherwise exit 2 and nothing is sent.
    """
    from .formats import ADAPTERS, make_adapter
    from .io.files import InputError, LineSource, check_readable
    from .io.clients import topic_problem, unreachable
    from .io.produce import ProduceStopped, produce_files

    settings = _settings(config_path, {("kafka", "bootstrap_servers"): bootstrap_servers})
    problem = topic_problem(topic)
    if problem is not None:
        _fail(f"--topic {problem}")
    if speed is not None and not (speed > 0 and speed != float("inf")):
        _fail(f"--speed must be a positive multiple of real time, got {speed:g}")
    if files.count("-") > 1:
        _fail("standard input (-) can be given only once")
    try:
        for path in files:
            check_readable(path)
            if path != "-":
                LineSource(path, "any").close()        # compressed or encoded as we read?
        down = unreachable(settings.kafka.bootstrap_servers)
    except (OSError, ValueError, InputError) as err:
        _fail(f"{err}; nothing was sent" if isinstance(err, InputError) else str(err))
    if down is not None:
        _fail(f"cannot reach the broker at {settings.kafka.bootstrap_servers} ({down}); "
              "nothing was sent")
    inputs = settings.topics.mail, settings.topics.dns
    if not no_key and topic in inputs and inputs[0] != inputs[1]:
        # Keyed records in topics of different partition counts could never be joined by
        # partition: refuse before sending (README, "Co-partitioning for scale-out").
        from .io.copartition import TopicMetadataError, prepare_keyed_load

        try:
            problem, created = prepare_keyed_load(settings.kafka, *inputs, loading=topic)
        except TopicMetadataError as err:
            _fail(f"{err}; nothing was sent")
        if problem is not None:
            _fail(f"{problem}; nothing was sent")
        if created is not None:
            partner = inputs[1] if topic == inputs[0] else inputs[0]
            click.echo(f"created {topic} with {created} partitions, as many as {partner}",
                       err=True)
    adapter = (make_adapter(format_name, ADAPTERS[format_name].stream)
               if format_name != "json" else None)
    tally = _Rejections(", ".join(files))
    try:
        sent = produce_files(settings.kafka, topic, list(files), speed=speed, keyed=not no_key,
                             adapter=adapter, rejected=tally.add)
    except InputError as err:
        _fail(f"{err}; nothing was sent")
    except ProduceStopped as stopped:
        if not stopped.started:
            _fail(f"{stopped.cause}; nothing was sent")
        _fail(f"{stopped.cause}; {stopped.sent:,} records were sent to {topic} before that "
              "(a re-run sends them again)", EXIT_PARTIAL)
    if adapter is None:
        click.echo(f"produced {sent} records to {topic}", err=True)
    else:
        click.echo(f"produced {sent} records to {topic} ({format_name}); {tally.describe()}",
                   err=True)
        if tally.total and not sent:
            _warn(f"no line of {', '.join(files)} was {format_name}: nothing was sent")


@main.command()
@click.option("--format", "format_name", required=True,
              type=click.Choice([*MAIL_FORMATS[1:], *DNS_FORMATS[1:], "auto-mail", "auto-dns"]),
              help="The file's log format (auto-mail/auto-dns: recognise it).")
@click.argument("file")
def convert(format_name, file) -> None:
    """Print the contract records FILE turns into: what the detector sees of it."""
    from .formats import ADAPTERS, SNIFF_LINES, convert_chunks, make_adapter, scores
    from .io.files import InputError, LineSource, TruncatedInput, check_readable

    try:
        check_readable(file)
        source = LineSource(file, "any")
        if format_name.startswith("auto-"):
            stream = format_name.split("-", 1)[1]
            ranked = scores(source.peek(SNIFF_LINES), stream)
            format_name, score = next(iter(ranked.items()))
            best = ", ".join(f"{name} {value:.2f}" for name, value in list(ranked.items())[:3])
            if score <= 0:
                _fail(f"{file}: no {stream} log format recognised (best scores: {best})")
            if format_name == "json":
                _fail(f"{file} is already in the contract's JSON form (scores: {best}): "
                      "nothing to convert")
            click.echo(f"{file}: {stream} format {format_name} (score {score:.2f})", err=True)
    except (OSError, InputError) as err:
        _fail(str(err))
    except TruncatedInput as err:
        _fail(str(err), EXIT_PARTIAL)
    adapter = make_adapter(format_name, ADAPTERS[format_name].stream)
    assert adapter is not None           # (the contract's own format was refused above)
    output = sys.stdout.buffer
    tally = _Rejections(file)
    records, skipped = 0, 0
    try:
        for batch, numbers in convert_chunks(adapter, source.chunks()):
            output.write(b"".join(record + b"\n" for record in batch.records))
            records += len(batch.records)
            skipped += batch.skipped
            for index, reason in batch.rejected:
                tally.add(reason, numbers[index] if numbers else None)
    except TruncatedInput as err:
        output.flush()
        click.echo(f"{records} records, {skipped} lines skipped, {tally.describe()}", err=True)
        _fail(str(err), EXIT_PARTIAL)
    finally:
        source.close()
    click.echo(f"{records} records, {skipped} lines skipped, {tally.describe()}", err=True)


class _Rejections:
    """Lines rejected by a log format: counts by reason and the first few line numbers, so a
    wrong file gives a short summary instead of a line per input line."""

    EXAMPLES = 5

    def __init__(self, file: str) -> None:
        self.file = file
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []

    def add(self, reason: str, line: int | None) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(f"line {line if line is not None else 'end'} ({reason})")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        if not self.counts:
            return "rejected: none"
        return (f"rejected {self.total:,}: "
                + ", ".join(f"{r} {n:,}" for r, n in sorted(self.counts.items()))
                + f"; first: {', '.join(self.examples)}")


@main.command()
@click.option("--port", type=int, default=9092, show_default=True, help="Loopback port.")
def broker(port) -> None:
    """Run a local Kafka-compatible broker (tansu, memory storage) until Ctrl-C or SIGTERM."""
    import signal
    import time

    from .io.broker import LocalBroker, port_problem

    problem = port_problem(port)
    if problem is not None:
        _fail(f"--port: {problem}")
    local = LocalBroker(port=port)
    try:
        process = local.start().process
    except RuntimeError as err:
        _fail(str(err))
    assert process is not None           # (start() raises when it cannot run it)
    click.echo(local.bootstrap)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        status = process.poll()
        local.stop()
    if status is not None and not stop:
        _fail(f"the broker exited by itself with status {status}")
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

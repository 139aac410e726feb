"""Command line: each command is a few lines over the core and its shells (``detector --help``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from .core.config import ConfigError


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
def replay(mail_paths, dns_paths, out, dead_letter, config_path, state_path) -> None:
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
                             state_path=state_path, progress=progress)
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

    Scenarios: see `detector generate --list` or the README.
    """
    from .synth import SCENARIOS, generate as run_generate

    if scenario not in SCENARIOS:
        _fail(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    Path(outdir).mkdir(parents=True, exist_ok=True)
    summary = run_generate(scenario, Path(outdir), seed=seed, hours=hours)
    click.echo(f"{scenario}: {summary}", err=True)


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


if __name__ == "__main__":
    main()

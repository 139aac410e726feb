"""``detector bench``: the click command (registered by ``detector.cli`` with ``add_command``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import orjson

from ..synth import SCENARIOS
from .harness import SECTIONS, run_bench
from .table import format_report


@click.command()
@click.option("--out-dir", default="bench-out", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Generated inputs (cached here), work files and the last results.")
@click.option("--quick", is_flag=True, help="Small inputs and one repetition (smoke test, CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--only", "sections", multiple=True, type=click.Choice(SECTIONS),
              help="Run only this section (repeatable; default: all).")
@click.option("--repeat", type=click.IntRange(1), help="Timed runs per measurement, best kept "
              "(default 3, quick 1).")
@click.option("--seed", "seeds", multiple=True, type=int,
              help="Seed of the single scenarios in the quality section (repeatable; default "
              "1, 2 and 3; quick 1).")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(list(SCENARIOS)),
              help="Scenario for the quality section (repeatable; default: all).")
@click.option("--latency-runs", type=click.IntRange(1),
              help="Spikes timed for the latency (default 5, quick 1).")
@click.option("--pace", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Event time per wall second while a spike is produced (1 = real time).")
def bench(out_dir, quick, as_json, sections, repeat, seeds, scenarios, latency_runs,
          pace) -> None:
    """Throughput, latency, memory, detection quality and log-format adapters, against baselines.

    Every speed figure is a ratio to a baseline measured in the same run on the same input: the
    bare read of the files, kafka-python's bare consumer, and a naive per-record detector.
    Progress goes to stderr; the table (or JSON) to stdout, and both to OUT_DIR. Each section's
    results are also written to OUT_DIR/bench.partial.json (and .txt) as it ends, so a run that
    stops part-way keeps what it measured; a complete run removes them.
    """
    command = " ".join(["detector bench", *(["--quick"] if quick else []),
                        *(f"--only {s}" for s in sections),
                        *([f"--repeat {repeat}"] if repeat else []),
                        *(f"--seed {s}" for s in seeds),
                        *(f"--scenario {s}" for s in scenarios),
                        *([f"--latency-runs {latency_runs}"] if latency_runs else []),
                        *([f"--pace {pace:g}"] if pace != 10.0 else []),
                        *([f"--out-dir {out_dir}"] if out_dir != "bench-out" else []),
                        *(["--json"] if as_json else [])])
    started = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"bench [{time.monotonic() - started:6.1f} s] {text}", err=True)

    root = Path(out_dir)
    stem = "bench-quick" if quick else "bench"
    partial = [root / f"{stem}.partial.json", root / f"{stem}.partial.txt"]
    for path in partial:              # an earlier run's, stopped: not this run's
        path.unlink(missing_ok=True)

    def measured(so_far: dict) -> None:
        # What a run that stops later (a failure, ^C, a lost machine) still has: the sections
        # measured so far, beside the last complete run's results, which it does not replace.
        write(partial[0], orjson.dumps({**so_far, "partial": True}, option=orjson.OPT_INDENT_2))
        write(partial[1], (format_report(so_far) + "\n").encode())

    try:
        result = run_bench(root, quick=quick, sections=tuple(sections) or SECTIONS,
                           repeat=repeat, seeds=list(seeds) or None,
                           scenarios=tuple(scenarios) or None, latency_runs=latency_runs,
                           latency_pace=pace, command=command, say=say, measured=measured)
    except BaseException:
        if partial[0].exists():
            say(f"stopped: the sections measured so far are in {partial[1]} and {partial[0]}")
        raise
    text = format_report(result)
    write(root / f"{stem}.json", orjson.dumps(result, option=orjson.OPT_INDENT_2))
    write(root / f"{stem}.txt", (text + "\n").encode())
    for path in partial:
        path.unlink(missing_ok=True)
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(text)


def write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)

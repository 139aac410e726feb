"""The benchmark's sections and the run that ties them together (``detector bench``).

- ``replay``: records/s of a replay of the 3-day ``mixed`` scenario against the bare read of the
  same files, and against the naive per-record detector, in alternating fresh processes, best of N.
- ``memory``: peak RSS of replays of ``mixed`` at 1x, 4x and 10x a base length.
- ``quality``: recall, false alarms and detection delay on every scenario, the project's detector
  and the naive one side by side (``evaluate``).
- ``kafka``: see ``detector.bench.kafka``.
- ``formats``: lines/s of every log-format adapter against the bare read of the same file; see
  ``detector.bench.formats``.

Each section returns a JSON-able dict; ``run_bench`` adds the machine and the command.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import orjson

from ..evaluate import evaluate, load_events
from ..synth import SCENARIOS
from .data import Dataset, Spec, ensure, ensure_all

SECTIONS = ("replay", "memory", "quality", "kafka", "formats")
SINGLE_SCENARIOS = tuple(name for name in SCENARIOS if name != "mixed")
#: ``--quick``: inputs small enough for a smoke test; every section still runs for real.
QUICK_SCENARIOS = ("seed-incident", "decoy-volume-surge")
QUICK_SCENARIO_HOURS = 3.25           # events start 2.5 h in: 45 minutes of them
MEMORY_BASE_HOURS = 7.2               # x10 = the 72 h mixed scenario
QUICK_MEMORY_BASE_HOURS = 0.25

Say = Callable[[str], None]


def quiet(_text: str) -> None:
    """A ``say`` that says nothing."""


def run_child(kind: str, args: dict, timeout_s: float = 1800.0) -> dict:
    """One measurement in a fresh interpreter (``detector.bench.child``); its JSON result."""
    done = subprocess.run([sys.executable, "-m", "detector.bench.child", kind,
                           orjson.dumps(args).decode()],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"bench child {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("kafka-python", "crc32c", "confluent-kafka", "river", "numpy", "orjson"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": memory_gib, "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(), "packages": versions}


def mixed_spec(hours: float) -> Spec:
    default = SCENARIOS["mixed"].hours
    return Spec("mixed", 1, None if abs(hours - default) < 1e-9 else hours)


def replay_hours(quick: bool) -> float:
    return 10 * (QUICK_MEMORY_BASE_HOURS if quick else MEMORY_BASE_HOURS)


# ------------------------------------------------------------------------------------- replay

def replay_section(root: Path, work: Path, quick: bool, repeat: int, say: Say = quiet) -> dict:
    """Bare read, replay and naive detector of ``mixed``, alternating, best of ``repeat``."""
    hours = replay_hours(quick)
    dataset = ensure(root, mixed_spec(hours))
    lines = dataset.lines
    mail, dns = str(dataset.mail), str(dataset.dns)
    runs: dict[str, list[dict]] = {"read": [], "replay": [], "naive": []}
    outs = {"replay": str(work / "replay-mixed.jsonl"), "naive": str(work / "naive-mixed.jsonl")}
    for round_no in range(repeat):
        for kind in ("read", "replay", "naive"):
            args = ({"paths": [mail, dns]} if kind == "read"
                    else {"mail": mail, "dns": dns, "out": outs[kind]})
            result = run_child(kind, args)
            runs[kind].append(result)
            say(f"replay round {round_no + 1}/{repeat}: {kind} {lines / result['seconds']:,.0f} "
                f"records/s ({result['seconds']:.1f} s)")
    best = {kind: min(r["seconds"] for r in results) for kind, results in runs.items()}
    rates = {kind: lines / seconds for kind, seconds in best.items()}
    truth = dataset.truth()
    return {
        "scenario": "mixed", "hours": hours, "records": lines, "repeat": repeat,
        "bare_read_rate": rates["read"], "pipeline_rate": rates["replay"],
        "naive_rate": rates["naive"],
        "pipeline_over_bare": best["replay"] / best["read"],
        "pipeline_over_bare_target": 1.5,
        "project_over_naive": rates["replay"] / rates["naive"],
        "seconds": {kind: [r["seconds"] for r in results] for kind, results in runs.items()},
        "replay_max_rss_kib": max(r["max_rss_kib"] for r in runs["replay"]),
        "naive_max_rss_kib": max(r["max_rss_kib"] for r in runs["naive"]),
        "read_max_rss_kib": max(r["max_rss_kib"] for r in runs["read"]),
        "quality": {"project": _score(outs["replay"], truth), "naive": _score(outs["naive"], truth)},
    }


def _score(path: str, truth: dict) -> dict:
    report = evaluate(load_events(path), truth)
    return {key: report[key] for key in ("detected", "total_incidents", "recall",
                                         "false_alarm_count", "median_delay_s", "max_delay_s",
                                         "events_by_state")} | {
        "missed": [row["outcome"] for row in report["incidents"] if not row["detected"]],
        "false_alarms": [f"{a['outcome']} {a['detected_at']}" for a in report["false_alarms"]]}


# ------------------------------------------------------------------------------------- memory

def memory_section(root: Path, work: Path, quick: bool, say: Say = quiet,
                   known: dict[float, int] | None = None) -> dict:
    """Peak RSS of replays of ``mixed`` at 1x, 4x and 10x a base length, in fresh processes.

    ``known`` maps a length in hours to a peak already measured by the same child (the replay
    section's runs of the 10x length), so it is not replayed again.
    """
    base = QUICK_MEMORY_BASE_HOURS if quick else MEMORY_BASE_HOURS
    rows = []
    for factor in (1, 4, 10):
        hours = base * factor
        dataset = ensure(root, mixed_spec(hours))
        peak = (known or {}).get(hours)
        if peak is None:
            result = run_child("replay", {"mail": str(dataset.mail), "dns": str(dataset.dns),
                                          "out": str(work / f"memory-{factor}x.jsonl")})
            peak = result["max_rss_kib"]
        say(f"memory: {factor}x ({hours:g} h, {dataset.lines:,} records) peak RSS {peak / 1024:.0f} MiB")
        rows.append({"factor": factor, "hours": hours, "records": dataset.lines,
                     "max_rss_kib": peak})
    for row in rows:
        row["ratio"] = row["max_rss_kib"] / rows[0]["max_rss_kib"]
    return {"scenario": "mixed", "base_hours": base, "rows": rows, "target_ratio": 1.2}


# ------------------------------------------------------------------------------------ quality

def quality_specs(quick: bool, seeds: list[int]) -> list[Spec]:
    if quick:
        return [Spec(name, seed, QUICK_SCENARIO_HOURS) for name in QUICK_SCENARIOS for seed in seeds]
    return [Spec(name, seed) for name in SINGLE_SCENARIOS for seed in seeds]


def quality_section(root: Path, work: Path, quick: bool, seeds: list[int], workers: int,
                    say: Say = quiet, mixed: dict | None = None) -> dict:
    """Both detectors on every scenario; ``mixed`` is the replay section's run when given.

    Nothing here is timed, so the runs go ``workers`` at a time.
    """
    specs = quality_specs(quick, seeds)
    datasets = ensure_all(root, specs, workers)

    def score(item: tuple[Spec, Dataset]) -> dict:
        spec, dataset = item
        name = f"{spec.scenario}-s{spec.seed}"
        outs = {kind: str(work / f"{kind}-{name}.jsonl") for kind in ("replay", "naive")}
        for kind, out in outs.items():
            run_child(kind, {"mail": str(dataset.mail), "dns": str(dataset.dns), "out": out})
        truth = dataset.truth()
        row = {"scenario": spec.scenario, "seed": spec.seed,
               "hours": spec.hours or SCENARIOS[spec.scenario].hours,
               "incidents": len(truth["incidents"]), "decoys": len(truth["decoys"]),
               "project": _score(outs["replay"], truth), "naive": _score(outs["naive"], truth)}
        say(f"quality: {name}: project {_brief(row['project'])}; naive {_brief(row['naive'])}")
        return row

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(score, zip(specs, datasets)))
    if mixed is not None:
        rows.append({"scenario": "mixed", "seed": 1, "hours": mixed["hours"],
                     "incidents": mixed["quality"]["project"]["total_incidents"],
                     "decoys": None, **mixed["quality"]})
    totals = {}
    for detector in ("project", "naive"):
        reports = [row[detector] for row in rows]
        delays = [r["max_delay_s"] for r in reports if r["max_delay_s"] is not None]
        totals[detector] = {
            "detected": sum(r["detected"] for r in reports),
            "incidents": sum(r["total_incidents"] for r in reports),
            "false_alarms": sum(r["false_alarm_count"] for r in reports),
            "max_delay_s": max(delays) if delays else None,
        }
    return {"seeds": seeds, "rows": rows, "totals": totals}


def _brief(report: dict) -> str:
    return (f"{report['detected']}/{report['total_incidents']} detected, "
            f"{report['false_alarm_count']} false alarms")


# ------------------------------------------------------------------------------------ the run

def run_bench(root: Path, quick: bool = False, sections: tuple[str, ...] = SECTIONS,
              repeat: int | None = None, seeds: list[int] | None = None,
              latency_runs: int | None = None, latency_pace: float = 10.0,
              command: str = "detector bench", say: Say = quiet) -> dict:
    """Every requested section; the result is what ``--json`` prints."""
    root = Path(root)
    work = root / ("work-quick" if quick else "work")
    work.mkdir(parents=True, exist_ok=True)
    repeat = repeat or (1 if quick else 3)
    seeds = seeds or [1]
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    started = time.monotonic()
    result: dict = {"command": command, "machine": machine(), "quick": quick,
                    "data_dir": str(root)}
    # Generate everything first (in parallel; nothing is timed yet) so that the timed sections
    # run on a quiet machine.
    specs = [mixed_spec(replay_hours(quick))] if "replay" in sections else []
    if "memory" in sections:
        base = QUICK_MEMORY_BASE_HOURS if quick else MEMORY_BASE_HOURS
        specs += [mixed_spec(base * f) for f in (1, 4, 10)]
    if "quality" in sections:
        specs += quality_specs(quick, seeds)
    unique = list(dict.fromkeys(specs))
    say(f"inputs: {len(unique)} scenarios under {root / 'data'} (generated when missing)")
    ensure_all(root, unique, workers)
    if "formats" in sections:
        from .formats import LINES, QUICK_LINES, ensure_inputs

        paths = ensure_inputs(root, QUICK_LINES if quick else LINES)
        say(f"inputs: {len(paths)} log-format files under {root / 'data'} (built when missing)")
    if "replay" in sections:
        result["replay"] = replay_section(root, work, quick, repeat, say)
    if "memory" in sections:
        known = ({replay_hours(quick): result["replay"]["replay_max_rss_kib"]}
                 if "replay" in result else None)
        result["memory"] = memory_section(root, work, quick, say, known)
    if "kafka" in sections:
        from .kafka import kafka_section

        result["kafka"] = kafka_section(root, work, quick, repeat,
                                        latency_runs or (1 if quick else 5), latency_pace, say)
    if "formats" in sections:
        from .formats import formats_section

        result["formats"] = formats_section(root, quick, repeat, say)
    if "quality" in sections:
        result["quality"] = quality_section(root, work, quick, seeds, workers, say,
                                            result.get("replay"))
    result["seconds"] = round(time.monotonic() - started, 1)
    return result

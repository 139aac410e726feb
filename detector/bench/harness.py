"""The benchmark's sections and the run that ties them together (``detector bench``).

- ``replay``: records/s of a replay of the 3-day ``mixed`` scenario against the bare read of the
  same files, and against the naive per-record detector, in alternating fresh processes, best of N.
- ``memory``: peak RSS of replays of ``mixed`` at 1x, 4x and 10x a base length.
- ``quality``: recall, false alarms, wrong-outcome opens and detection delay on every scenario,
  several seeds each, the project's detector and the naive one side by side (``evaluate``).
- ``kafka``: see ``detector.bench.kafka``.
- ``formats``: lines/s of every log-format adapter against the bare read of the same file; see
  ``detector.bench.formats``.

Each section returns a JSON-able dict; ``run_bench`` adds the machine and the command.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import orjson

from ..evaluate import KTH_FAILURE, evaluate, load_events
from ..synth import SCENARIOS
from .data import Dataset, Spec, ensure, ensure_all

SECTIONS = ("replay", "memory", "quality", "kafka", "formats")
SINGLE_SCENARIOS = tuple(name for name in SCENARIOS if name != "mixed")
#: Seeds of the single scenarios in the quality section (``mixed`` is the replay's input, seed 1).
SEEDS = (1, 2, 3)
#: ``--quick``: inputs small enough for a smoke test; every section still runs for real. The
#: quality section runs every scenario with one seed, each cut 45 minutes after its last event
#: starts (2.5 h of warm-up stay).
QUICK_SEEDS = (1,)
QUICK_AFTER_LAST_EVENT_H = 0.75
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
    versions: dict[str, str | None] = {}
    for package in ("kafka-python", "crc32c", "confluent-kafka", "river", "numpy", "orjson",
                    "msgspec", "isal"):
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
        "quality": score_run(Spec("mixed"), hours, truth, outs),
    }


def score_run(spec: Spec, hours: float, truth: dict, outs: dict[str, str]) -> dict:
    """One scenario and seed, both detectors' events (``outs``: the replay's and the naive
    detector's files) evaluated against its truth."""
    project, naive = (evaluate(load_events(outs[kind]), truth) for kind in ("replay", "naive"))
    return {"scenario": spec.scenario, "seed": spec.seed, "hours": hours,
            "incidents": len(truth["incidents"]), "decoys": len(truth.get("decoys", [])),
            "kth_failures_s": [row["kth_failure_s"] for row in project["incidents"]
                               if row["kth_failure_s"] is not None],
            "project": _score(project), "naive": _score(naive)}


def _score(report: dict) -> dict:
    return {key: report[key] for key in ("detected", "total_incidents", "recall",
                                         "false_alarm_count", "wrong_outcome_count",
                                         "median_delay_s", "max_delay_s", "events_by_state")} | {
        "delays_s": [row["delay_s"] for row in report["incidents"] if row["detected"]],
        "missed": [f"{row['outcome']} {row['start']}" for row in report["incidents"]
                   if not row["detected"]],
        "false_alarms": [f"{a['outcome']} {a['detected_at']}" for a in report["false_alarms"]],
        "wrong_outcome": [f"{w['outcome']} {w['detected_at']} (during {', '.join(w['expected'])})"
                          for w in report["wrong_outcome"]]}


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

def quick_hours(scenario: str) -> float:
    """A scenario's length in ``--quick``: up to 45 minutes after its last event starts."""
    spec = SCENARIOS[scenario]
    last = max(event.offset for event in spec.events).total_seconds() / 3600
    return min(spec.hours, last + QUICK_AFTER_LAST_EVENT_H)


def quality_specs(quick: bool, seeds: list[int],
                  scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> list[Spec]:
    """The single scenarios with every seed, then ``mixed`` (if asked) as the replay reads it."""
    specs = [Spec(name, seed, quick_hours(name) if quick else None)
             for name in SINGLE_SCENARIOS if name in scenarios for seed in seeds]
    return specs + ([mixed_spec(replay_hours(quick))] if "mixed" in scenarios else [])


def quality_section(root: Path, work: Path, quick: bool, seeds: list[int], workers: int,
                    say: Say = quiet, mixed: dict | None = None,
                    scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> dict:
    """Both detectors on the scenarios (default: all) with every seed; ``mixed`` is the replay
    section's run when given (otherwise its input is replayed here). Runs are summed up per
    scenario and in total.

    Nothing here is timed, so the runs go ``workers`` at a time.
    """
    replayed = mixed is not None and "mixed" in scenarios
    specs = quality_specs(quick, seeds, tuple(n for n in scenarios if n != "mixed" or not replayed))
    datasets = ensure_all(root, specs, workers)

    def run(item: tuple[Spec, Dataset]) -> dict:
        spec, dataset = item
        name = f"{spec.scenario}-s{spec.seed}"
        outs = {kind: str(work / f"{kind}-{name}.jsonl") for kind in ("replay", "naive")}
        for kind, out in outs.items():
            run_child(kind, {"mail": str(dataset.mail), "dns": str(dataset.dns), "out": out})
        hours = spec.hours or SCENARIOS[spec.scenario].hours
        result = score_run(spec, hours, dataset.truth(), outs)
        say(f"quality: {name}: project {_brief(result['project'])}; "
            f"naive {_brief(result['naive'])}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        runs = list(pool.map(run, zip(specs, datasets)))
    if replayed:
        assert mixed is not None
        runs.append(mixed["quality"])
    rows = [{"scenario": name, **summarize([r for r in runs if r["scenario"] == name])}
            for name in dict.fromkeys(r["scenario"] for r in runs)]
    return {"scenarios": list(scenarios), "seeds": seeds, "kth_failure": KTH_FAILURE,
            "quick_after_last_event_h": QUICK_AFTER_LAST_EVENT_H if quick else None,
            "rows": rows, "totals": {"scenario": "total", **summarize(runs)}, "runs": runs}


def summarize(runs: list[dict]) -> dict:
    """Runs summed up: counts added, delays and k-th-failure times pooled over their incidents."""
    kth = [s for r in runs for s in r["kth_failures_s"]]
    summary = {"runs": len(runs), "seeds": sorted({r["seed"] for r in runs}),
               "hours": sorted({r["hours"] for r in runs}),
               "incidents": sum(r["incidents"] for r in runs),
               "decoys": sum(r["decoys"] for r in runs),
               "median_kth_failure_s": statistics.median(kth) if kth else None}
    for detector in ("project", "naive"):
        scores = [r[detector] for r in runs]
        delays = [d for s in scores for d in s["delays_s"]]
        summary[detector] = {
            **{key: sum(s[key] for s in scores) for key in ("detected", "total_incidents",
                                                            "false_alarm_count",
                                                            "wrong_outcome_count")},
            "median_delay_s": statistics.median(delays) if delays else None,
            "max_delay_s": max(delays) if delays else None}
    return summary


def _brief(report: dict) -> str:
    return (f"{report['detected']}/{report['total_incidents']} detected, "
            f"{report['false_alarm_count']} false alarms, "
            f"{report['wrong_outcome_count']} wrong-outcome opens")


# ------------------------------------------------------------------------------------ the run

def run_bench(root: Path, quick: bool = False, sections: tuple[str, ...] = SECTIONS,
              repeat: int | None = None, seeds: list[int] | None = None,
              scenarios: tuple[str, ...] | None = None,
              latency_runs: int | None = None, latency_pace: float = 10.0,
              command: str = "detector bench", say: Say = quiet,
              measured: Callable[[dict], None] | None = None) -> dict:
    """Every requested section; the result is what ``--json`` prints. ``measured`` is called
    with the result so far after each section, so a run that stops part-way keeps them."""
    root = Path(root)
    work = root / ("work-quick" if quick else "work")
    work.mkdir(parents=True, exist_ok=True)
    repeat = repeat or (1 if quick else 3)
    seeds = seeds or list(QUICK_SEEDS if quick else SEEDS)
    scenarios = scenarios or tuple(SCENARIOS)
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
        specs += quality_specs(quick, seeds, scenarios)
    unique = list(dict.fromkeys(specs))
    say(f"inputs: {len(unique)} scenarios under {root / 'data'} (generated when missing)")
    ensure_all(root, unique, workers)
    if "formats" in sections:
        from .formats import LINES, QUICK_LINES, ensure_inputs

        paths = ensure_inputs(root, QUICK_LINES if quick else LINES)
        say(f"inputs: {len(paths)} log-format files under {root / 'data'} (built when missing)")

    def done(so_far: dict) -> None:
        if measured is not None:
            measured({**so_far, "seconds": round(time.monotonic() - started, 1)})

    if "replay" in sections:
        result["replay"] = replay_section(root, work, quick, repeat, say)
        done(result)
    if "memory" in sections:
        known = ({replay_hours(quick): result["replay"]["replay_max_rss_kib"]}
                 if "replay" in result else None)
        result["memory"] = memory_section(root, work, quick, say, known)
        done(result)
    if "kafka" in sections:
        from .kafka import kafka_section

        result["kafka"] = kafka_section(root, work, quick, repeat,
                                        latency_runs or (1 if quick else 5), latency_pace, say,
                                        mixed_spec(replay_hours(quick)))
        done(result)
    if "formats" in sections:
        from .formats import formats_section

        result["formats"] = formats_section(root, quick, repeat, say)
        done(result)
    if "quality" in sections:
        result["quality"] = quality_section(root, work, quick, seeds, workers, say,
                                            result.get("replay"), scenarios)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result

"""The benchmark's result as plain, aligned text: what ``detector bench`` prints without ``--json``.

>>> print(aligned([("what", "records/s"), ("bare read", "442,311"), ("replay", "60,573")]))
what       records/s
bare read    442,311
replay        60,573
"""

from __future__ import annotations

import re
import textwrap

from ..synth import SCENARIOS

_NUMERIC = re.compile(r"^([-+]?[\d,.]+\s*(x|%|s|MiB)?|-)$")


def aligned(rows: list[tuple], indent: str = "") -> str:
    """Rows of cells as columns; cells that read as numbers are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]
    lines = []
    for n, row in enumerate(cells):
        parts = [cell.rjust(widths[i]) if n and _NUMERIC.match(cell) else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(parts)).rstrip())
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _seconds(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def format_report(result: dict) -> str:
    m = result["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items() if version)
    out = [
        f"detector bench{' (quick)' if result['quick'] else ''}",
        f"  command:  {result['command']}",
        f"  machine:  {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB; {m['implementation']} {m['python']} on {m['platform']}",
        f"  packages: {packages}",
        f"  inputs:   {result['data_dir']}/data (generated once, cached); "
        f"run took {result['seconds']:.0f} s",
    ]
    if "replay" in result:
        out += ["", *_replay(result["replay"])]
    if "kafka" in result:
        out += ["", *_kafka(result["kafka"])]
    if "memory" in result:
        out += ["", *_memory(result["memory"])]
    if "quality" in result:
        out += ["", *_quality(result["quality"], result.get("replay"))]
    if "formats" in result:
        out += ["", *_formats(result["formats"])]
    return "\n".join(out)


def _replay(r: dict) -> list[str]:
    slowdown = r["pipeline_over_bare"]
    rows = [
        ("", "records/s", "vs bare read", "target", ""),
        ("bare read: gzip + orjson.loads per line", _rate(r["bare_read_rate"]), "1.00x", "", ""),
        ("replay: the full pipeline, events to a file", _rate(r["pipeline_rate"]),
         f"{slowdown:.2f}x", f"<= {r['pipeline_over_bare_target']}x",
         _verdict(slowdown <= r["pipeline_over_bare_target"])),
        ("naive per-record detector (bench/naive.py)", _rate(r["naive_rate"]),
         f"{r['bare_read_rate'] / r['naive_rate']:.2f}x", "", ""),
    ]
    return [f"1. Replay throughput: mixed, {r['hours']:g} h, {r['records']:,} records; "
            f"best of {r['repeat']}, each in a fresh process, alternating",
            aligned(rows, "  "),
            f"  'vs bare read' is time per record relative to the bare read. Project / naive "
            f"throughput: {r['project_over_naive']:.2f}x "
            f"({'project faster' if r['project_over_naive'] >= 1 else 'naive faster'})."]


def _kafka(k: dict) -> list[str]:
    t = k["throughput"]
    best, cpu, default = t["best_s"], t["cpu_s"], t["default_transport"]
    clean = sum(c["detected"] == c["incidents"] and not c["false_alarms"]
                for c in t["worker_detection"])
    over_ck = t["worker_over_confluent_target"]
    over_kp = t["worker_over_bare_target"]

    def row(label: str, name: str, targets: bool = False) -> tuple:
        seconds = best[name]
        vs_ck, vs_kp = best["bare_confluent"] / seconds, best["bare"] / seconds
        return (label, f"{seconds:.1f} s", f"{cpu[name]:.1f} s", _rate(t["records"] / seconds),
                f"{vs_ck:.2f}", f">= {over_ck}" if targets else "",
                _verdict(vs_ck >= over_ck) if targets else "",
                f"{vs_kp:.2f}", f">= {over_kp}" if targets else "",
                _verdict(vs_kp >= over_kp) if targets else "")

    rows = [("", "wall", "CPU", "records/s", "vs confluent", "target", "", "vs kafka-python",
             "target", ""),
            row("confluent-kafka bare consumer", "bare_confluent"),
            row("kafka-python bare consumer (poll, crc32c)", "bare"),
            row("replay of the same files (no Kafka)", "replay"),
            row(f"worker, transport {default} (the default)", default, targets=True),
            *(row(f"worker, transport {name}", name) for name in best
              if name not in ("bare", "bare_confluent", "replay", default))]
    load = t["loading"]
    lines = [f"2. Through Kafka (local tansu broker): {k['scenario']}, {k['hours']:g} h, "
             f"{t['records']:,} records produced at {_rate(t['produce_rate'])} records/s "
             f"(detector produce); best of {t['repeat']}, each in a fresh process, alternating",
             f"  Loading {load['records']:,} records (the first {load['lines_per_file']:,} lines "
             f"of each file, at most): detector produce (librdkafka) {_rate(load['rate'])} "
             f"records/s, kafka-python's producer "
             f"as produce used it before {_rate(load['kafka_python_rate'])} records/s "
             f"({load['speedup']:.1f}x)",
             "  Each timed from its start, the group join included, until it holds every record, "
             "or for a worker until its group has committed the end offsets; CPU: user + system "
             "of the process, every thread:",
             aligned(rows, "  ")]
    ratio, target = t["worker_over_consume_and_replay"], t["worker_over_consume_and_replay_target"]
    lines.append(f"  The default worker against bare confluent consume + replay: "
                 f"{best[default]:.1f} / ({best['bare_confluent']:.1f} + {best['replay']:.1f}) s "
                 f"= {ratio:.2f}x  (target <= {target}x: {_verdict(ratio <= target)}; what "
                 f"the worker adds around the core: transport, alignment, checkpoints, writes)")
    lines.append(f"  The workers' events, read back and evaluated: {clean} of "
                 f"{len(t['worker_detection'])} runs "
                 + ("detected every incident and raised no false alarm."
                    if any(c["incidents"] for c in t["worker_detection"])
                    else "raised no false alarm (the input holds no incident)."))
    for lat in (k["latency"], k.get("latency_kafka_python")):
        if lat is not None:
            lines += _latency(lat, k.get("latency_scenario", "seed-incident"))
    return lines


def _latency(lat: dict, scenario: str) -> list[str]:
    lines = []
    transport = lat.get("transport", "kafka-python")
    if lat["n"]:
        rows: list[tuple[str, ...]] = [("", "p50", "p99", "max")]
        for name, label, digits in (
                ("wall_s", f"wall clock, records produced at {lat['pace']:g}x real time", 2),
                ("detection_delay_s", "  detection delay (event time, in detected_at)", 0),
                ("overhead_s", "  overhead: watermark passed to open event read", 3),
                ("worker_s", "    in the worker: record acked to event sent", 3),
                ("read_back_s", "    way back: event sent to event read", 3),
                ("projected_real_time_s", "real time: delay + lateness + overhead", 1)):
            stats = lat.get(name)
            rows.append((label, *(_seconds(stats[q] if stats else None, digits)
                                  for q in ("p50", "p99", "max"))))
        lines += [f"  Latency, transport {transport}, {scenario}: from a spike's first record "
                  f"produced to its open event on the anomalies topic ({lat['n']} runs, "
                  f"{lat['missed']} missed; "
                  f"the watermark adds the {lat['lateness_s']:g} s allowed lateness):",
                  aligned(rows, "  ")]
    else:
        lines.append(f"  Latency, transport {transport}: no open event was read in any run.")
    return lines


def _memory(mem: dict) -> list[str]:
    rows = [("length", "records", "peak RSS", "vs 1x", "target", "")]
    for row in mem["rows"]:
        ok = row["ratio"] <= mem["target_ratio"]
        rows.append((f"{row['factor']}x ({row['hours']:g} h)", f"{row['records']:,}",
                     f"{row['max_rss_kib'] / 1024:.0f} MiB", f"{row['ratio']:.2f}x",
                     f"<= {mem['target_ratio']}x" if row["factor"] > 1 else "",
                     _verdict(ok) if row["factor"] > 1 else ""))
    return [f"3. Memory: peak RSS of a replay of mixed at 1x, 4x and 10x {mem['base_hours']:g} h, "
            f"each in a fresh process (interpreter and libraries included)",
            aligned(rows, "  "),
            "  Each length starts at the scenario's start (midnight): memory follows the busiest "
            "minutes' traffic, not the length."]


def _quality(q: dict, replay: dict | None) -> list[str]:
    k = q["kth_failure"]
    scenarios = [*q["rows"], q["totals"]]
    project: list[tuple[str, ...]] = [("scenario", "runs", "incidents", "detected", "false", "wrong", "median", "max",
                f"{k}th fail")]
    project += [(_scenario(row), str(row["runs"]), str(row["incidents"]), *_scored(row["project"]),
                 _seconds(row["median_kth_failure_s"])) for row in scenarios]
    naive: list[tuple[str, ...]] = [("scenario", "detected", "false", "wrong", "median", "max")]
    naive += [(_scenario(row), *_scored(row["naive"])) for row in scenarios]
    quick = q.get("quick_after_last_event_h")
    every = len(q["scenarios"]) == len(SCENARIOS)
    lines = [f"4. Detection quality: {'every scenario' if every else 'the scenarios asked'}, seed "
             f"{', '.join(map(str, q['seeds']))}"
             + (" (mixed: seed 1, the input of section 1)" if "mixed" in q["scenarios"] else ""),
             *(_wrapped(f"Quick: each scenario cut {quick * 60:g} min after its last event "
                        "starts.") if quick else []),
             aligned(project, "  "),
             *_wrapped(f"false = false alarms; wrong = wrong-outcome opens (an open during an "
                       f"incident that blames another outcome); median, max = detection delay, "
                       f"detected_at - incident start (event time); {k}th fail = median time "
                       f"from an incident's start to its {k}th OTP failure, over the incidents "
                       f"whose truth lists their first failures: a detector that needs "
                       f"alerts.min_failures = {k} cannot open before it.")]
    for what, key in (("missed", "missed"), ("false alarms", "false_alarms"),
                      ("wrong-outcome opens", "wrong_outcome")):
        found = [f"{run['scenario']} s{run['seed']} {item}" for run in q["runs"]
                 for item in run["project"][key]]
        if found:
            lines += _wrapped(f"Project {what}: {'; '.join(found)}.")
    lines += ["", "5. Against the naive per-record detector (bench/naive.py), on the same inputs",
              aligned(naive, "  "),
              *_wrapped("Its false alarms and wrong-outcome opens are listed in the JSON (--json, "
                        "bench.json).")]
    if replay is not None:
        lines += _wrapped(f"Throughput on the same input (section 1): project "
                          f"{_rate(replay['pipeline_rate'])} records/s, naive "
                          f"{_rate(replay['naive_rate'])} records/s: project / naive = "
                          f"{replay['project_over_naive']:.2f}x.")
    return lines


def _wrapped(text: str) -> list[str]:
    """A note under a table: indented, at most 100 columns."""
    return textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="  ",
                         break_on_hyphens=False)


def _scenario(row: dict) -> str:
    if row["scenario"] == "mixed":
        return f"mixed ({', '.join(f'{h:g}' for h in row['hours'])} h)"
    return row["scenario"]


def _scored(score: dict) -> tuple[str, ...]:
    """detected, false alarms, wrong-outcome opens, median and max delay of a detector's summary."""
    return (f"{score['detected']}/{score['total_incidents']}", str(score["false_alarm_count"]),
            str(score["wrong_outcome_count"]), _seconds(score["median_delay_s"]),
            _seconds(score["max_delay_s"]))


def _formats(f: dict) -> list[str]:
    rows = [("format", "stream", "lines", "records", "skipped", "rejected", "bare read lines/s",
             "adapter lines/s", "records/s", "vs bare read")]
    for row in f["rows"]:
        rows.append((row["format"], row["stream"], f"{row['lines']:,}", f"{row['records']:,}",
                     f"{row['skipped']:,}", f"{row['rejected']:,}", _rate(row["bare_read_rate"]),
                     _rate(row["adapter_rate"]), _rate(row["records_rate"]),
                     f"{row['adapter_over_bare']:.1f}x"))
    lines = [f"6. Log-format adapters: each format's samples (tests/fixtures/formats) repeated to "
             f"~{f['target_lines']:,} lines, {f['step_s']} s later each time; best of "
             f"{f['repeat']}, each in a fresh process, alternating",
             aligned(rows, "  "),
             "  'vs bare read' is time per line of the read plus feed() and flush(), relative to "
             "the bare read of the same file (LineSource chunks, nothing else)."]
    reasons = [f"{row['format']} " + ", ".join(f"{reason} {count:,}" for reason, count
                                                in sorted(row["rejected_reasons"].items()))
               for row in f["rows"] if row["rejected_reasons"]]
    if reasons:
        lines.append(f"  Rejected (the samples' deliberate bad lines): {'; '.join(reasons)}.")
    return lines

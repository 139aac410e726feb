"""What the worker's metrics cost, against the core's own work on the same batches.

The worker feeds the core a batch per partition and polls in steps (a step: one poll's batches).
Its metrics (``detector/worker_metrics.py``, prometheus_client) add, per fed batch, the records
consumed to one counter, and per step read the core's counters once (``observe_core``: one
``Detector.stats()`` and the differences since the last reading) and set the gauges. This script
feeds the seed-incident scenario (6 h, 370 k records) through a ``Detector`` in such steps and
times, in the same pass, the core's ``feed`` and each way of keeping the metrics:

- ``per step (chosen)``: what the worker does, described above;
- ``per batch, prometheus_client``: ``Detector.stats()`` before and after each batch and the
  differences added to prometheus_client counters (the worker's design before this one);
- ``per batch, custom collector``: the same differences added to plain dicts, which a
  ``Collector`` would turn into metric families at scrape time (no prometheus_client call on
  the worker's thread).

It also times one scrape (``generate_latest``) of the worker's registry. Each figure is the best
of ``--repeat`` passes; the ratio is to the core's ``feed`` time for the same batches.

    .venv/bin/python benchmarks/metrics_overhead.py             # ~15 s on 2 cores
    .venv/bin/python benchmarks/metrics_overhead.py --batch 200 # smaller batches: a quiet stream
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import generate_latest

from detector.core.pipeline import DNS, MAIL, Detector
from detector.worker_metrics import WorkerMetrics

TOPIC = {MAIL: "mail-flow", DNS: "dns-resolver"}


def scenario(directory: Path) -> dict[str, list[bytes]]:
    subprocess.run([sys.executable, "-m", "detector.cli", "generate", "seed-incident",
                    str(directory), "--seed", "1"], check=True, capture_output=True)
    return {stream: gzip.decompress((directory / f"{stream}.jsonl.gz").read_bytes()).splitlines()
            for stream in (MAIL, DNS)}


def steps(lines: dict[str, list[bytes]], batch: int):
    """One DNS and one mail batch per step, the streams kept level in event time."""
    mail, dns = lines[MAIL], lines[DNS]
    dns_per_mail = len(dns) / len(mail)
    for at in range(0, len(mail), batch):
        low, high = int(at * dns_per_mail), int((at + batch) * dns_per_mail)
        yield [(DNS, dns[low:high]), (MAIL, mail[at:at + batch])]


def add_differences(before: dict, after: dict, metrics: WorkerMetrics) -> None:
    """The previous design: each batch's differences straight into prometheus_client, the
    labelled series looked up at each addition."""
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta > 0 and (counter := metrics._counter_for(key)) is not None:
            counter.inc(delta)


def tally_differences(before: dict, after: dict, totals: dict) -> None:
    """A custom collector's worker side: the same differences into a plain dict."""
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta > 0:
            totals[key] = totals.get(key, 0) + delta


def one_pass(lines: dict[str, list[bytes]], batch: int) -> dict[str, float]:
    clock = time.perf_counter
    spent = dict.fromkeys(("feed", "chosen", "observe_core", "stats before/after",
                           "prometheus_client", "collector"), 0.0)
    chosen, previous, totals = WorkerMetrics(), WorkerMetrics(), {}
    detector = Detector()
    detector.add_source(MAIL)
    detector.add_source(DNS)
    chosen.follow(detector)
    batches = records = steps_fed = 0
    for step in steps(lines, batch):
        steps_fed += 1
        for stream, values in step:
            if not values:
                continue
            t0 = clock()
            before = detector.stats()
            t1 = clock()
            detector.feed(stream, values, source=stream)
            t2 = clock()
            after = detector.stats()
            t3 = clock()
            chosen.consumed(TOPIC[stream], len(values))
            t4 = clock()
            add_differences(before, after, previous)
            previous.records.labels(topic=TOPIC[stream]).inc(len(values))
            t5 = clock()
            tally_differences(before, after, totals)
            totals[TOPIC[stream]] = totals.get(TOPIC[stream], 0) + len(values)
            t6 = clock()
            spent["feed"] += t2 - t1
            spent["stats before/after"] += (t1 - t0) + (t3 - t2)
            spent["chosen"] += t4 - t3
            spent["prometheus_client"] += t5 - t4
            spent["collector"] += t6 - t5
            batches += 1
            records += len(values)
        t0 = clock()
        chosen.observe_core()
        spent["observe_core"] += clock() - t0
    t0 = clock()
    generate_latest(chosen.registry)
    spent["scrape"] = clock() - t0
    spent["batches"], spent["records"], spent["steps"] = batches, records, steps_fed
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="mail records per batch")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        lines = scenario(Path(directory))
    runs = [one_pass(lines, args.batch) for _ in range(args.repeat)]
    best = {key: min(run[key] for run in runs) for key in runs[0]}
    batches, records, steps = runs[0]["batches"], runs[0]["records"], runs[0]["steps"]
    feed = best["feed"]
    print(f"metrics overhead: seed-incident, {records:,} records in {batches:,} batches "
          f"({records / batches:,.0f} a batch, two a step), best of {args.repeat}")
    print(f"  {'':42} {'us/batch':>9} {'ns/record':>10} {'of feed':>8}")
    rows = [("core: Detector.feed (the baseline)", feed),
            ("per step (chosen)", best["chosen"] + best["observe_core"]),
            ("per batch, prometheus_client", best["stats before/after"] + best["prometheus_client"]),
            ("per batch, custom collector", best["stats before/after"] + best["collector"])]
    for name, seconds in rows:
        print(f"  {name:42} {seconds / batches * 1e6:9.1f} {seconds / records * 1e9:10.1f} "
              f"{seconds / feed:8.2%}")
    print(f"  (chosen: {best['observe_core'] / steps * 1e6:.1f} us a step for observe_core, "
          f"{best['chosen'] / batches * 1e6:.1f} us a batch for the records consumed; "
          f"the others: {best['stats before/after'] / batches * 1e6:.1f} us a batch for "
          f"Detector.stats() before and after it)")
    print(f"  one scrape (generate_latest of the worker's registry): {best['scrape'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

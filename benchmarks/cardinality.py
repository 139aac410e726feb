"""Peak memory against input length and name cardinality: flat, because the detector's state is
bounded by event time (and by caps), never by how much it has read or how many names it has seen.

The core keeps only recent state, by design: resolver records for the join (30 s before a
delivery, 5 s after, plus 10 s of allowed lateness: ~45 s of the DNS stream), deliveries waiting
for their join (~15 s), (message_id, status) pairs for de-duplication (10 minutes), the last
15 minutes of 10-second steps, and per open anomaly at most 100 values per evidence field. Every
store is also capped by count (``join.max_buffered_dns``, ``clock.dedup_max_entries``), and
evictions are counted. So at a given *rate* of traffic, memory should not depend on how long the
input is, nor on how many distinct query names, sender domains and tenants it holds.

Three cases, each generated in-process and streamed straight into a ``Detector`` (nothing on disk)
in a fresh interpreter, whose peak RSS (``ru_maxrss``) it prints:

- ``base``: ``N`` records (half mail, half DNS) over 40 minutes of event time, names drawn from
  ``K`` distinct query names / sender domains and ``K`` tenants;
- ``long``: 10x the records at the same rate (10x the event time: 6.7 hours), the same ``K`` names;
- ``wide``: 10x the records and 100x the distinct names (``100 K``).

The rate is the same in every case, so the live window holds the same number of records; what
changes is how much the detector has read and how many names went through it. Message ids are
distinct in every record of every case (as in real logs), so the de-duplication set always sees
one new id per delivery. 40 minutes is more than the de-duplication horizon and the long window,
so ``base`` already runs at its steady state (and past the model's 30-minute warm-up: each 40
minutes hold a 5-minute SERVFAIL incident on a third of the OTP senders, so anomalies open and
resolve and their evidence fills with the many names). Peak RSS includes the interpreter, numpy
and river (``after imports``); the criterion is peak RSS within 20 % of ``base``. ``RSS half/end``
is the resident memory half-way through a case and at its end: equal when nothing still grows.
The table also gives the peaks of the detector's own gauges (resolver records buffered,
de-duplication entries, deliveries waiting for their join), the eviction counters, and the sender
slices watched and replaced (Space-Saving keeps at most ``slices.sender_capacity`` of them
however many senders there are: with 100x the names most of the tail is replaced over and over,
at no cost in memory). The default
caps are far above what this rate needs, so evictions are 0: the state is bounded by event time,
and the caps are the backstop for floods (``tests/test_hostile.py`` checks those).

    .venv/bin/python benchmarks/cardinality.py            # the table (~70 s on 2 cores)
    .venv/bin/python benchmarks/cardinality.py --json     # the same as JSON
    .venv/bin/python benchmarks/cardinality.py --scale 0.2   # smaller inputs, a smoke run

The results are also written to ``bench-out/cardinality/cardinality.{txt,json}``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

T0 = 1795737600.0                 # 2026-11-27T00:00:00Z
BASE_RECORDS = 300_000            # mail + DNS
BASE_NAMES = 1_000
BASE_SPAN_S = 40 * 60
BATCH_S = 10                      # event time per fed batch (a replay chunk, a poll)
CYCLE_S = 40 * 60                 # one incident per 40 minutes of event time ...
INCIDENT = (32 * 60, 37 * 60)     # ... from minute 32 to minute 37 of each cycle
CASES = {                         # name: (length factor, name factor)
    "base": (1, 1),
    "long": (10, 1),
    "wide": (10, 100),
}
FLAT_WITHIN = 0.20
MIB = 1024.0                      # ru_maxrss is in KiB on Linux


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_mib() -> float | None:
    """Resident memory now (Linux), to show whether it still climbs late in a run."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)


def batches(records: int, names: int):
    """``(dns_lines, mail_lines)`` per ``BATCH_S`` of event time, at the same rate in every case.

    Each delivery's SPF lookup is in the resolver log half a second before it; name ``n`` of a
    delivery is spread over ``range(names)`` by a multiplicative hash, so every name recurs
    throughout the input. Half the mail is OTP (a ``verify@`` sender), half is not.
    """
    deliveries = records // 2
    rate = BASE_RECORDS / 2 / BASE_SPAN_S
    per_batch = int(rate * BATCH_S)
    dumps = orjson.dumps
    for first in range(0, deliveries, per_batch):
        dns, mail = [], []
        for j in range(first, min(first + per_batch, deliveries)):
            ts = T0 + j / rate
            n = (j * 2654435761) % names
            domain = f"s{n}.example"
            server = f"mx{j % 8}.mail.example"
            otp = j % 2 == 0
            in_incident = INCIDENT[0] <= (ts - T0) % CYCLE_S < INCIDENT[1]
            broken = otp and in_incident and n % 3 == 0
            failed = broken or j % 97 == 0
            dns.append(dumps({"ts": ts - 0.5, "qname": domain, "qtype": "TXT",
                              "rcode": "SERVFAIL" if broken else "NOERROR",
                              "answers": 0 if broken else 1, "resolver": f"res-{j % 4}.dns.example",
                              "client": server}))
            mail.append(dumps({
                "ts": ts, "message_id": f"<{j}.{n}@{server}>",
                "status": "deferred" if broken else "failed" if failed else "delivered",
                "sender": f"{'verify' if otp else 'news'}@{domain}",
                "recipient": f"user{j % 5000}@t{(n * 7) % names}.example",
                "tenant": f"t{(n * 7) % names}.example", "server": server, "direction": "inbound",
                "status_code": "4.4.3" if broken else "5.2.2" if failed else "2.0.0",
                "dns_lookups": [{"qname": domain, "qtype": "TXT"}]}))
        yield dns, mail


def run_case(name: str, scale: float) -> dict:
    """One case in this process: generate, feed, and report the peak RSS and the detector's gauges."""
    from detector.core.pipeline import Detector

    length, width = CASES[name]
    records = int(BASE_RECORDS * scale) * length
    names = max(1, int(BASE_NAMES * scale)) * width
    detector = Detector()
    detector.add_source("mail")
    detector.add_source("dns")
    rss_after_imports = max_rss_kib()
    started = time.perf_counter()
    peaks = {"dns_buffered": 0, "dedup_entries": 0, "pending_deliveries": 0}
    events = 0
    fed = 0
    rss_mid = None
    for dns, mail in batches(records, names):
        events += len(detector.feed("dns", dns, source="dns").events)
        events += len(detector.feed("mail", mail, source="mail").events)
        stats = detector.stats()
        for key in peaks:
            peaks[key] = max(peaks[key], stats[key])
        fed += len(dns) + len(mail)
        if rss_mid is None and fed >= records // 2:
            rss_mid = current_rss_mib()
    events += len(detector.finish_source("dns")) + len(detector.finish_source("mail"))
    events += len(detector.close())
    stats = detector.stats()
    return {
        "case": name, "records": records, "distinct_names": names,
        "event_time_h": round(records / BASE_RECORDS * BASE_SPAN_S / 3600, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(max_rss_kib() / MIB, 1),
        "rss_after_imports_mib": round(rss_after_imports / MIB, 1),
        "rss_half_way_mib": rss_mid, "rss_end_mib": current_rss_mib(),
        "dns_evicted": stats["dns_evicted"], "dedup_evicted": stats["dedup_evicted"],
        "sender_slices": stats.get("slices_sender_domain", 0),
        "sender_slices_replaced": stats.get("slices_sender_domain_evicted", 0),
        "peak_dns_buffered": peaks["dns_buffered"], "peak_dedup_entries": peaks["dedup_entries"],
        "peak_pending_deliveries": peaks["pending_deliveries"],
        "anomaly_events": events, "anomalies_opened": stats.get("anomalies:open", 0),
        "rejected": sum(v for k, v in stats.items() if k.startswith("rejected:")),
    }


def run_child(name: str, scale: float) -> dict:
    """``run_case`` in a fresh interpreter: no heap, cache or module inherited from another case."""
    done = subprocess.run([sys.executable, __file__, "--case", name, "--scale", str(scale)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{done.stderr}")
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    base = results[0]["peak_rss_mib"]
    header = ("case", "records", "names", "event time", "peak RSS MiB", "ratio",
              "after imports", "RSS half/end", "dns_evicted", "dedup_evicted", "sender slices",
              "replaced", "peak dns buf",
              "peak dedup", "peak pending", "opened", "seconds")
    rows = [header]
    for r in results:
        rows.append((r["case"], f"{r['records']:,}", f"{r['distinct_names']:,}",
                     f"{r['event_time_h']} h", f"{r['peak_rss_mib']:.1f}",
                     f"{r['peak_rss_mib'] / base:.2f}", f"{r['rss_after_imports_mib']:.1f}",
                     f"{r['rss_half_way_mib']}/{r['rss_end_mib']}",
                     str(r["dns_evicted"]), str(r["dedup_evicted"]),
                     f"{r['sender_slices']:,}", f"{r['sender_slices_replaced']:,}",
                     f"{r['peak_dns_buffered']:,}", f"{r['peak_dedup_entries']:,}",
                     f"{r['peak_pending_deliveries']:,}", str(r["anomalies_opened"]),
                     f"{r['seconds']}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    worst = max(r["peak_rss_mib"] / base for r in results)
    verdict = "flat" if worst <= 1 + FLAT_WITHIN else "NOT flat"
    lines.append(f"\nPeak RSS {verdict}: at most {worst:.2f}x base "
                 f"(criterion: within {FLAT_WITHIN:.0%}) for 10x length and 100x distinct names.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every case's records and names (default 1)")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", default="bench-out/cardinality",
                        help="where the table and JSON are written too")
    args = parser.parse_args(argv)
    if args.case:                                     # the child: one case, one JSON line
        print(orjson.dumps(run_case(args.case, args.scale)).decode())
        return 0
    results = []
    for name in CASES:
        print(f"cardinality: {name} ...", file=sys.stderr, flush=True)
        results.append(run_child(name, args.scale))
    base = results[0]["peak_rss_mib"]
    for r in results:
        r["ratio_to_base"] = round(r["peak_rss_mib"] / base, 3)
    report = {"flat_within": FLAT_WITHIN,
              "flat": all(r["ratio_to_base"] <= 1 + FLAT_WITHIN for r in results),
              "cases": results}
    text = table(results)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cardinality.txt").write_text(text + "\n")
    (out / "cardinality.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

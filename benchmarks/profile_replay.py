"""Where a replay spends its time: cProfile of ``detector.replay.replay`` over a cached scenario.

    .venv/bin/python benchmarks/profile_replay.py [SCENARIO] [--hours H] [--top N]

The scenario (default ``seed-incident``, 6 h, ~370 k records) is generated under
``bench-out/data`` the first time. Profiling slows pure-Python code down more than C code, so
read the shares, not the seconds.
"""

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

from detector.bench.data import Spec, ensure
from detector.io.files import JsonLinesSink
from detector.replay import replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="seed-incident")
    parser.add_argument("--hours", type=float)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out-dir", default="bench-out")
    args = parser.parse_args()
    dataset = ensure(Path(args.out_dir), Spec(args.scenario, 1, args.hours))
    with tempfile.TemporaryDirectory() as scratch:
        sink = JsonLinesSink(Path(scratch) / "events.jsonl")
        profile = cProfile.Profile()
        profile.enable()
        summary = replay([str(dataset.mail)], [str(dataset.dns)], sink)
        profile.disable()
        sink.close()
    print(f"{summary.total_records:,} records in {summary.seconds:.1f} s under the profiler")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()

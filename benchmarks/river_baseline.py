"""Section 5: the project against what a user would write first, ``detector/bench/naive.py`` (a
per-record detector on river's ``EWMean``/``EWVar``): throughput on the same input in the same run,
and detection quality side by side.

Same as ``detector bench --only replay --only quality``; any other option may follow. Run from
the project root:

    .venv/bin/python benchmarks/river_baseline.py
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "replay", "--only", "quality", *sys.argv[1:]])

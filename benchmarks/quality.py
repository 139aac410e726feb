"""Section 4: recall, false alarms, wrong-outcome opens and detection delay on every built-in
scenario, each with seeds 1, 2 and 3 (``--seed N``, repeatable, for others), the project's detector
and the naive per-record detector side by side.

Same as ``detector bench --only quality``; any other ``detector bench`` option may follow.
Run from the project root:

    .venv/bin/python benchmarks/quality.py --seed 4 --seed 5
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "quality", *sys.argv[1:]])

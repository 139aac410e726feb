"""Section 4: recall, false alarms and detection delay on every built-in scenario, the project's
detector and the naive per-record detector side by side (``--seed N`` repeatable for more seeds).

Same as ``detector bench --only quality``; any other ``detector bench`` option may follow.
Run from the project root:

    .venv/bin/python benchmarks/quality.py --seed 1 --seed 2 --seed 3
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "quality", *sys.argv[1:]])

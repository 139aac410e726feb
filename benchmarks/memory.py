"""Section 3: peak RSS of replays of mixed at 1x, 4x and 10x 7.2 h, each in a fresh process.

Same as ``detector bench --only memory``; any other ``detector bench`` option may follow
(``--quick``, ``--json``, ``--repeat N``, ``--out-dir DIR``). Run from the project root:

    .venv/bin/python benchmarks/memory.py
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "memory", *sys.argv[1:]])

"""Section 1: records/s of a replay of the 3-day mixed scenario (the full pipeline, events to a file) against the bare read of the same files (gzip + orjson.loads per line), and the naive detector, alternating fresh processes, best of N.

Same as ``detector bench --only replay``; any other ``detector bench`` option may follow
(``--quick``, ``--json``, ``--repeat N``, ``--out-dir DIR``). Run from the project root:

    .venv/bin/python benchmarks/replay_throughput.py
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "replay", *sys.argv[1:]])

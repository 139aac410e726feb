"""Section 2: loading logs with ``detector produce``, one worker through the local broker against bare consumers of the same topics (each from its start until it has every record, the worker until its group has committed the end offsets), and the wall-clock latency from a spike's records produced to its open event.

Same as ``detector bench --only kafka``; any other ``detector bench`` option may follow
(``--quick``, ``--json``, ``--repeat N``, ``--out-dir DIR``). Run from the project root:

    .venv/bin/python benchmarks/kafka_throughput.py
"""

import sys

from detector.bench.cli import bench

if __name__ == "__main__":
    bench(["--only", "kafka", *sys.argv[1:]])

"""What scales when the detector is split into join tasks and a judge, measured on 2 cores.

On a machine of 2 cores a speed-up of several join workers cannot show, so this measures what
would scale: the records are split by their join key (the registrable domain of the sender or of
the question name, ``core.partitioning``) over ``N`` partitions, as ``detector produce`` keys
them; each partition is a join task (``core.task.JoinTask``) and one judge (``core.judge.Judge``)
merges what they hand over, all in this process, each part timed on its own (``process_time``):

- each task's share of the records and of the CPU time (near ``1/N`` each when the keys spread);
- the judge's CPU time per million input records, against a task's per million (the judge's
  input is the closed steps, not the records: it must stay a small fraction of a join worker's).
  The judge's cost follows the steps of event time (and the number of tasks), a task's the
  records, so the share depends on the input's rate: the generated scenarios run at a few dozen
  records a second, where a provider's logs run at thousands. The table gives the judge's cost
  per step, a task's per record, and the input rate at which the judge costs 2 % of a task;
- the bytes a task publishes per step it closes (its ``Closed`` as JSON, as on ``detector-steps``),
  per step of event time and per task.

The events are checked equal to one ``Detector``'s over the same input (``--check``), as
``tests/test_judge.py`` does on shorter inputs. Partitions are assigned by ``crc32(key) % N``
here: the spread, not Kafka's murmur2 itself, is what matters for the shares.

    .venv/bin/python -m detector.cli generate mixed /tmp/mixed --seed 1
    .venv/bin/python benchmarks/scaleout_split.py /tmp/mixed --tasks 3
    .venv/bin/python benchmarks/scaleout_split.py /tmp/mixed --tasks 3 --compress 100

``--compress K`` makes the same records K times as dense in event time (72 hours in 43 minutes
at K = 100: about 1,300 records a second instead of 13), which is what a provider's rate looks
like to the judge; the model's results on such input mean nothing, only the costs are read.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import zlib
from pathlib import Path

import orjson

from detector.core import Detector, encode_event
from detector.core.judge import Judge
from detector.core.records import Rejected, parse_ts
from detector.core.task import JoinTask
from detector.gcpolicy import tune
from detector.io.produce import join_key

CHUNK = 4096


def chunks(mail: list[bytes], dns: list[bytes]):
    """The input in the order a replay of two files reads it."""
    for start in range(0, max(len(mail), len(dns)), CHUNK):
        yield "dns", dns[start:start + CHUNK]
        yield "mail", mail[start:start + CHUNK]


def compress_time(lines: list[bytes], factor: float, origin: float) -> list[bytes]:
    """The same records ``factor`` times as dense in event time (``origin`` + offset / factor):
    a higher input rate, for the judge's share, which follows the steps of event time, where a
    task's follows the records. Lines without a readable time are left as they are."""
    out = []
    for line in lines:
        try:
            record = orjson.loads(line)
            record["ts"] = origin + (parse_ts(record["ts"]) - origin) / factor
        except (orjson.JSONDecodeError, TypeError, KeyError, Rejected):
            out.append(line)
            continue
        out.append(orjson.dumps(record))
    return out


def run(directory: Path, n: int, check: bool, factor: float = 1.0) -> dict:
    mail, dns = (gzip.decompress((directory / f"{s}.jsonl.gz").read_bytes()).splitlines()
                 for s in ("mail", "dns"))
    if factor != 1.0:
        origin = parse_ts(orjson.loads(mail[0])["ts"])
        mail, dns = compress_time(mail, factor, origin), compress_time(dns, factor, origin)
    # Partitioning is the producer's work, not a join worker's: done before the clocks start.
    parts: dict[str, list[list[bytes]]] = {stream: [[] for _ in range(n)]
                                           for stream in ("mail", "dns")}
    for stream, lines in (("mail", mail), ("dns", dns)):
        for line in lines:
            parts[stream][zlib.crc32(join_key(line)[0] or b"") % n].append(line)
    tasks = [JoinTask() for _ in range(n)]
    judge = Judge()
    cpu = [0.0] * n
    records = [len(parts["mail"][i]) + len(parts["dns"][i]) for i in range(n)]
    published = [0] * n             # bytes
    messages = [0] * n
    judge_cpu = 0.0
    events = []
    for i, task in enumerate(tasks):
        judge.add_task(str(i))
        task.add_source("mail")
        task.add_source("dns")
    per_task = [list(chunks(parts["mail"][i], parts["dns"][i])) for i in range(n)]
    rounds = max(len(c) for c in per_task)
    for r in range(rounds):
        for i, task in enumerate(tasks):
            if r >= len(per_task[i]):
                continue
            stream, lines = per_task[i][r]
            started = time.process_time()
            task.feed(stream, lines, source=stream)
            closed = task.advance()
            wire = orjson.dumps(closed.to_plain()) if closed.steps else b""
            cpu[i] += time.process_time() - started
            if wire:
                published[i] += len(wire)
                messages[i] += 1
            started = time.process_time()
            judge.offer(str(i), closed)
            events += judge.advance()
            judge_cpu += time.process_time() - started
    for i, task in enumerate(tasks):
        started = time.process_time()
        task.finish_source("mail")
        task.finish_source("dns")
        closed = task.close()
        cpu[i] += time.process_time() - started
        started = time.process_time()
        judge.offer(str(i), closed, idle=True)
        judge_cpu += time.process_time() - started
    started = time.process_time()
    events += judge.close()
    judge_cpu += time.process_time() - started
    steps_judged = (judge.next_step or 0) - min(
        (int(t.first_ts // judge.step_s) for t in tasks if t.first_ts is not None), default=0)
    total = sum(records)
    result: dict[str, object] = {
        "tasks": n, "records": total, "events": len(events),
        "share_records": [round(r / total, 4) for r in records],
        "share_cpu": [round(c / sum(cpu), 4) for c in cpu],
        "task_cpu_s": [round(c, 2) for c in cpu],
        "judge_cpu_s": round(judge_cpu, 3),
        "task_cpu_s_per_million": round(sum(cpu) / n / (total / n) * 1e6, 2),
        "judge_cpu_s_per_million": round(judge_cpu / total * 1e6, 3),
        "steps_of_event_time": steps_judged,
        "bytes_per_step_per_task": round(sum(published) / n / max(steps_judged, 1), 1),
        "bytes_per_message": round(sum(published) / max(sum(messages), 1), 1),
    }
    result["judge_share_of_a_task"] = round(
        (judge_cpu / total) / (sum(cpu) / n / (total / n)), 4)
    # The judge's work follows the steps (and the tasks), a task's the records: at a higher rate
    # of records the judge's share falls. The rate (records/s, all tasks) at which it is 2 %:
    per_step = judge_cpu / max(steps_judged, 1)
    per_record = sum(cpu) / total
    result["judge_us_per_step"] = round(per_step * 1e6, 1)
    result["task_us_per_record"] = round(per_record * 1e6, 3)
    result["input_rate_for_judge_at_2pct"] = round(
        per_step / (0.02 * judge.step_s * per_record))
    result["input_rate_records_per_s"] = round(total / max(steps_judged * judge.step_s, 1), 1)
    if check:
        detector, expected = Detector(), []
        detector.add_source("mail")
        detector.add_source("dns")
        for stream, lines in chunks(mail, dns):
            expected += detector.feed(stream, lines, source=stream).events
        expected += detector.finish_source("mail") + detector.finish_source("dns")
        expected += detector.close()
        result["events_equal_one_detector"] = (
            [encode_event(e) for e in expected] == [encode_event(e) for e in events])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a `detector generate` output directory")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--check", action="store_true",
                        help="also run one Detector and compare the events")
    parser.add_argument("--compress", type=float, default=1.0, metavar="K",
                        help="make the input K times as dense in event time (a K times higher "
                             "rate of records per second)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tune()
    result = run(args.directory, args.tasks, args.check, args.compress)
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Join tasks and a judge, run apart, give the events of one detector over the same input.

The scale-out splits the core in two (``core.task.JoinTask`` per pair of co-partitioned inputs,
``core.judge.Judge`` over all of them). Here the records of generated scenarios are split by
their join key (the registrable domain of the sender or of the question name) into several
tasks, each fed its own share in the order a replay reads it; the judge merges what the tasks
hand over. The events must be byte for byte those of one ``Detector`` over everything, ids,
evidence and all; and checkpointing tasks and judge part-way, or handing steps over twice, must
change nothing.
"""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from detector.core import Detector, encode_event
from detector.core.judge import Judge
from detector.core.task import Closed, JoinTask
from detector.io.produce import join_key
from detector.synth import generate

CHUNK = 2048


def _partition(line: bytes, tasks: int) -> int:
    """The task of a line: its key as ``detector produce`` gives it (no key: task 0)."""
    return zlib.crc32(join_key(line)[0] or b"") % tasks


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    """Two scenarios with an incident of the whole provider and one of a single sender."""
    found = {}
    for name, hours in (("seed-incident", 3.5), ("small-sender-outage", 3.5)):
        directory = tmp_path_factory.mktemp(name)
        generate(name, directory, seed=4, hours=hours)
        found[name] = tuple(gzip.decompress((directory / f"{stream}.jsonl.gz").read_bytes())
                            .splitlines() for stream in ("mail", "dns"))
    return found


def _chunks(mail: list[bytes], dns: list[bytes]):
    """The input in the order a replay of two files reads it: chunk by chunk, DNS first."""
    for start in range(0, max(len(mail), len(dns)), CHUNK):
        yield "dns", dns[start:start + CHUNK]
        yield "mail", mail[start:start + CHUNK]


def one_detector(mail: list[bytes], dns: list[bytes]) -> list[bytes]:
    detector, events = Detector(), []
    detector.add_source("mail")
    detector.add_source("dns")
    for stream, lines in _chunks(mail, dns):
        events += detector.feed(stream, lines, source=stream).events
    events += detector.finish_source("mail") + detector.finish_source("dns")
    events += detector.close()
    return [encode_event(e) for e in events]


def split(mail: list[bytes], dns: list[bytes], n: int, checkpoint_at: int | None = None,
          repeat_every: int | None = None) -> tuple[list[bytes], Judge]:
    """The same input through ``n`` tasks and one judge. ``checkpoint_at``: after that many
    chunks, every task and the judge are rebuilt from their JSON snapshots; ``repeat_every``:
    every so many chunks a task hands over again what it handed last (a restored task does)."""
    tasks = {f"t{i}": JoinTask() for i in range(n)}
    judge, events = Judge(), []
    for name, task in tasks.items():
        judge.add_task(name)
        task.add_source("mail")
        task.add_source("dns")
    last: dict[str, object] = {}
    for count, (stream, lines) in enumerate(_chunks(mail, dns)):
        shares: dict[str, list[bytes]] = {name: [] for name in tasks}
        for line in lines:
            shares[f"t{_partition(line, n)}"].append(line)
        for name, share in shares.items():
            if share:
                tasks[name].feed(stream, share, source=stream)
            # As a join worker publishes it, and the judge reads it.
            closed = last[name] = Closed.from_plain(orjson.loads(orjson.dumps(
                tasks[name].advance().to_plain())))
            judge.offer(name, closed)
        if repeat_every and count % repeat_every == 0:
            for name, closed in last.items():
                judge.offer(name, closed)          # type: ignore[arg-type]
        events += judge.advance()
        if checkpoint_at is not None and count == checkpoint_at:
            tasks = {name: JoinTask(state=orjson.loads(orjson.dumps(task.snapshot())))
                     for name, task in tasks.items()}
            judge = Judge(state=orjson.loads(orjson.dumps(judge.snapshot())))
    for name, task in tasks.items():
        task.finish_source("mail")
        task.finish_source("dns")
        judge.offer(name, task.advance(), idle=task.idle())
    events += judge.advance()
    for name, task in tasks.items():
        judge.offer(name, task.close(), idle=True)
    events += judge.close()
    return [encode_event(e) for e in events], judge


@pytest.mark.parametrize("scenario", ["seed-incident", "small-sender-outage"])
@pytest.mark.parametrize("n", [1, 3, 6])
def test_tasks_and_a_judge_give_the_events_of_one_detector(scenarios, scenario, n):
    mail, dns = scenarios[scenario]
    expected = one_detector(mail, dns)
    assert any(b'"state":"open"' in e for e in expected), "the scenario must page"
    found, judge = split(mail, dns, n)
    assert found == expected
    assert judge.counters["late_steps"] == 0


def test_checkpoints_and_repeated_hand_overs_change_nothing(scenarios):
    mail, dns = scenarios["seed-incident"]
    expected = one_detector(mail, dns)
    middle = len(list(_chunks(mail, dns))) // 2
    found, judge = split(mail, dns, 3, checkpoint_at=middle, repeat_every=7)
    assert found == expected
    assert judge.counters["late_steps"] == 0


def test_an_idle_task_does_not_hold_the_judge_and_a_step_judged_before_is_counted_late():
    """One task's inputs go quiet: it is flushed (``close``: what it holds is joined and handed
    over) and says it is idle, so the judge goes on with the others' progress alone, and the
    quiet task's deliveries are in their steps. A record for that time coming to it later is late
    there; a step the judge closed already, handed over by a task it had never heard of, is
    dropped and counted."""
    t0 = 1_795_737_600.0

    def mail(t: float, n: int) -> bytes:
        return orjson.dumps({"ts": t, "message_id": f"<{n}@mx>", "sender": "a@bank.example",
                             "category": "otp", "status": "delivered",
                             "dns_outcome": "NOERROR"})

    busy, quiet, judge = JoinTask(), JoinTask(), Judge(series=True)
    for name, task in (("busy", busy), ("quiet", quiet)):
        judge.add_task(name)
        task.add_source("mail")
    quiet.feed("mail", [mail(t0 + 1, 0)], source="mail")
    judge.offer("quiet", quiet.advance())
    for minute in range(10):
        busy.feed("mail", [mail(t0 + 60 * minute + s, 1000 * minute + s) for s in range(60)],
                  source="mail")
        judge.offer("busy", busy.advance())
        judge.advance()
    assert judge.next_step is None               # the quiet task holds the judge back
    quiet.finish_source("mail")
    assert quiet.idle()
    judge.offer("quiet", quiet.close(), idle=True)
    judge.advance()
    rows = judge.series or []
    assert len(rows) > 50                          # the busy task's progress alone moved it
    assert rows[0]["end"] == t0 + 10 and rows[0]["attempts"] == 10 + 1
    assert quiet.feed("mail", [mail(t0 + 5, 1)], source="mail") == [(0, "late")]
    judge.offer("quiet", quiet.advance())
    newcomer = JoinTask()
    newcomer.add_source("mail")
    newcomer.feed("mail", [mail(t0 + 7, 2)], source="mail")
    judge.offer("newcomer", newcomer.close())
    assert judge.counters["late_steps"] == 1

"""Replays of the generated scenarios give byte for byte the outputs they gave before.

The hot path of the core is rewritten now and then for speed (typed decoding, batches, other
containers); none of that may change a detection result. For a short run of every scenario
(generated here, seed 3), this test replays the input through the ``detector`` command and
compares the SHA-256 of every output with the digests in ``fixtures/golden_replay.json``:
the anomaly events, the dead letters, the per-step series, the summary's counts, and a replay cut
in two that carries its ``--state`` over (its events and its state file). The digests were made
by the code *before* such a rewrite (``python tests/test_golden_replay.py --write``, run with that
code on the ``PYTHONPATH``), so a rewrite is checked against what it replaced.

When a change *means* to change results (a new rule, another default), the digests are written
again by the new code, in the same commit, and the commit says why. The inputs' digests are kept
too: when the generator changes, the test says so instead of blaming the detector.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detector.synth import generate

GOLDEN = Path(__file__).parent / "fixtures" / "golden_replay.json"
SEED = 3
#: Every scenario, long enough for its first event (2.5 h after its start; mixed's first
#: incident is at 10:20) and its warm-up, short enough to keep the suite quick.
RUNS = {
    "seed-incident": 3.25, "resolver-timeout": 3.25, "nxdomain-deleted": 3.25,
    "downstream-reject": 3.25, "decoy-volume-surge": 3.25, "decoy-dns-storm": 3.25,
    "decoy-bounce-wave": 3.25, "decoy-tiny-tenant": 3.25, "faint-sender-night": 3.5,
    "resolver-ramp": 3.5, "small-sender-outage": 3.25, "decoy-lame-surge": 3.25,
    "ambiguous-joins": 5.0, "mixed": 11.0,
}
#: The summary's timing line changes from run to run; every count in it is kept.
_TIMING = re.compile(rb" in [0-9.]+ s \([0-9,]+ records/s\)")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _detector(directory: Path, *args: str) -> subprocess.CompletedProcess:
    # Paths relative to ``directory``: dead letters and the state name their inputs.
    done = subprocess.run([sys.executable, "-m", "detector.cli", *args], capture_output=True,
                          cwd=directory, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


def _halves(path: Path, first: Path, second: Path) -> None:
    """Cut a gzip log in two at its middle line (plain JSON lines out)."""
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    middle = len(lines) // 2
    first.write_bytes(b"".join(lines[:middle]))
    second.write_bytes(b"".join(lines[middle:]))


def digests(scenario: str, hours: float, directory: Path) -> dict[str, str]:
    """Generate the scenario, replay it whole and cut in two, digest every output."""
    generate(scenario, directory / "data", seed=SEED, hours=hours)
    mail, dns = Path("data", "mail.jsonl.gz"), Path("data", "dns.jsonl.gz")
    out = {"input": _digest(gzip.decompress((directory / mail).read_bytes())
                            + gzip.decompress((directory / dns).read_bytes()))}
    whole = Path("whole")
    (directory / whole).mkdir()
    done = _detector(directory, "replay", "--mail", str(mail), "--dns", str(dns),
                     "--out", str(whole / "events.jsonl"),
                     "--dead-letter", str(whole / "dead.jsonl"),
                     "--series", str(whole / "series.jsonl"))
    out["events"] = _digest((directory / whole / "events.jsonl").read_bytes())
    out["dead_letters"] = _digest((directory / whole / "dead.jsonl").read_bytes())
    out["series"] = _digest((directory / whole / "series.jsonl").read_bytes())
    out["summary"] = _digest(_TIMING.sub(b"", done.stderr))
    # The same input in two replays that hand their state over: what the first leaves pending
    # (deliveries, DNS answers, message ids, open steps) must come back exactly.
    cut = Path("cut")
    (directory / cut).mkdir()
    _halves(directory / mail, directory / cut / "mail-1.jsonl", directory / cut / "mail-2.jsonl")
    _halves(directory / dns, directory / cut / "dns-1.jsonl", directory / cut / "dns-2.jsonl")
    for part in ("1", "2"):
        _detector(directory, "replay", "--mail", str(cut / f"mail-{part}.jsonl"),
                  "--dns", str(cut / f"dns-{part}.jsonl"),
                  "--out", str(cut / f"events-{part}.jsonl"),
                  "--dead-letter", str(cut / f"dead-{part}.jsonl"),
                  "--state", str(cut / "state.json"))
        for name, file in ((f"state_{part}", "state.json"),
                           (f"events_{part}", f"events-{part}.jsonl"),
                           (f"dead_letters_{part}", f"dead-{part}.jsonl")):
            out[name] = _digest((directory / cut / file).read_bytes())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(RUNS))
def test_replay_outputs_are_byte_identical_to_the_golden_digests(scenario, tmp_path):
    expected = json.loads(GOLDEN.read_text())[scenario]
    found = digests(scenario, RUNS[scenario], tmp_path)
    assert found["input"] == expected["input"], (
        f"the generator's output for {scenario} changed: the golden digests were made from "
        "other input; write them again with the code before the change that is under test")
    changed = sorted(name for name in expected if found[name] != expected[name])
    assert changed == [], f"{scenario}: outputs differ from the golden replay: {changed}"


if __name__ == "__main__":
    # python tests/test_golden_replay.py --write: the digests of the code on the PYTHONPATH.
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden_replay.py --write")
    table = {}
    for name, length in RUNS.items():
        with tempfile.TemporaryDirectory() as scratch:
            table[name] = digests(name, length, Path(scratch))
        print(name, table[name]["events"][:12], file=sys.stderr)
    GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")

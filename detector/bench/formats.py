"""Log-format adapters: lines/s of each adapter's ``feed()`` against the bare read of the same file.

For every adapter (``detector.formats.ADAPTERS``) an input of about 100 k lines (``--quick``: 5 k)
is built once under ``<root>/data/formats-<lines>-<digest>/`` by repeating that format's sample
lines from ``tests/fixtures/formats/``, each repetition ``STEP_S`` later than the one before (the
first date-time or epoch of every line is shifted, so the adapters' time caches and the CoreDNS /
Unbound two-second cause windows see time move on as in a real log). Header lines (Zeek's ``#``
lines, the M365 ``#TYPE`` line and CSV header) are written once, at the top. The digest covers the
samples and this module, so changed samples get fresh files. Then, per format, alternating, each in
a fresh process (``child``), best of N:

- ``format-read``: ``LineSource.read_chunk()`` until the end of the file, nothing else;
- ``format-feed``: the same read plus the adapter's ``feed()`` of every chunk and its ``flush()``;
  records, skipped lines and rejections (by reason) are counted, so the work is seen to be real.

The ratio is time per line relative to the bare read. The samples are the test fixtures, with
their deliberate oddities (rejected rows, banner lines, STARTTLS transactions), so the mix of
records, skipped and rejected lines is theirs, not a production log's.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .harness import Say, quiet, run_child

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "formats"
LINES = 100_000
QUICK_LINES = 5_000
#: Event time between two repetitions of a sample (longer than any sample's run of lines).
STEP_S = 60


@dataclass(frozen=True, slots=True)
class Sample:
    """A format's sample files; the first ``header`` lines are written once, at the top.

    After the header, lines are repeated up to the next ``#`` line (a Zeek ``#close`` or a second
    header block, which would change the schema mid-file).
    """

    files: tuple[str, ...]
    header: int = 0


SAMPLES: dict[str, Sample] = {
    "postfix": Sample(("postfix_dns_failures.log", "postfix_header_variants.log")),
    "m365": Sample(("m365_trace_summary.csv",), header=2),          # #TYPE line, CSV header
    "zeek-smtp": Sample(("zeek_smtp.log",), header=8),               # #separator ... #types
    "zeek-dns": Sample(("zeek_dns.log",), header=8),
    "unbound": Sample(("unbound.log",)),
    "bind": Sample(("bind.log",)),
    "coredns": Sample(("coredns.log", "coredns_2017.log")),
}

# The times the samples start their lines with (the first one in a line is shifted), each as
# (pattern, strptime format). A syslog time has no year: one is put in front to parse it.
_TIMES = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), "%Y-%m-%dT%H:%M:%S"),           # ISO 8601
    (re.compile(r"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d"), "%d-%b-%Y %H:%M:%S"),  # BIND
    (re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d"), "%d/%b/%Y:%H:%M:%S"),  # CLF
    (re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d [AP]M"), "%m/%d/%Y %I:%M:%S %p"),  # M365 CSV
    (re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"), "syslog"),                # syslog
    (re.compile(r"(?<![\w.])1\d{9}(?!\d)"), "epoch"),                               # Unbound, Zeek
)


def _template(line: str) -> tuple[str, str, object, str] | None:
    """``(before, kind, time, after)`` of a line's first time, or None when it has none."""
    found = [(m.start(), m, kind) for pattern, kind in _TIMES if (m := pattern.search(line))]
    if not found:
        return None
    _, match, kind = min(found, key=lambda item: item[0])
    text = match.group()
    if kind == "epoch":
        value: object = int(text)
    elif kind == "syslog":
        value = datetime.strptime(f"2026 {text}", "%Y %b %d %H:%M:%S")
    else:
        value = datetime.strptime(text, kind)
    return line[:match.start()], kind, value, line[match.end():]


def _shifted(kind: str, value, seconds: int) -> str:
    if kind == "epoch":
        return str(value + seconds)
    moved = value + timedelta(seconds=seconds)
    if kind == "syslog":
        return f"{moved:%b} {moved.day:2d} {moved:%H:%M:%S}"
    return moved.strftime(kind)


def sample_lines(name: str) -> tuple[list[str], list[str]]:
    """A format's header lines (written once) and body lines (repeated), as text."""
    sample = SAMPLES[name]
    lines: list[str] = []
    for file in sample.files:
        text = (FIXTURES / file).read_text(encoding="utf-8")
        lines += [line for line in text.splitlines() if line.strip()]
    header, body = lines[:sample.header], []
    for line in lines[sample.header:]:
        if sample.header and line.startswith("#"):
            break
        body.append(line)
    return header, body


def build_input(name: str, lines: int, path: Path) -> int:
    """Write about ``lines`` lines of format ``name`` to ``path``; the number written."""
    header, body = sample_lines(name)
    templates = [_template(line) for line in body]
    repeats = max(1, round((lines - len(header)) / len(body)))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in header)
        for rep in range(repeats):
            seconds = rep * STEP_S
            out.writelines(
                (line if t is None else t[0] + _shifted(t[1], t[2], seconds) + t[3]) + "\n"
                for line, t in zip(body, templates))
    os.replace(tmp, path)
    return len(header) + repeats * len(body)


def inputs_digest() -> str:
    """A short digest of the samples and of this module (which builds the inputs from them)."""
    digest = hashlib.sha1(Path(__file__).read_bytes())
    for sample in SAMPLES.values():
        for file in sample.files:
            digest.update(file.encode() + (FIXTURES / file).read_bytes())
    return digest.hexdigest()[:8]


def ensure_inputs(root: Path, lines: int) -> dict[str, Path]:
    """Every format's input file under ``root``, built unless already there."""
    if not FIXTURES.is_dir():
        raise FileNotFoundError(f"no format samples at {FIXTURES}: run from a checkout")
    directory = Path(root) / "data" / f"formats-{lines}-{inputs_digest()}"
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SAMPLES:
        path = directory / f"{name}.log"
        if not path.exists():
            build_input(name, lines, path)
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------------- the section

def formats_section(root: Path, quick: bool, repeat: int, say: Say = quiet) -> dict:
    """Bare read and adapter of every format, alternating in fresh processes, best of ``repeat``."""
    from ..formats import ADAPTERS

    if set(SAMPLES) != set(ADAPTERS):
        raise RuntimeError(f"bench samples {sorted(SAMPLES)} != adapters {sorted(ADAPTERS)}")
    target = QUICK_LINES if quick else LINES
    paths = ensure_inputs(root, target)
    rows = []
    for name, cls in ADAPTERS.items():
        path = str(paths[name])
        runs: dict[str, list[dict]] = {"read": [], "feed": []}
        for _ in range(repeat):
            runs["read"].append(run_child("format-read", {"path": path}))
            runs["feed"].append(run_child("format-feed", {"path": path, "format": name}))
        counted = {r["lines"] for rs in runs.values() for r in rs}
        work = {(r["records"], r["skipped"], r["rejected"]) for r in runs["feed"]}
        if len(counted) != 1 or len(work) != 1:
            raise RuntimeError(f"{name}: runs disagree: lines {counted}, records/skipped/rejected "
                               f"{work}")
        lines = counted.pop()
        last = runs["feed"][-1]
        best = {kind: min(r["seconds"] for r in results) for kind, results in runs.items()}
        row = {
            "format": name, "stream": cls.stream, "file": path, "lines": lines,
            "records": last["records"], "skipped": last["skipped"],
            "rejected": last["rejected"], "rejected_reasons": last["reasons"],
            "bare_read_rate": lines / best["read"], "adapter_rate": lines / best["feed"],
            "records_rate": last["records"] / best["feed"],
            "adapter_over_bare": best["feed"] / best["read"],
            "seconds": {kind: [r["seconds"] for r in results] for kind, results in runs.items()},
            "max_rss_kib": max(r["max_rss_kib"] for r in runs["feed"]),
        }
        rows.append(row)
        say(f"formats: {name}: {lines:,} lines, {row['adapter_rate']:,.0f} lines/s "
            f"({row['adapter_over_bare']:.1f}x the bare read), {row['records']:,} records, "
            f"{row['skipped']:,} skipped, {row['rejected']:,} rejected")
    return {"target_lines": target, "step_s": STEP_S, "repeat": repeat,
            "samples": {name: list(sample.files) for name, sample in SAMPLES.items()},
            "rows": rows}

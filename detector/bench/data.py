"""Generated benchmark inputs, cached on disk so a rerun does not generate them again.

A scenario's files live in ``<root>/data/<scenario>-s<seed>[-h<hours>][-<start>]-<generator>``,
where ``<generator>`` is a digest of the generator's source: a changed generator gets fresh files,
an unchanged one reuses them. A directory counts only once its ``summary.json`` is written, which
``generate`` finishes before, so an interrupted run never leaves half a scenario behind.
"""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from ..synth import SCENARIOS, generate


@dataclass(frozen=True, slots=True)
class Dataset:
    """One generated scenario: its two logs, its truth and the generator's summary."""

    directory: Path
    summary: dict

    @property
    def mail(self) -> Path:
        return self.directory / "mail.jsonl.gz"

    @property
    def dns(self) -> Path:
        return self.directory / "dns.jsonl.gz"

    @property
    def truth_path(self) -> Path:
        return self.directory / "truth.json"

    def truth(self) -> dict:
        return orjson.loads(self.truth_path.read_bytes())

    @property
    def lines(self) -> int:
        """Non-blank lines of both files: what a reader of the files sees."""
        s = self.summary
        return (s["mail_records"] + s["duplicates"] + s["malformed_mail"]
                + s["dns_records"] + s["malformed_dns"])


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate: ``generate(scenario, dir, seed, hours, start)``."""

    scenario: str
    seed: int = 1
    hours: float | None = None
    start: datetime | None = None

    def dirname(self) -> str:
        name = f"{self.scenario}-s{self.seed}"
        if self.hours is not None:
            name += f"-h{self.hours:g}"
        if self.start is not None:
            name += "-" + self.start.strftime("%Y%m%dT%H%M")
        return f"{name}-{generator_digest()}"


def generator_digest() -> str:
    """A short digest of the scenario generator's source files."""
    package = Path(__file__).resolve().parent.parent / "synth"
    digest = hashlib.sha1()
    for path in sorted(package.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def cached(root: Path, spec: Spec) -> Dataset | None:
    directory = Path(root) / "data" / spec.dirname()
    summary = directory / "summary.json"
    if summary.exists():
        return Dataset(directory, orjson.loads(summary.read_bytes()))
    return None


def ensure(root: Path, spec: Spec) -> Dataset:
    """The scenario's files under ``root``, generated unless already there."""
    found = cached(root, spec)
    if found is not None:
        return found
    directory = Path(root) / "data" / spec.dirname()
    shutil.rmtree(directory, ignore_errors=True)
    summary = generate(spec.scenario, directory, seed=spec.seed, hours=spec.hours,
                       start=spec.start).to_dict()
    (directory / "summary.json").write_bytes(orjson.dumps(summary))
    return Dataset(directory, summary)


def ensure_all(root: Path, specs: list[Spec], workers: int = 1) -> list[Dataset]:
    """``ensure`` for every spec, the missing ones generated ``workers`` at a time."""
    missing = [spec for spec in specs if cached(root, spec) is None]
    if workers > 1 and len(missing) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(ensure, [root] * len(missing), missing))
    else:
        for spec in missing:
            ensure(root, spec)
    return [ensure(root, spec) for spec in specs]


def past_start(scenario: str, now: datetime | None = None) -> datetime:
    """The scenario's time of day on the latest day on which it has already ended.

    A live worker rejects records more than a few minutes ahead of its wall clock, so data sent
    through Kafka must lie in the past, whatever date the machine has.
    """
    spec = SCENARIOS[scenario]
    now = now or datetime.now(timezone.utc)
    start = now.replace(hour=spec.start.hour, minute=spec.start.minute, second=0, microsecond=0)
    while start + timedelta(hours=spec.hours) > now:
        start -= timedelta(days=1)
    return start

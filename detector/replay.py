"""Replay historical logs through the core: the file shell behind ``detector replay``.

Every input file is its own source for the watermark, as a Kafka partition is for the worker. The
next chunk is always read from the source that is furthest behind in event time, so the streams are
merged in event-time order as they are read, DNS answers reach the join before the deliveries that
needed them, and memory stays bounded by a chunk per file, never a whole file. With ``state_path``
the core's state is loaded before and saved after, so a replay continues where the last stopped
(the last few seconds before the end stay pending in the state instead of being flushed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .core.config import DetectorConfig
from .core.pipeline import DNS, MAIL, Detector
from .io.files import JsonLinesSink, LineSource


@dataclass
class ReplaySummary:
    records: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def format(self) -> str:
        rate = self.total_records / self.seconds if self.seconds > 0 else 0.0
        rows = [
            f"records: mail {self.records.get(MAIL, 0)}, dns {self.records.get(DNS, 0)}"
            f" in {self.seconds:.1f} s ({rate:,.0f} records/s)",
            "rejected: " + (", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items()))
                            or "none"),
            f"late {self.rejected.get('late', 0)}, duplicates {self.stats.get('duplicates', 0)},"
            f" not final {self.stats.get('not_final', 0)}, not OTP {self.stats.get('not_otp', 0)},"
            f" OTP attempts {self.stats.get('otp_attempts', 0)}"
            f" (failures {self.stats.get('otp_failures', 0)})",
            "anomalies: " + ", ".join(f"{s} {self.anomalies.get(s, 0)}"
                                      for s in ("open", "update", "resolved"))
            + f"; still open {self.stats.get('open_anomalies', 0)}",
        ]
        return "\n".join(rows)


def replay(mail_paths: list[str], dns_paths: list[str], out: JsonLinesSink,
           dead_letter: JsonLinesSink | None = None, config: DetectorConfig | None = None,
           state_path: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> ReplaySummary:
    """Replay the files into ``out``; rejected lines go to ``dead_letter`` with their reason."""
    started = time.perf_counter()
    state = None
    if state_path and Path(state_path).exists():
        state = orjson.loads(Path(state_path).read_bytes())
    detector = Detector(config, state=state)
    sources = [LineSource(p, MAIL) for p in mail_paths] + [LineSource(p, DNS) for p in dns_paths]
    names = {id(src): f"{src.stream}:{src.path}#{i}" for i, src in enumerate(sources)}
    high = {id(src): -math.inf for src in sources}
    for name in names.values():
        detector.add_source(name)
    total_size = sum(src.size for src in sources)
    active = list(sources)
    try:
        while active:
            source = min(active, key=lambda s: high[id(s)])
            lines, numbers = source.read_chunk()
            name = names[id(source)]
            if not lines:
                active.remove(source)
                out.write_many(detector.finish_source(name))
                continue
            result = detector.feed(source.stream, lines, source=name)
            high[id(source)] = detector.clock.high.get(name, high[id(source)])
            out.write_many(result.events)
            if dead_letter is not None and result.rejected:
                for index, reason in result.rejected:
                    dead_letter.write({
                        "reason": reason, "stream": source.stream, "source": source.path,
                        "line": numbers[index],
                        "raw": lines[index].decode("utf-8", "backslashreplace")})
            if progress is not None:
                progress(sum(src.position() for src in sources), total_size)
        if state_path:
            Path(state_path).write_bytes(orjson.dumps(detector.snapshot()))
        else:
            out.write_many(detector.close())
    finally:
        for src in sources:
            src.close()
    stats = detector.stats()
    return ReplaySummary(
        records={MAIL: stats.get("mail_records", 0), DNS: stats.get("dns_records", 0)},
        rejected={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")},
        anomalies={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("anomalies:")},
        stats=stats,
        seconds=time.perf_counter() - started,
    )

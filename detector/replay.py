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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .core.config import DetectorConfig
from .core.pipeline import DNS, MAIL, Detector
from .formats import CONTRACT, SNIFF_LINES, Adapter, detect, make_adapter
from .io.files import JsonLinesSink, LineSource


@dataclass
class ReplaySummary:
    records: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    adapters: dict[str, int] = field(default_factory=dict)
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
        if self.adapters:
            rejected = {k.split(":", 1)[1]: v for k, v in self.adapters.items()
                        if k.startswith("rejected:")}
            rows.append(f"log formats: {self.adapters.get('skipped', 0)} lines skipped (no "
                        "record in them), rejected: "
                        + (", ".join(f"{r} {n}" for r, n in sorted(rejected.items())) or "none"))
        return "\n".join(rows)


@dataclass
class _Input:
    """One file being replayed: its lines, its name as a watermark source, its format."""

    lines: LineSource
    name: str
    adapter: Adapter | None
    high: float = -math.inf


def open_inputs(mail_paths: list[str], dns_paths: list[str], mail_format: str = CONTRACT,
                dns_format: str = CONTRACT,
                announce: Callable[[str], None] | None = None) -> list[_Input]:
    """Open every file and settle its format (``auto``: recognised from its first lines)."""
    inputs = []
    for stream, paths, wanted in ((MAIL, mail_paths, mail_format), (DNS, dns_paths, dns_format)):
        for path in paths:
            source = LineSource(path, stream)
            chosen = wanted
            if wanted == "auto":
                chosen, score = detect(source.peek(SNIFF_LINES), stream)
                if announce is not None:
                    announce(f"{path}: {stream} format {chosen} (score {score:.2f})")
            name = f"{stream}:{path}#{len(inputs)}"
            inputs.append(_Input(source, name, make_adapter(chosen, stream)))
    return inputs


def replay(mail_paths: list[str], dns_paths: list[str], out: JsonLinesSink,
           dead_letter: JsonLinesSink | None = None, config: DetectorConfig | None = None,
           state_path: str | None = None,
           progress: Callable[[int, int], None] | None = None,
           mail_format: str = CONTRACT, dns_format: str = CONTRACT,
           announce: Callable[[str], None] | None = None) -> ReplaySummary:
    """Replay the files into ``out``; rejected lines go to ``dead_letter`` with their reason.

    Files in another log format than the contract's JSON go through their adapter first; a line
    the adapter rejects is dead-lettered as it was, and a converted record the core rejects is
    dead-lettered as converted (``"converted": true``, no line number).
    """
    started = time.perf_counter()
    state = None
    if state_path and Path(state_path).exists():
        state = orjson.loads(Path(state_path).read_bytes())
    detector = Detector(config, state=state and state["detector"])
    inputs = open_inputs(mail_paths, dns_paths, mail_format, dns_format, announce)
    adapter_counts: Counter[str] = Counter()
    for index, current in enumerate(inputs):
        detector.add_source(current.name)
        saved = (state or {}).get("adapters", {}).get(str(index))
        if current.adapter is not None and saved is not None:
            current.adapter.restore(saved)
    total_size = sum(i.lines.size for i in inputs)

    def forward(current: _Input, lines: list[bytes], numbers: list[int | None]) -> None:
        stream, path = current.lines.stream, current.lines.path
        if current.adapter is not None:
            converted = current.adapter.feed(lines) if numbers else current.adapter.flush()
            adapter_counts["skipped"] += converted.skipped
            for index, reason in converted.rejected:
                adapter_counts[f"rejected:{reason}"] += 1
                if dead_letter is not None:
                    dead_letter.write({"reason": reason, "stream": stream, "source": path,
                                       "format": current.adapter.name, "line": numbers[index],
                                       "raw": lines[index].decode("utf-8", "backslashreplace")})
            lines, numbers = converted.records, [None] * len(converted.records)
        result = detector.feed(stream, lines, source=current.name)
        current.high = detector.clock.high.get(current.name, current.high)
        out.write_many(result.events)
        if dead_letter is not None:
            for index, reason in result.rejected:
                letter = {"reason": reason, "stream": stream, "source": path,
                          "line": numbers[index],
                          "raw": lines[index].decode("utf-8", "backslashreplace")}
                if current.adapter is not None:
                    letter["converted"] = True
                dead_letter.write(letter)

    active = list(inputs)
    try:
        while active:
            current = min(active, key=lambda i: i.high)
            lines, numbers = current.lines.read_chunk()
            if lines:
                forward(current, lines, numbers)
            else:
                if current.adapter is not None:
                    forward(current, [], [])
                active.remove(current)
                out.write_many(detector.finish_source(current.name))
            if progress is not None:
                progress(sum(i.lines.position() for i in inputs), total_size)
        if state_path:
            adapters = {str(n): i.adapter.snapshot() for n, i in enumerate(inputs) if i.adapter}
            Path(state_path).write_bytes(orjson.dumps({"detector": detector.snapshot(),
                                                       "adapters": adapters}))
        else:
            out.write_many(detector.close())
    finally:
        for current in inputs:
            current.lines.close()
    stats = detector.stats()
    return ReplaySummary(
        records={MAIL: stats.get("mail_records", 0), DNS: stats.get("dns_records", 0)},
        rejected={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")},
        anomalies={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("anomalies:")},
        stats=stats,
        adapters=dict(adapter_counts),
        seconds=time.perf_counter() - started,
    )

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
from typing import Protocol
from pathlib import Path

import orjson

from .core.config import DetectorConfig
from .core.events import AnomalyEvent
from .core.pipeline import DNS, MAIL, STATE_VERSION
from .formats import CONTRACT, SNIFF_LINES, Adapter, contract_score, detect, make_adapter
from .io.files import JsonLinesSink, LineSource, TruncatedInput, file_identity
from .shell import Fed, Source, envelope, restore, saved_adapters

#: Contract fields that say which stream a record belongs to, for the swapped-inputs warning.
_STREAM_FIELDS = {MAIL: "message_id, status", DNS: "qname, rcode"}


@dataclass
class InputCount:
    """What one input file gave: lines, blank lines, records and rejections by reason."""

    path: str
    stream: str
    format: str
    lines: int = 0
    blank: int = 0
    records: int = 0              # records fed to the core (lines, or an adapter's records)
    skipped: int = 0              # adapter: valid lines that carry no record
    rejected: Counter = field(default_factory=Counter)
    core_rejected: int = 0        # of ``rejected``: by the core (the rest by an adapter)


@dataclass
class ReplaySummary:
    records: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    adapters: dict[str, int] = field(default_factory=dict)
    inputs: list[InputCount] = field(default_factory=list)
    seconds: float = 0.0
    #: The input that broke off part-way, when one did (the replay stopped there).
    error: TruncatedInput | None = None
    #: Rejections by the core, per stream and reason.
    core_rejected: dict[str, Counter] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def stream_counts(self, stream: str) -> dict[str, int]:
        """Per stream: lines read, blank, records, rejections (``rejected:<reason>``)."""
        out: Counter[str] = Counter()
        for one in self.inputs:
            if one.stream != stream:
                continue
            out["lines"] += one.lines
            out["blank"] += one.blank
            out["records"] += one.records
            out["skipped"] += one.skipped
            for reason, n in one.rejected.items():
                out[f"rejected:{reason}"] += n
        return dict(out)

    def format(self) -> str:
        """The summary for people: per stream, ``lines read = accepted + rejected + duplicates
        + not final + not OTP + blank`` (for the contract's JSON; an adapter's lines become
        records at its own rate, and its skipped lines are shown)."""
        rate = self.total_records / self.seconds if self.seconds > 0 else 0.0
        rows = []
        for stream in (MAIL, DNS):
            counts = self.stream_counts(stream)
            rejected = {k.split(":", 1)[1]: v for k, v in counts.items()
                        if k.startswith("rejected:")}
            core_rejected = sum(self.rejected_in(stream).values())
            dropped = 0
            parts = []
            if stream == MAIL:
                dropped = sum(self.stats.get(k, 0) for k in ("duplicates", "not_final", "not_otp"))
            accepted = counts.get("records", 0) - core_rejected - dropped
            parts.append(f"{accepted:,} accepted")
            parts.append(f"{sum(rejected.values()):,} rejected"
                         + (" (" + ", ".join(f"{r} {n:,}" for r, n in sorted(rejected.items()))
                            + ")" if rejected else ""))
            if stream == MAIL:
                parts.append(f"{self.stats.get('duplicates', 0):,} duplicates")
                parts.append(f"{self.stats.get('not_final', 0):,} not final")
                parts.append(f"{self.stats.get('not_otp', 0):,} not OTP")
            if counts.get("skipped"):
                parts.append(f"{counts['skipped']:,} skipped by the log format")
            parts.append(f"{counts.get('blank', 0):,} blank")
            rows.append(f"{stream}: {counts.get('lines', 0):,} lines read: " + ", ".join(parts))
        rows.append(f"OTP attempts {self.stats.get('otp_attempts', 0):,}"
                    f" (failures {self.stats.get('otp_failures', 0):,};"
                    f" {self.stats.get('ambiguous_joins', 0):,} joins chose an answer other"
                    f" than the nearest, by the delivery's own status);"
                    f" {self.total_records:,} records in {self.seconds:.1f} s"
                    f" ({rate:,.0f} records/s)")
        rows.append("slices watched: " + ", ".join(
            f"{dimension.replace('_', ' ')}s {self.stats.get(f'slices_{dimension}', 0):,}"
            f" ({self.stats.get(f'slices_{dimension}_evicted', 0):,} replaced)"
            for dimension in ("sender_domain", "resolver")))
        rows.append("anomalies: " + ", ".join(f"{s} {self.anomalies.get(s, 0)}"
                                              for s in ("open", "update", "resolved"))
                    + f"; still open {self.stats.get('open_anomalies', 0)}")
        return "\n".join(rows)

    def rejected_in(self, stream: str) -> dict[str, int]:
        """Rejections by the core (not by an adapter) of one stream."""
        return dict(self.core_rejected.get(stream, {}))

    def warnings(self) -> list[str]:
        """What an operator should look at: an input empty or with every record rejected, and
        a join that finds answers only from other clients (``client_mismatch_warning``)."""
        out = []
        for one in self.inputs:
            name = "standard input" if one.path == "-" else one.path
            adapter_rejected = sum(one.rejected.values()) - one.core_rejected
            if one.records == 0 and not adapter_rejected and not one.skipped:
                out.append(f"{name} ({one.stream}): no records, the input is empty"
                           + (f" ({one.lines:,} blank lines)" if one.lines else ""))
            elif (one.records and one.core_rejected == one.records) or \
                    (not one.records and not one.skipped and adapter_rejected):
                reasons = ", ".join(f"{r} {n:,}" for r, n in one.rejected.most_common(3))
                out.append(f"{name} ({one.stream}): every line was rejected ({reasons})")
        warning = client_mismatch_warning(self.stats)
        if warning is not None:
            out.append(warning)
        return out


def client_mismatch_warning(stats: dict) -> str | None:
    """A warning when a notable share of OTP deliveries' lookups stayed ``UNMATCHED`` only
    because their answers came from another client than the delivery's server: at least 10,
    and at least 1 % of the OTP attempts (one misnamed server among a hundred still shows)."""
    mismatched = stats.get("client_mismatched_lookups", 0)
    attempts = stats.get("otp_attempts", 0)
    if mismatched < 10 or mismatched < 0.01 * attempts:
        return None
    return (f"join: {mismatched:,} lookups of {attempts:,} OTP deliveries found answers for their"
            " name in the join window, but only from other clients than the delivery's server,"
            " and count as UNMATCHED. If the mail log names its servers one way and the resolver"
            " log another (a public address against an internal one, one host name against"
            " another), or the servers share a cache, set join.match_client = false")


@dataclass
class _Input:
    """One file being replayed: its lines, its name as a watermark source, its format."""

    lines: LineSource
    name: str
    adapter: Adapter | None
    count: InputCount
    high: float = -math.inf
    #: Its step into the core, set by ``replay()`` once the core exists.
    step: Source = field(init=False)


def open_inputs(mail_paths: list[str], dns_paths: list[str], mail_format: str = CONTRACT,
                dns_format: str = CONTRACT,
                announce: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> list[_Input]:
    """Open every file and settle its format (``auto``: recognised from its first lines)."""
    inputs: list[_Input] = []
    try:
        for stream, paths, wanted in ((MAIL, mail_paths, mail_format),
                                      (DNS, dns_paths, dns_format)):
            for path in paths:
                source = LineSource(path, stream)
                chosen = wanted
                if wanted == "auto":
                    chosen, score = detect(source.peek(SNIFF_LINES), stream)
                    if announce is not None:
                        announce(f"{path}: {stream} format {chosen} (score {score:.2f})")
                    if score == 0 and warn is not None:
                        warn(f"{path}: no {stream} log format recognised; read as the "
                             "contract's JSON")
                elif wanted == CONTRACT and warn is not None:
                    _warn_if_swapped(source, stream, warn)
                name = f"{stream}:{path}#{len(inputs)}"
                inputs.append(_Input(source, name, make_adapter(chosen, stream),
                                     InputCount(path, stream, chosen)))
    except BaseException:
        for opened in inputs:
            opened.lines.close()
        raise
    if warn is not None:
        _warn_if_shared(inputs, warn)
    return inputs


def _warn_if_swapped(source: LineSource, stream: str, warn: Callable[[str], None]) -> None:
    other = DNS if stream == MAIL else MAIL
    head = source.peek(SNIFF_LINES)
    if head and contract_score(head, other) >= 0.5 > contract_score(head, stream):
        option = "--mail" if stream == MAIL else "--dns"
        warn(f"{option} {source.path} holds {other} records ({_STREAM_FIELDS[other]}): "
             "are --mail and --dns swapped?")


def _warn_if_shared(inputs: list[_Input], warn: Callable[[str], None]) -> None:
    streams: dict[tuple, set[str]] = {}
    for one in inputs:
        if one.lines.path != "-":
            streams.setdefault(file_identity(one.lines.path), set()).add(one.lines.stream)
    for one in inputs:
        path = one.lines.path
        if path != "-" and one.lines.stream == MAIL and \
                streams.get(file_identity(path), set()) == {MAIL, DNS}:
            warn(f"{path} is given as both the mail and the DNS input")


class StateError(Exception):
    """A ``--state`` file that cannot be used (the message names it and says why)."""


def load_state(path: str | Path, config: DetectorConfig | None = None) -> dict | None:
    """The saved replay state in ``path`` (None when there is no such file), checked whole.

    Raises ``StateError`` for a directory, an unreadable file, garbage, another program's JSON or
    another state version, before anything is read or written.
    """
    path = Path(path)
    if path.is_dir():
        raise StateError(f"--state {path}: is a directory")
    if not path.exists():
        if not path.parent.is_dir():
            raise StateError(f"--state {path}: no such directory: {path.parent}")
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StateError(f"--state {path}: cannot read: {err.strerror}") from None
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StateError(f"--state {path}: not a detector state file (not JSON)") from None
    if not isinstance(state, dict) or not isinstance(state.get("detector"), dict):
        raise StateError(f"--state {path}: not a detector state file "
                         "(no 'detector' object in it)")
    version = state["detector"].get("version")
    if version != STATE_VERSION:
        raise StateError(f"--state {path}: state version {version!r}, this detector reads "
                         f"version {STATE_VERSION} (replay without this file to start afresh)")
    if not isinstance(state.get("adapters", {}), dict):
        raise StateError(f"--state {path}: damaged detector state ('adapters' is not an object)")
    try:
        restore(state, config)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise StateError(f"--state {path}: damaged detector state ({type(err).__name__}: "
                         f"{err})") from None
    return state


class EventSink(Protocol):
    """Where a replay writes its events (a ``JsonLinesSink``, or anything with this method)."""

    def write_many(self, events: list[AnomalyEvent]) -> None: ...


def replay(mail_paths: list[str], dns_paths: list[str], out: EventSink,
           dead_letter: JsonLinesSink | None = None, config: DetectorConfig | None = None,
           state: dict | None = None, save_state: Callable[[bytes], None] | None = None,
           progress: Callable[[int, int], None] | None = None,
           mail_format: str = CONTRACT, dns_format: str = CONTRACT,
           announce: Callable[[str], None] | None = None,
           warn: Callable[[str], None] | None = None,
           now: float | None = None,
           series: Callable[[list[dict]], None] | None = None) -> ReplaySummary:
    """Replay the files into ``out``; rejected lines go to ``dead_letter`` with their reason.

    Files in another log format than the contract's JSON go through their adapter first; a line
    the adapter rejects is dead-lettered as it was, and a converted record the core rejects is
    dead-lettered as converted (``"converted": true``, no line number). With ``save_state`` the
    state (``state`` is a previous one, from ``load_state``) is handed over at the end instead of
    the last windows being flushed. An input that breaks off part-way stops the replay: the
    summary then carries it in ``error`` and nothing is flushed or saved. ``now`` (epoch seconds:
    the command gives the wall clock at its start) rejects records more than
    ``max_future_skew_s`` ahead of it as ``future_ts``, as the worker does with its clock.
    ``series``, when given, is handed the core's per-step series rows as steps close
    (``Detector.series``); without it the core keeps none.
    """
    started = time.perf_counter()
    detector = restore(state, config, series=series is not None)

    def drain_series() -> None:
        if series is not None and detector.series:
            series(detector.series)
            detector.series = []
    # The counters continue a restored state's; this run's summary counts this run only.
    counted_before = Counter(detector.counters)
    inputs = open_inputs(mail_paths, dns_paths, mail_format, dns_format, announce, warn)
    adapter_counts: Counter[str] = Counter()
    core_rejected: dict[str, Counter] = {MAIL: Counter(), DNS: Counter()}
    saved = saved_adapters(state)
    for index, current in enumerate(inputs):
        current.step = Source(detector, current.lines.stream, current.name, current.adapter,
                              saved.get(str(index)))
    total_size = sum(i.lines.size for i in inputs)

    def forward(current: _Input, fed: Fed) -> None:
        """Count what one step gave, write its events, dead-letter its rejections (a line the
        adapter refused as it was; a converted record the core refused with ``"converted":
        true`` and no line number)."""
        stream, path = current.lines.stream, current.lines.path
        count = current.count
        if current.adapter is not None:
            adapter_counts["skipped"] += fed.skipped
            count.skipped += fed.skipped
        count.records += fed.records
        current.high = detector.clock.high.get(current.name, current.high)
        out.write_many(fed.events)
        drain_series()
        for rejection in fed.rejected:
            reason = rejection.reason
            count.rejected[reason] += 1
            if rejection.adapter is not None:
                adapter_counts[f"rejected:{reason}"] += 1
            else:
                count.core_rejected += 1
                core_rejected[stream][reason] += 1
            if dead_letter is None:
                continue
            line = rejection.position           # (the line number: ``refs`` below)
            raw = rejection.raw.decode("utf-8", "backslashreplace")
            if rejection.adapter is not None:
                dead_letter.write({"reason": reason, "stream": stream, "source": path,
                                   "format": rejection.adapter, "line": line, "raw": raw})
                continue
            letter = {"reason": reason, "stream": stream, "source": path, "line": line,
                      "raw": raw}
            if rejection.converted:
                letter["converted"] = True
            dead_letter.write(letter)

    active = list(inputs)
    error = None
    try:
        while active:
            current = min(active, key=lambda i: i.high)
            try:
                lines, numbers = current.lines.read_chunk()
            except TruncatedInput as broken:
                error = broken
                break
            if lines:
                forward(current, current.step.feed(lines, now, refs=numbers))
            else:
                forward(current, current.step.release(now))
                if current.adapter is not None:
                    forward(current, current.step.flush(now))
                active.remove(current)
                out.write_many(detector.finish_source(current.name))
                drain_series()
            if progress is not None:
                progress(sum(i.lines.position() for i in inputs), total_size)
        for current in active:     # (stopped by a broken input: what the others hold)
            forward(current, current.step.release(now))
        if error is None:
            if save_state is not None:
                steps = {str(n): i.step for n, i in enumerate(inputs)}
                save_state(orjson.dumps(envelope(detector, steps)))
            else:
                out.write_many(detector.close())
                drain_series()
    finally:
        for current in inputs:
            current.count.lines = current.lines.line_no
            current.count.blank = current.lines.blank
            current.lines.close()
    stats = detector.stats()
    for key, value in counted_before.items():
        stats[key] -= value
    return ReplaySummary(
        records={MAIL: stats.get("mail_records", 0), DNS: stats.get("dns_records", 0)},
        rejected={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")},
        anomalies={k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("anomalies:")},
        stats=stats,
        adapters=dict(adapter_counts),
        inputs=[i.count for i in inputs],
        seconds=time.perf_counter() - started,
        error=error,
        core_rejected=core_rejected,
    )


__all__ = ["InputCount", "ReplaySummary", "StateError", "load_state", "open_inputs",
           "replay"]

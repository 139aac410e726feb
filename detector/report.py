"""Anomaly events as a table a person reads at a glance (``make demo``, ``detector show``)."""

from __future__ import annotations

from collections.abc import Iterable

COLUMNS = ("state", "outcome", "slice", "severity", "detected_at", "failed/attempts", "rate", "expected",
           "score", "top resolver", "top sender domain")


def _top(event: dict, field: str) -> str:
    values = event["evidence"].get(field) or []
    return f"{values[0]['value']} ({values[0]['count']})" if values else "-"


def event_row(event: dict) -> tuple[str, ...]:
    observed, expected = event["observed"], event["expected"]
    return (
        event["state"],
        event["key"]["outcome"],
        " ".join(str(v) for k, v in event["key"].items() if k != "outcome") or "-",
        event["severity"],
        event["detected_at"],
        f"{observed['failures']}/{observed['attempts']}",
        f"{observed['failure_rate']:.1%}",
        f"{expected['failure_rate']:.2%}",
        f"{event['score']:.1f}",
        _top(event, "resolvers"),
        _top(event, "sender_domains"),
    )


def events_table(events: Iterable[dict]) -> str:
    rows = [COLUMNS] + [event_row(e) for e in events]
    if len(rows) == 1:
        return "no anomaly events"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

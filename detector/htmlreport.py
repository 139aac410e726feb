"""One self-contained HTML page of a run: failure rates over time, the anomalies, the summary.

Input is what the core gives as data: the anomaly events, and the per-step series
(``Detector(series=True)``: per closed step its end, OTP attempts, failures per outcome-wide key
and the expected rate of every key). Steps are summed into minutes so a rate reads as a rate, not
as the noise of 10-second steps: per minute, a key's failure rate is its failures over the OTP
attempts, its expected rate is the steps' expected rates weighted by their attempts, and its band
is where chance alone would put that minute's rate around the expected one (a normal
approximation to the binomial, 3 standard deviations: ``p +- 3 sqrt(p (1 - p) / n)``). Each
anomaly is shaded from its ``since`` to its resolution (or the end of the data), labelled with its
id, severity and slice, and listed in a table with its evidence. plotly draws the chart; its
JavaScript is written into the page (no CDN), so the file opens with no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path

import orjson

from .core.outcomes import KEYS
from .core.records import format_ts, parse_ts

#: Minutes: the chart's resolution.
MINUTE_S = 60
#: Standard deviations of the expected-rate band.
BAND_SIGMAS = 3.0
EVIDENCE = (("sender_domains", "top senders"), ("resolvers", "resolvers"),
            ("tenants", "tenants"), ("status_codes", "status codes"))
#: One colour per trace key, ALL in grey, kept apart from the anomalies' red shading.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78")


class ReportInputError(ValueError):
    """A series file that cannot be read (the message names the file, the line and why)."""


def load_series(path: str | Path) -> list[dict]:
    """Series rows from a JSON-lines file written by ``detector replay --series``."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ReportInputError(f"--series {path}: cannot read: {err.strerror}") from None
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ReportInputError(f"--series {path}: line {number} is not JSON") from None
        if not (isinstance(row, dict) and {"end", "attempts", "failures", "expected"} <= row.keys()
                and isinstance(row["expected"], list) and len(row["expected"]) == len(KEYS)):
            raise ReportInputError(f"--series {path}: line {number} is not a series row (end, "
                                   f"attempts, failures, expected: {len(KEYS)} rates)")
        rows.append(row)
    return rows


def minutes(series: Iterable[dict]) -> dict:
    """The series summed per minute: ``{"end": [...], "attempts": [...], "failures": {key:
    [...]}, "expected": {key: [...]}}`` for every key with any failure (ALL included)."""
    per_minute: dict[int, list] = {}
    for row in series:
        minute = math.ceil(row["end"] / MINUTE_S) * MINUTE_S
        slot = per_minute.get(minute)
        if slot is None:
            slot = per_minute[minute] = [0, {}, [0.0] * len(KEYS)]
        n = row["attempts"]
        slot[0] += n
        for key, x in row["failures"].items():
            slot[1][key] = slot[1].get(key, 0) + x
        for k, p in enumerate(row["expected"]):
            slot[2][k] += n * p
    failing = {key for slot in per_minute.values() for key in slot[1]}
    keys = [key for key in KEYS if key in failing]
    ends = sorted(per_minute)
    failures: dict[str, list] = {}
    expected: dict[str, list] = {}
    for key in keys:
        k = KEYS.index(key)
        failures[key] = [per_minute[m][1].get(key, 0) for m in ends]
        expected[key] = [per_minute[m][2][k] / per_minute[m][0] if per_minute[m][0]
                         else None for m in ends]
    return {"end": ends, "attempts": [per_minute[m][0] for m in ends], "failures": failures,
            "expected": expected}


def anomalies(events: Iterable[dict]) -> list[dict]:
    """The events folded per anomaly id, in order of opening: its key, ``since``, when it was
    opened and resolved (None while open), its worst severity, and its newest event (a resolved
    event carries the whole anomaly's totals and evidence)."""
    ranks = {"info": 0, "warning": 1, "critical": 2}
    found: dict[str, dict] = {}
    for event in events:
        one = found.setdefault(event["id"], {"id": event["id"], "key": event["key"],
                                             "since": event["since"], "opened": None,
                                             "resolved": None, "severity": event["severity"],
                                             "updates": 0})
        if event["state"] == "open":
            one["opened"] = event["detected_at"]
        elif event["state"] == "resolved":
            one["resolved"] = event["detected_at"]
        else:
            one["updates"] += 1
        if ranks.get(event["severity"], 0) > ranks.get(one["severity"], 0):
            one["severity"] = event["severity"]
        one["last"] = event
    return sorted(found.values(), key=lambda a: (a["opened"] or a["since"], a["id"]))


def slice_name(key: dict) -> str:
    """``SERVFAIL``, ``SERVFAIL sender_domain=auth.bank1.example``."""
    return " ".join([key["outcome"]] + [f"{f}={v}" for f, v in key.items() if f != "outcome"])


def figure(series: list[dict], found: list[dict]):
    """The plotly figure: one panel per key with failures (ALL first), each with its failure
    rate, its expected rate and band; every anomaly shaded across the panels and labelled with
    its id, severity and slice in the top one."""
    from plotly.subplots import make_subplots

    per_minute = minutes(series)
    keys = sorted(per_minute["failures"], key=lambda key: (key != "ALL", KEYS.index(key)))
    times = [_plot_time(m) for m in per_minute["end"]]
    n = per_minute["attempts"]
    fig = make_subplots(rows=max(1, len(keys)), cols=1, shared_xaxes=True,
                        vertical_spacing=0.04, subplot_titles=[
                            f"{key}: {sum(per_minute['failures'][key]):,} failures"
                            for key in keys])
    for row, key in enumerate(keys, 1):
        colour = "#444444" if key == "ALL" else COLOURS[(row - 2) % len(COLOURS)]
        rate = [x / a if a else None for x, a in zip(per_minute["failures"][key], n)]
        expected = per_minute["expected"][key]
        low, high = [], []
        for p, a in zip(expected, n):
            spread = BAND_SIGMAS * math.sqrt(p * (1 - p) / a) if a and p is not None else None
            low.append(max(p - spread, 0.0) if spread is not None else None)
            high.append(min(p + spread, 1.0) if spread is not None else None)
        first = row == 1
        fig.add_scatter(x=times, y=high, name="band", mode="lines", line_width=0,
                        line_shape="hv", legendgroup="band", showlegend=False,
                        hoverinfo="skip", row=row, col=1)
        fig.add_scatter(x=times, y=low, name="band", mode="lines", line_width=0,
                        line_shape="hv", fill="tonexty", fillcolor="rgba(60,60,60,0.13)",
                        legendgroup="band", showlegend=first, hoverinfo="skip",
                        legendrank=3, row=row, col=1)
        fig.add_scatter(x=times, y=expected, name="expected", mode="lines", line_shape="hv",
                        line=dict(color="#222222", dash="dot", width=1.2),
                        legendgroup="expected", showlegend=first, legendrank=2,
                        hovertemplate=f"{key} expected %{{y:.3%}}<extra></extra>",
                        row=row, col=1)
        fig.add_scatter(x=times, y=rate, name=key, mode="lines", line_shape="hv",
                        line=dict(color=colour, width=1.6), legendrank=1,
                        customdata=list(zip(per_minute["failures"][key], n)),
                        hovertemplate=(f"{key} %{{y:.2%}} (%{{customdata[0]}} of "
                                       "%{customdata[1]} OTP attempts)<extra></extra>"),
                        row=row, col=1)
        fig.update_yaxes(tickformat=".1~%", rangemode="tozero", row=row, col=1)
    end = times[-1] if times else None
    for index, one in enumerate(found):
        since = _plot_time(one["since"])
        until = _plot_time(one["resolved"]) if one["resolved"] else end or since
        colour = "rgba(214,39,40,0.16)" if one["severity"] == "critical" else \
            "rgba(255,127,14,0.18)"
        fig.add_vrect(x0=since, x1=until, fillcolor=colour, line_width=0, layer="below",
                      row="all", col=1)
        fig.add_annotation(x=since, xref="x", yref="y domain", y=0.97 - 0.3 * (index % 3),
                           xanchor="right", yanchor="top", showarrow=False, align="right",
                           text=(f"<b>{html.escape(one['id'])}</b><br>{one['severity']}: "
                                 f"{html.escape(slice_name(one['key']))}"
                                 + ("" if one["resolved"] else " (still open)")),
                           bgcolor="rgba(255,255,255,0.85)", bordercolor="#d62728",
                           font=dict(size=11))
    fig.update_layout(
        title=dict(text="OTP delivery failure rate per minute", font_size=15, x=0.01,
                   y=0.995, yanchor="top", yref="container"),
        hovermode="x unified", height=140 + 210 * max(1, len(keys)),
        template="plotly_white", legend=dict(orientation="h", yref="container", y=0.975,
                                             yanchor="top", x=0.0, xanchor="left"),
        margin=dict(l=60, r=20, t=80, b=40))
    fig.update_xaxes(title_text="event time (UTC)", row=max(1, len(keys)), col=1)
    return fig


def _plot_time(value: str | float) -> str:
    """A contract timestamp or epoch seconds as plotly's date string (UTC, no zone suffix)."""
    seconds = parse_ts(value) if isinstance(value, str) else value
    return format_ts(seconds).replace("T", " ").rstrip("Z")


def _alpha(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _table(found: list[dict]) -> str:
    head = ("id", "slice", "severity", "since", "opened", "resolved", "failed / attempts",
            "expected", *(title for _, title in EVIDENCE))
    rows = []
    for one in found:
        last = one["last"]
        observed = last["observed"]
        evidence = last.get("evidence", {})
        cells = [html.escape(str(c)) for c in (
            one["id"], slice_name(one["key"]), one["severity"], one["since"],
            one["opened"] or "-", one["resolved"] or "still open",
            f"{observed['failures']:,} / {observed['attempts']:,} "
            f"({observed['failure_rate']:.1%})", f"{last['expected']['failure_rate']:.2%}")]
        for field, _ in EVIDENCE:
            cells.append("<br>".join(html.escape(f"{item['value']} ({item['count']:,})")
                                     for item in evidence.get(field) or []) or "-")
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    if not rows:
        return "<p>No anomaly events.</p>"
    return ("<table id='anomalies'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _summary_html(summary) -> str:
    """A replay's summary: records and rejections by reason per stream, then its text."""
    rows = []
    for stream in ("mail", "dns"):
        counts = summary.stream_counts(stream)
        reasons = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("rejected:")}
        rows.append(f"<tr><td>{stream}</td><td>{counts.get('lines', 0):,}</td>"
                    f"<td>{counts.get('records', 0):,}</td>"
                    f"<td>{sum(reasons.values()):,}</td><td>"
                    + (", ".join(f"{html.escape(r)} {n:,}" for r, n in sorted(reasons.items()))
                       or "-") + "</td></tr>")
    return ("<h2>Replay summary</h2><table id='summary'><thead><tr><th>stream</th>"
            "<th>lines read</th><th>records</th><th>rejected</th><th>by reason</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>"
            f"<pre>{html.escape(summary.format())}</pre>")


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}"""


def render(events: list[dict], series: list[dict], summary=None,
           title: str = "OTP delivery failures by DNS outcome") -> str:
    """The whole page as one string: plotly's JavaScript inline, no network needed."""
    try:
        import plotly  # noqa: F401  (the import error below says what to install)
    except ImportError:
        raise ReportInputError("the HTML report needs plotly: pip install "
                               "'otp-dns-detector[report]'") from None
    found = anomalies(events)
    # After plotly has drawn, the plot says which traces it drew (for people and tests alike).
    marker = ("var plot = document.getElementById('{plot_id}');"
              "plot.setAttribute('data-traces', JSON.stringify(plot.data.map("
              "function (t) { return t.name; })));")
    chart = figure(series, found).to_html(full_html=False, include_plotlyjs=True,
                                          div_id="failure-rates", post_script=marker,
                                          config={"responsive": True})
    span = ""
    if series:
        span = (f"<p>{format_ts(series[0]['end'])} to {format_ts(series[-1]['end'])}: "
                f"{sum(r['attempts'] for r in series):,} OTP delivery attempts, "
                f"{sum(r['failures'].get('ALL', 0) for r in series):,} failed; "
                f"{len(found)} anomalies.</p>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{span}<p>Per minute and per DNS outcome with "
            "failures (ALL: every failure): the OTP failure rate, the expected rate (dotted) and "
            f"the band chance alone allows around it for that minute's attempts (grey, "
            f"{BAND_SIGMAS:g} sd); each anomaly shaded from its start to its resolution.</p>"
            f"{chart}<h2>Anomalies</h2>{_table(found)}"
            + (_summary_html(summary) if summary is not None else "")
            + "</body></html>")


__all__ = ["ReportInputError", "anomalies", "figure", "load_series", "minutes", "render",
           "slice_name"]

"""report.html: the report's text and its plots, one file that opens offline.

plotly.js is embedded inline once (no CDN, no external script or stylesheet): the equity of
every variant over the placebo band, the placebo distribution of the veto value, the
calibration curve and the weekly veto values.
"""

from __future__ import annotations

import html
from datetime import datetime

import numpy as np
import plotly.graph_objects as go

from llm_oracle.report.build import Report
from llm_oracle.report.render_md import LABELS, headline

_COLORS = {
    "oracle": "#1f77b4",
    "prefilter": "#ff7f0e",
    "inverted": "#d62728",
    "identity": "#9467bd",
}
_GRID = 300


def _equity_on(
    times: list[str], values: list[float], grid: np.ndarray, wallet: float
) -> np.ndarray:
    if not times:
        return np.full(len(grid), wallet)
    t = np.array([np.datetime64(datetime.fromisoformat(x).replace(tzinfo=None)) for x in times])
    idx = np.searchsorted(t, grid, side="right")
    return np.concatenate([[wallet], np.asarray(values)])[idx]


def equity_figure(report: Report) -> go.Figure:
    start = np.datetime64(report.start.replace(tzinfo=None))
    end = np.datetime64(report.end.replace(tzinfo=None))
    grid = start + (end - start) * np.linspace(0, 1, _GRID)
    fig = go.Figure()
    placebo = [
        _equity_on(*report.equity[v.name], grid, report.wallet)
        for v in report.variants
        if v.kind == "placebo"
    ]
    x = [str(g) for g in grid.astype("datetime64[s]")]
    if placebo:
        stack = np.vstack(placebo)
        low, mid, high = np.percentile(stack, [5, 50, 95], axis=0)
        fig.add_trace(
            go.Scatter(x=x, y=high, line={"width": 0}, showlegend=False, hoverinfo="skip")
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=low,
                fill="tonexty",
                fillcolor="rgba(120,120,120,0.25)",
                line={"width": 0},
                name=f"placebo band p5..p95 ({len(placebo)} seeds)",
            )
        )
        fig.add_trace(
            go.Scatter(x=x, y=mid, line={"color": "grey", "dash": "dot"}, name="placebo median")
        )
    for v in report.variants:
        if v.kind == "placebo":
            continue
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_equity_on(*report.equity[v.name], grid, report.wallet),
                name=LABELS.get(v.name, v.name),
                line={"color": _COLORS.get(v.name)},
            )
        )
    fig.update_layout(
        title="Equity of each variant (closed trades) and the placebo band",
        yaxis_title=report.stake_currency,
    )
    return fig


def placebo_figure(report: Report) -> go.Figure:
    fig = go.Figure(go.Histogram(x=report.placebo_veto_values, name="placebo seeds", nbinsx=50))
    for value, label, color in (
        (report.veto.r_per_100.value, "oracle", "#1f77b4"),
        (report.placebo_veto.p95, "placebo p95", "grey"),
    ):
        fig.add_vline(x=value, line_color=color, annotation_text=label)
    fig.update_layout(
        title="Value of the vetoes (R per 100 candidates): oracle vs placebo distribution",
        xaxis_title="R per 100 candidates",
        yaxis_title="placebo seeds",
    )
    return fig


def calibration_figure(report: Report) -> go.Figure:
    bins = [b for b in report.calibration.bins if b.n]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], line={"dash": "dash", "color": "grey"}, name="perfect")
    )
    fig.add_trace(
        go.Scatter(
            x=[b.mean_confidence for b in bins],
            y=[b.win_rate for b in bins],
            mode="lines+markers",
            marker={"size": [8 + 30 * (b.n / max(x.n for x in bins)) ** 0.5 for b in bins]},
            text=[f"n={b.n}" for b in bins],
            name="confirmed candidates",
        )
    )
    fig.update_layout(
        title="Calibration: stated confidence vs realised win rate (veto ledger)",
        xaxis={"title": "confidence", "range": [0, 1]},
        yaxis={"title": "win rate", "range": [0, 1]},
    )
    return fig


def weekly_figure(report: Report) -> go.Figure:
    weeks = report.weeks
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[w.week for w in weeks],
            y=[w.veto.r_per_100.value for w in weeks],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [w.veto.r_per_100.high - w.veto.r_per_100.value for w in weeks],
                "arrayminus": [w.veto.r_per_100.value - w.veto.r_per_100.low for w in weeks],
            },
            mode="markers",
            name="oracle (95% CI)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[w.week for w in weeks],
            y=[w.placebo_p95 for w in weeks],
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 20},
            name="placebo p95",
        )
    )
    fig.update_layout(title="Veto value per week (R per 100 candidates)")
    return fig


def render_html(report: Report) -> str:
    figures = [equity_figure(report), placebo_figure(report), calibration_figure(report)]
    if report.weeks:
        figures.append(weekly_figure(report))
    plots = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"plot-{i}")
        for i, fig in enumerate(figures)
    ]
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>llm-oracle report {html.escape(report.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "pre{background:#f4f4f4;padding:8px}</style></head><body>"
        f"<h1>Is the oracle worth its cost? {html.escape(report.name)}</h1>"
        f"<p><b>Verdict:</b> {html.escape(report.verdict)}</p>"
        + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
        + f"<pre>{html.escape(headline(report))}</pre>"
        + "".join(plots)
        + "<p>Full tables: report.md; every number: report.json.</p></body></html>"
    )

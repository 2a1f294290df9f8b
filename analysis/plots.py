"""Plotly figures of the report, built from the frames analysis produces (no queries here).

Every figure is interactive in the page: values on hover, a click on a legend entry hides
its series (a double click shows it alone).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import summary

LAT_SHOWN = ("p50", "p95", "p99")  # the others start hidden (legend click shows them)
HEIGHT = 420
_UNITS = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns"))


def ns_label(ns: float) -> str:
    """A latency bucket bound for humans: 4096 -> '4.1 µs'."""
    for scale, unit in _UNITS:
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def datetimes(ns: pd.Series | pd.Index) -> pd.DatetimeIndex:
    """Epoch ns as UTC datetimes at ms precision (what a browser's Date holds)."""
    return pd.to_datetime(pd.Index(ns).astype("int64") // 1_000_000, unit="ms", utc=True)


def _family(row: pd.Series) -> str:
    return f"{row['rw']} {row['bs']} {row['op']}"


def vs_qd(vs: pd.DataFrame) -> go.Figure:
    """IOPS (mean, 95% CI as error bars) and latency percentiles against queue depth."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("IOPS (mean, 95% CI)", "completion latency (ms)")
    )
    if vs.empty:
        return fig
    vs = vs.assign(family=vs.apply(_family, axis=1)).sort_values("qd")
    for fam, g in vs.groupby("family", sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["qd"],
                y=g["iops_mean"],
                error_y={
                    "type": "data",
                    "array": g["iops_ci_high"] - g["iops_mean"],
                    "arrayminus": g["iops_mean"] - g["iops_ci_low"],
                },
                mode="lines+markers",
                name=f"{fam} IOPS",
                legendgroup=fam,
                hovertemplate="QD %{x}: %{y:,.0f} IOPS<extra>%{fullData.name}</extra>",
            ),
            row=1,
            col=1,
        )
        for level in ("p50", "p95", "p99"):
            col = f"lat_{level}_ms"
            if col in g:
                fig.add_trace(
                    go.Scatter(
                        x=g["qd"],
                        y=g[col],
                        mode="lines+markers",
                        name=f"{fam} {level}",
                        legendgroup=fam,
                        hovertemplate="QD %{x}: %{y:.3f} ms<extra>%{fullData.name}</extra>",
                    ),
                    row=1,
                    col=2,
                )
    fig.update_xaxes(title_text="queue depth (iodepth × numjobs)", type="log", dtick=0.30103)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(height=HEIGHT, hovermode="closest")
    return fig


def cost_vs_qd(costs: pd.DataFrame) -> go.Figure:
    """Resource-cost ratios (e.g. CPU seconds per 1000 client IOs) against queue depth.

    `costs` has test, name, value, qd, family.
    """
    fig = go.Figure()
    for (name, fam), g in costs.sort_values("qd").groupby(["name", "family"], sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["qd"],
                y=g["value"],
                mode="lines+markers",
                name=f"{name} · {fam}",
                text=g["test"],
                hovertemplate="%{text}: %{y:.4g}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_xaxes(title_text="queue depth", type="log", dtick=0.30103)
    fig.update_layout(height=HEIGHT, yaxis_title="cost per unit of client work")
    return fig


def test_series(throughput: dict[str, pd.DataFrame], latency: dict[str, pd.DataFrame]) -> go.Figure:
    """IOPS and latency percentiles per second of every test, on seconds since its start."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("IOPS per second (all nodes)", "latency percentiles per second (ms)"),
    )
    for test, df in throughput.items():
        for op, g in df.groupby("op"):
            fig.add_trace(
                go.Scatter(
                    x=g["t_s"],
                    y=g["iops"],
                    mode="lines+markers",
                    name=f"{test} {op}",
                    legendgroup=test,
                    hovertemplate="%{x:.0f} s: %{y:,.0f} IOPS<extra>%{fullData.name}</extra>",
                ),
                row=1,
                col=1,
            )
    for test, df in latency.items():
        for op, g in df.groupby("op"):
            for level in summary.LAT_LEVELS:
                fig.add_trace(
                    go.Scatter(
                        x=g["t_s"],
                        y=g[level],
                        mode="lines",
                        name=f"{test} {op} {level}",
                        legendgroup=test,
                        visible=True if level in LAT_SHOWN else "legendonly",
                        hovertemplate="%{x:.0f} s: %{y:.3f} ms<extra>%{fullData.name}</extra>",
                    ),
                    row=2,
                    col=1,
                )
    fig.update_xaxes(title_text="seconds since the test started", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_layout(height=2 * HEIGHT, hovermode="closest")
    return fig


def latency_heatmap(test: str, df: pd.DataFrame) -> go.Figure:
    """Completions per second per log2 latency bucket (darker: more I/Os)."""
    ops = list(dict.fromkeys(df["op"]))
    fig = make_subplots(rows=1, cols=max(len(ops), 1), subplot_titles=ops or None)
    for i, op in enumerate(ops, 1):
        g = df[df["op"] == op]
        z = g.pivot_table(index="le", columns="t_s", values="count", aggfunc="sum", fill_value=0)
        labels = [f"≤ {ns_label(v)}" for v in z.index]
        fig.add_trace(
            go.Heatmap(
                x=z.columns,
                y=labels,
                z=z.to_numpy(),
                colorscale="Viridis",
                showscale=i == 1,
                name=op,
                hovertemplate="%{x:.0f} s, %{y}: %{z:,} I/Os<extra>" + op + "</extra>",
            ),
            row=1,
            col=i,
        )
    fig.update_xaxes(title_text="seconds since the test started")
    fig.update_layout(height=320, title_text=test, title_font_size=13)
    return fig


def cluster_load(load: pd.DataFrame, metrics: tuple[str, ...], tests: pd.DataFrame) -> go.Figure:
    """Per-role load over the span, one row per metric; test windows shaded and hoverable.

    `tests` has test, start, end (datetimes).
    """
    fig = make_subplots(
        rows=len(metrics), cols=1, shared_xaxes=True, subplot_titles=metrics, vertical_spacing=0.05
    )
    for r, metric in enumerate(metrics, 1):
        sub = load[load["metric"] == metric]
        for role, g in sub.groupby("role"):
            fig.add_trace(
                go.Scatter(
                    x=datetimes(g["time"]),
                    y=g["value"],
                    mode="lines",
                    name=str(role),
                    legendgroup=str(role),
                    showlegend=r == 1 or sub["role"].nunique() != load["role"].nunique(),
                    hovertemplate="%{y:,.1f}<extra>" + str(role) + "</extra>",
                ),
                row=r,
                col=1,
            )
    for row in tests.itertuples():
        fig.add_vrect(x0=row.start, x1=row.end, fillcolor="#888", opacity=0.12, line_width=0)
    if len(tests):
        fig.add_trace(
            go.Scatter(
                x=tests["start"] + (tests["end"] - tests["start"]) / 2,
                y=[0] * len(tests),
                mode="markers",
                marker={"symbol": "triangle-up", "size": 9, "color": "#555"},
                text=tests["test"],
                name="test windows",
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fig.update_layout(height=230 * max(len(metrics), 1), hovermode="x unified")
    return fig


def resource_heatmap(df: pd.DataFrame, title: str, zmax: float | None = 100.0) -> go.Figure:
    """One row per node (or node:device), grouped by role, one column per time bucket."""
    fig = go.Figure()
    if df.empty:
        return fig
    dev = df["device"].fillna("").astype(str)
    suffix = ":" + dev.where(~dev.isin(["", "cpu-total"]), "")
    label = df["role"].fillna("") + " | " + df["node"] + suffix.where(suffix != ":", "")
    df = df.assign(label=label)
    z = df.pivot_table(index="label", columns="time", values="value", aggfunc="mean")
    z = z.sort_index(ascending=False)
    fig.add_trace(
        go.Heatmap(
            x=datetimes(z.columns),
            y=list(z.index),
            z=z.to_numpy(),
            zmin=0,
            zmax=zmax,
            colorscale="YlOrRd",
            hovertemplate="%{y}<br>%{x}: %{z:.1f}<extra></extra>",
        )
    )
    fig.update_layout(height=max(220, 28 * len(z) + 140), title_text=title, title_font_size=13)
    return fig

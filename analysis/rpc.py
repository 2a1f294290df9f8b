"""RPC post-mortem of a run: what the ombt notebook computed, from InfluxDB alone.

Works the same on runs of `loadgen run` and on legacy ombt campaigns imported with
`collector ingest ombt`: both leave a `wally_test` record (kind=rpc) per iteration, `rpc`
summary points per agent and merged (`agent=all`, test=NAME/summary), failures by
exception type (`rpc_errors`, the same tags) and the merged latency distribution
(`rpc_hist`). Bus metrics (broker CPU and memory from procstat of beam.smp, TCP
established and network bytes, all on the bus nodes; connections from
rabbitmq_overview) are selected by each iteration's time window, never by a run tag,
so Telegraf-sourced data works too.

The result is one row per iteration (`iteration_table`), written as a self-contained HTML
page with plots (plotly, its JavaScript inlined: opens without network), CSV and JSON.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from collector import schema
from collector.influx import InfluxClient, regex_literal

NS = 1_000_000_000
SIDES = ("client", "server")
# How the table names each side's messages: clients send, servers receive.
VERBS = (("client", "sent"), ("server", "received"))
LAT_FIELDS = ("lat_mean", "lat_stddev", "lat_p50", "lat_p90", "lat_p99", "lat_p99_9")
BROKER_PROCESS = "beam.smp"
DEFAULT_BUS_ROLE = "rabbitmq"


class RpcAnalysisError(ValueError):
    """Nothing to analyse; the message says which run and what was looked for."""


@dataclass
class RpcIterationData:
    """One iteration's record and the points selected by its window."""

    test: str
    iteration: int
    status: str
    start_ns: int
    end_ns: int
    params: dict[str, Any]
    summary: pd.DataFrame  # rpc summary points: agent, side, msgs_ok, ...
    hist: pd.DataFrame  # rpc_hist: side, le, lower, count
    bus: dict[str, pd.DataFrame] = field(default_factory=dict)  # metric -> time, value
    errors: pd.DataFrame = field(default_factory=pd.DataFrame)  # rpc_errors: agent, side, ...

    def merged(self, side: str) -> dict[str, Any]:
        rows = self.summary[(self.summary["agent"] == "all") & (self.summary["side"] == side)]
        return rows.iloc[-1].to_dict() if len(rows) else {}

    def failures_by_type(self, side: str) -> dict[str, int]:
        """Merged failed messages of a side by exception type, most frequent first."""
        e = self.errors
        if e.empty:
            return {}
        rows = e[(e["agent"] == "all") & (e["side"] == side)].sort_values("time")
        counts = rows.groupby("error_type")["count"].last()
        return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}

    def agents(self, side: str) -> pd.DataFrame:
        s = self.summary
        return s[(s["agent"] != "all") & (s["side"] == side)]

    @property
    def call_type(self) -> str:
        return str(self.params.get("call_type", ""))

    @property
    def latency_side(self) -> str:
        """Round trip at the client for calls; one-way at the server otherwise (the notebook)."""
        return "client" if self.call_type == "rpc-call" else "server"


def load_iterations(
    client: InfluxClient, run: str, bus_role: str = DEFAULT_BUS_ROLE
) -> list[RpcIterationData]:
    """Every RPC iteration of `run` with its summary, distribution and bus metrics."""
    tests = client.query_df(
        'SELECT "start", "end", "iteration", "params", "status", "test" FROM wally_test '
        "WHERE run = $run AND kind = 'rpc'",
        {"run": run},
    )
    if tests.empty:
        known = client.tag_values(schema.WALLY_TEST.name, "run")
        raise RpcAnalysisError(
            f"run {run!r}: no RPC iterations (wally_test kind=rpc) in {client.database}; "
            f"runs known: {', '.join(known) or 'none'}"
        )
    tests = tests.sort_values(["iteration", "time"]).drop_duplicates("test", keep="last")
    summary = client.query_df(
        "SELECT * FROM rpc WHERE run = $run AND test =~ /\\/summary$/", {"run": run}
    )
    hist = client.query_df("SELECT * FROM rpc_hist WHERE run = $run", {"run": run})
    errors = client.query_df(
        "SELECT * FROM rpc_errors WHERE run = $run AND test =~ /\\/summary$/", {"run": run}
    )
    start, end = int(tests["start"].min()), int(tests["end"].max())
    bus = bus_metrics(client, start, end, bus_role)
    out = []
    for row in tests.itertuples():
        lo, hi = int(row.start), int(row.end)
        name = f"{row.test}/summary"

        def pick(df: pd.DataFrame, lo: int = lo, hi: int = hi, name: str = name) -> pd.DataFrame:
            if df.empty:
                return df
            return df[(df["test"] == name) & (df["time"] >= lo) & (df["time"] <= hi)]

        out.append(
            RpcIterationData(
                test=row.test,
                iteration=int(row.iteration),
                status=row.status,
                start_ns=lo,
                end_ns=hi,
                params=json.loads(row.params),
                summary=pick(summary),
                hist=pick(hist),
                errors=pick(errors),
                bus={
                    k: v[(v["time"] >= lo) & (v["time"] <= hi)].reset_index(drop=True)
                    for k, v in bus.items()
                },
            )
        )
    return out


def bus_metrics(
    client: InfluxClient, start_ns: int, end_ns: int, bus_role: str
) -> dict[str, pd.DataFrame]:
    """Per-second bus series over [start, end]: metric -> frame(time, value)."""
    window = {"s": start_ns, "e": end_ns}
    span = "time >= $s AND time <= $e"
    role = f"role =~ {regex_literal('(^|,)' + re.escape(bus_role) + '(,|$)')}"
    out: dict[str, pd.DataFrame] = {}

    def per_time(df: pd.DataFrame, column: str) -> pd.DataFrame:
        if df.empty or column not in df:
            return pd.DataFrame(columns=["time", "value"])
        s = df.groupby("time")[column].sum()
        return pd.DataFrame({"time": s.index.astype("int64"), "value": s.to_numpy(float)})

    proc = client.query_df(
        f'SELECT "cpu_usage", "memory_rss" FROM procstat WHERE process_name = $p AND {role} '
        f"AND {span}",
        {**window, "p": BROKER_PROCESS},
    )
    out["broker_cpu_pct"] = per_time(proc, "cpu_usage")
    mem = per_time(proc, "memory_rss")
    mem["value"] = mem["value"] / 2**20
    out["broker_mem_mb"] = mem
    overview = client.query_df(f'SELECT "connections" FROM rabbitmq_overview WHERE {span}', window)
    out["connections"] = per_time(overview, "connections")
    netstat = client.query_df(
        f'SELECT "tcp_established" FROM netstat WHERE {role} AND {span}', window
    )
    out["tcp_established"] = per_time(netstat, "tcp_established")
    net = client.query_df(
        f'SELECT "bytes_recv", "bytes_sent" FROM net WHERE {role} AND {span} GROUP BY "node", "device"',
        window,
    )
    for column, metric in (("bytes_recv", "net_recv_mb_s"), ("bytes_sent", "net_sent_mb_s")):
        if net.empty:
            out[metric] = pd.DataFrame(columns=["time", "value"])
            continue
        rates = []
        for _, g in net.sort_values("time").groupby(["node", "device"]):
            d = g[column].diff() / (g["time"].diff() / NS)
            rates.append(pd.DataFrame({"time": g["time"], column: d.clip(lower=0) / 2**20}))
        out[metric] = per_time(pd.concat(rates).dropna(), column)
    return out


def _stats(values: pd.Series) -> dict[str, float]:
    if values.empty:
        return {"min": math.nan, "mean": math.nan, "max": math.nan}
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def format_failures(by_type: Mapping[str, int]) -> str:
    """`{"MessagingTimeout": 12, "ConnectionError": 3}` -> "MessagingTimeout: 12;
    ConnectionError: 3", for the table's cells (empty when nothing failed)."""
    return "; ".join(f"{name}: {n}" for name, n in by_type.items())


def iteration_row(it: RpcIterationData) -> dict[str, Any]:
    """The table row of one iteration (the notebook's `_ombt_*` and `_agg_*` values)."""
    p = it.params
    row: dict[str, Any] = {
        "iteration": it.iteration,
        "test": it.test,
        "status": it.status,
        "call_type": it.call_type,
        "driver": p.get("driver", ""),
        "clients": len(it.agents("client")),
        "servers": len(it.agents("server")),
        "start": pd.Timestamp(it.start_ns, unit="ns", tz="UTC").isoformat(),
        "duration_s": (it.end_ns - it.start_ns) / NS,
    }
    for side, verb in VERBS:
        merged = it.merged(side)
        agents = it.agents(side)
        for what in ("ok", "fail"):
            column = f"msgs_{what}"
            row[f"{verb}_{what}"] = int(merged.get(column, 0) or 0)
            for stat, v in _stats(agents.get(column, pd.Series(dtype=float))).items():
                row[f"per_{side}_{what}_{stat}"] = v
        row[f"{verb}_fail_by_type"] = format_failures(it.failures_by_type(side))
        row[f"{side}_rate"] = float(merged.get("rate", math.nan))
        for f in LAT_FIELDS:
            v = merged.get(f)
            row[f"{side}_{f}"] = float(v) if v is not None and not pd.isna(v) else math.nan
    for metric, df in it.bus.items():
        row[metric] = float(df["value"].mean()) if len(df) else math.nan
    return row


def iteration_table(iterations: list[RpcIterationData]) -> pd.DataFrame:
    return pd.DataFrame([iteration_row(it) for it in iterations])


def distribution(it: RpcIterationData, side: str) -> pd.DataFrame:
    """The merged latency distribution of a side: lower, upper (ms) and count, by bucket."""
    h = it.hist[it.hist["side"] == side] if not it.hist.empty else it.hist
    if h.empty:
        return pd.DataFrame(columns=["lower", "upper", "count"])
    out = pd.DataFrame(
        {"lower": h["lower"].astype(float), "upper": h["le"].astype(float), "count": h["count"]}
    )
    return out.sort_values("lower").reset_index(drop=True)


# --- report --------------------------------------------------------------------------------


def figures(iterations: list[RpcIterationData], table: pd.DataFrame) -> list[tuple[str, Any]]:
    """(title, plotly figure) for the page: the notebook's plots, one line per server count
    and driver where it plots against the number of clients."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs: list[tuple[str, Any]] = []
    dist = go.Figure()
    for it in iterations:
        d = distribution(it, it.latency_side)
        if len(d):
            dist.add_trace(
                go.Scatter(
                    x=d["upper"],
                    y=d["count"],
                    mode="lines+markers",
                    line_shape="vh",
                    name=f"{it.iteration} {it.test} ({it.latency_side})",
                )
            )
    dist.update_layout(
        xaxis_type="log",
        xaxis_title="latency bucket upper bound (ms)",
        yaxis_title="messages",
        height=450,
    )
    figs.append(("Latency distribution per iteration (client for calls, server otherwise)", dist))

    for call_type, sub in table.groupby("call_type"):
        side = "client" if call_type == "rpc-call" else "server"
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=("client rate (msg/s)", f"{side} mean latency (ms)", f"{side} p99 (ms)"),
        )
        for (servers, driver), g in sub.sort_values("clients").groupby(["servers", "driver"]):
            label = f"{servers} servers, {driver}"
            for col, y in enumerate(("client_rate", f"{side}_lat_mean", f"{side}_lat_p99"), 1):
                fig.add_trace(
                    go.Scatter(
                        x=g["clients"],
                        y=g[y],
                        mode="lines+markers",
                        name=label,
                        legendgroup=label,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text="clients")
        fig.update_layout(height=400)
        figs.append((f"{call_type}: rate and latency vs number of clients", fig))

    metrics = list(iterations[0].bus) if iterations else []
    if any(len(df) for it in iterations for df in it.bus.values()):
        fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=metrics, shared_xaxes=True)
        for it in iterations:
            label = f"{it.iteration} {it.test}"
            for r, metric in enumerate(metrics, 1):
                df = it.bus[metric]
                fig.add_trace(
                    go.Scatter(
                        x=(df["time"] - it.start_ns) / NS,
                        y=df["value"],
                        mode="lines",
                        name=label,
                        legendgroup=label,
                        showlegend=r == 1,
                    ),
                    row=r,
                    col=1,
                )
        fig.update_xaxes(title_text="seconds since the iteration started", row=len(metrics))
        fig.update_layout(height=220 * len(metrics))
        figs.append(("Bus metrics during each iteration (its time window)", fig))
    return figs


def render_html(run: str, iterations: list[RpcIterationData], table: pd.DataFrame) -> str:
    """One page, no external assets: plotly's JavaScript is inlined once."""
    from plotly.offline import get_plotlyjs

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>RPC post-mortem {html.escape(run)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>RPC post-mortem: run {html.escape(run)}</h1>",
        f"<p>{len(iterations)} iteration(s). Latencies in ms; rates in messages/s; bus "
        "metrics are means over each iteration's window.</p>",
        "<h2>Iterations</h2>",
        table.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"),
    ]
    for title, fig in figures(iterations, table):
        parts += [
            f"<h2>{html.escape(title)}</h2>",
            fig.to_html(full_html=False, include_plotlyjs=False),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def export(
    run: str, iterations: list[RpcIterationData], out_dir: Path
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Write rpc.html, rpc.csv and rpc.json under `out_dir`; the table and the paths."""
    table = iteration_table(iterations)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"rpc.{kind}" for kind in ("html", "csv", "json")}
    table.to_csv(paths["csv"], index=False)
    doc = {
        "run": run,
        "iterations": [
            {
                **{k: _json_safe(v) for k, v in row.items()},
                **{f"{verb}_fail_by_type": it.failures_by_type(side) for side, verb in VERBS},
                "params": it.params,
                "distribution": {
                    side: distribution(it, side).to_dict(orient="records") for side in SIDES
                },
            }
            for row, it in zip(table.to_dict(orient="records"), iterations, strict=True)
        ],
    }
    paths["json"].write_text(json.dumps(doc, indent=1, default=_json_safe))
    paths["html"].write_text(render_html(run, iterations, table))
    return table, paths


def console_table(run: str, table: pd.DataFrame) -> Table:
    """The key columns for the terminal; the files have all of them."""
    out = Table(title=f"RPC iterations of {run}")
    cols = {
        "iteration": "#",
        "test": "test",
        "clients": "clients",
        "servers": "servers",
        "sent_ok": "sent ok",
        "sent_fail": "failed",
        "sent_fail_by_type": "failed by type",
        "received_ok": "received",
        "client_rate": "msg/s",
        "client_lat_mean": "client mean ms",
        "client_lat_p99": "client p99 ms",
        "server_lat_mean": "server mean ms",
    }
    for title in cols.values():
        out.add_column(title, justify="left" if title == "test" else "right")
    for row in table.to_dict(orient="records"):
        cells = []
        for key in cols:
            v = row.get(key)
            if isinstance(v, float):
                cells.append("-" if math.isnan(v) else f"{v:,.3f}" if "lat" in key else f"{v:,.0f}")
            else:
                cells.append(str(v) if v != "" else "-")
        out.add_row(*cells)
    return out

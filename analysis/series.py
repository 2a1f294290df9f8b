"""Time series for reports: a test's per-second numbers and the cluster's load over a span.

A test's series cover its whole run (first node start to last node stop), so the ramp
and the reliable window can both be seen; its numbers (analysis.summary) come from the
reliable window only. Cluster series are selected by time span and grouped by the
`role` tag on the server; a node with several roles (`role` = "a,b") counts in each.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from analysis import bottlenecks, summary
from analysis.windows import NS, TestWindow
from collector import discovery, histogram, schema
from collector.influx import InfluxClient, quote_ident, series_to_frame

MAX_POINTS = 600  # buckets per cluster series: enough for a screen, small for a page


def whole(t: TestWindow) -> TestWindow:
    """The test with its window widened to everything fio ran (ramp included)."""
    return dataclasses.replace(t, start_ns=t.first_start_ns - NS, end_ns=t.last_end_ns + NS)


def step_for(lo_ns: int, hi_ns: int) -> int:
    """Bucket width (s) that keeps a span to at most MAX_POINTS buckets."""
    return max(1, math.ceil((hi_ns - lo_ns) / NS / MAX_POINTS))


def throughput(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """Per-second IOPS and bytes/s summed over nodes: columns t_s, op, iops, bw_bytes.

    t_s is seconds since the first node started (the end of the second sampled).
    """
    wide = summary.fio_seconds(client, whole(t))
    if wide.empty:
        return pd.DataFrame(columns=["t_s", "op", "iops", "bw_bytes"])
    long = wide.stack(level="op", future_stack=True).reset_index()
    long = long.rename(columns={"bw": "bw_bytes"})
    long["t_s"] = (long["time"].astype("int64") - t.first_start_ns) / NS
    return long[["t_s", "op", "iops", "bw_bytes"]].dropna(subset=["iops"])


def latency(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """Per-second latency percentiles (ms) of all nodes' completions together, per op.

    fio's fine histograms of each second are summed over nodes and interpolated within
    the bin (as analysis.summary does for the whole test): a percentile over nodes,
    not an average of per-node percentiles.
    """
    m = schema.FIO_HIST_FINE.name
    df = client.query_df(
        f'SELECT "bins", "coarseness" FROM {quote_ident(m)} WHERE "run" = $run AND "test" = $test '
        'GROUP BY "op"',
        {"run": t.run, "test": t.test},
    )
    cols = ["t_s", "op", *summary.LAT_LEVELS]
    if df.empty:
        return pd.DataFrame(columns=cols)
    frames = []
    for (op, coarse), g in df.groupby(["op", "coarseness"]):
        counts = histogram.sparse_decode(list(g["bins"]), histogram.PLAT_NR >> int(coarse))
        secs = (g["time"].to_numpy(np.int64) + NS // 2) // NS  # nodes' stamps differ by ms
        keys, summed = histogram.group_sum(secs, counts)
        p = histogram.percentiles(summed, list(summary.LAT_LEVELS.values()), int(coarse)) / 1e6
        f = pd.DataFrame(p, columns=list(summary.LAT_LEVELS))
        f.insert(0, "op", str(op))
        f.insert(0, "t_s", (keys * NS - t.first_start_ns) / NS)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)[cols]


def latency_heatmap(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """Completions per second and log2 latency bucket, summed over nodes: t_s, op, le, count.

    `le` is the bucket's upper bound in ns (fio_hist).
    """
    m = schema.FIO_HIST.name
    w = whole(t)
    df = client.query_df(
        f'SELECT sum("count") AS count FROM {quote_ident(m)} WHERE "run" = $run '
        'AND "test" = $test AND time >= $s AND time <= $e GROUP BY time(1s), "op", "le" fill(none)',
        {"run": t.run, "test": t.test, "s": w.start_ns, "e": w.end_ns},
    )
    if df.empty:
        return pd.DataFrame(columns=["t_s", "op", "le", "count"])
    df["le"] = df["le"].astype(np.int64)
    df["t_s"] = (df["time"].astype("int64") + NS - t.first_start_ns) / NS
    return df[["t_s", "op", "le", "count"]].sort_values(["op", "le", "t_s"], ignore_index=True)


# --- cluster load ---------------------------------------------------------------------

# name -> (measurement, inner select list, where, series keys, aggregate over nodes)
_LOAD = {
    "cpu busy %": (
        schema.CPU.name,
        '100 - "usage_idle" - "usage_iowait" AS x',
        "\"cpu\" = 'cpu-total'",
        ("node", "role"),
        "mean",
    ),
    "disk IOPS": (
        schema.DISKIO.name,
        'non_negative_derivative("reads", 1s) + non_negative_derivative("writes", 1s) AS x',
        f"\"device_role\" != '{discovery.LOOPBACK_ROLE}'",
        ("node", "role", "device"),
        "sum",
    ),
    "disk MiB/s": (
        schema.DISKIO.name,
        '(non_negative_derivative("read_bytes", 1s) + non_negative_derivative("write_bytes", 1s))'
        " / 1048576 AS x",
        f"\"device_role\" != '{discovery.LOOPBACK_ROLE}'",
        ("node", "role", "device"),
        "sum",
    ),
    "net MiB/s": (
        schema.NET.name,
        '(non_negative_derivative("bytes_sent", 1s) + non_negative_derivative("bytes_recv", 1s))'
        " / 1048576 AS x",
        "\"device\" != 'lo'",
        ("node", "role", "device"),
        "sum",
    ),
}
LOAD_METRICS = tuple(_LOAD)


def _bucketed(measurement: str, inner: str, where: str, keys: tuple[str, ...], step: int) -> str:
    """Per series and bucket mean of a per-sample level (rates from samples in the span)."""
    k = ", ".join(quote_ident(x) for x in keys)
    cond = f" AND {where}" if where else ""
    src = (
        f"SELECT {inner} FROM {quote_ident(measurement)} WHERE time >= $s AND time < $e{cond} "
        f"GROUP BY {k}"
    )
    return f"SELECT mean(x) AS x FROM ({src}) WHERE time >= $s AND time < $e GROUP BY time({step}s), {k}"


def _span(lo_ns: int, hi_ns: int) -> dict[str, int]:
    return {"s": lo_ns, "e": hi_ns}


def cluster_load(client: InfluxClient, lo_ns: int, hi_ns: int, step: int) -> pd.DataFrame:
    """Load per role over [lo, hi): columns time (ns), role, metric, value.

    Per bucket: CPU is the mean over the role's nodes, disk and network the sum over its
    devices. The server aggregates over nodes per distinct `role` value; the few role
    combinations are split client-side.
    """
    frames = []
    for metric, (m, inner, where, keys, _) in _LOAD.items():
        q = (
            f"SELECT sum(x) AS s, count(x) AS n FROM ({_bucketed(m, inner, where, keys, step)}) "
            f'WHERE time >= $s AND time < $e GROUP BY time({step}s), "role" fill(none)'
        )
        df = client.query_df(q, _span(lo_ns, hi_ns))
        if df.empty:
            continue
        df = df.assign(role=df["role"].fillna("").str.split(",")).explode("role")
        g = df.groupby(["time", "role"], as_index=False)[["s", "n"]].sum()
        g["value"] = g["s"] / g["n"] if _LOAD[metric][4] == "mean" else g["s"]
        frames.append(g.assign(metric=metric)[["time", "role", "metric", "value"]])
    if not frames:
        return pd.DataFrame(columns=["time", "role", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def resource_heatmap(
    client: InfluxClient, resource: str, lo_ns: int, hi_ns: int, step: int
) -> pd.DataFrame:
    """A bottleneck resource's level per series and bucket: time, node, role, device, value.

    Levels are those of analysis.bottlenecks (e.g. "cpu": busy % of cpu-total, "disk
    util": the device's utilisation %), averaged per bucket by the server.
    """
    r = next((r for r in bottlenecks.RESOURCES if r.name == resource), None)
    if r is None:
        known = ", ".join(x.name for x in bottlenecks.RESOURCES)
        raise ValueError(f"unknown resource {resource!r}; expected one of: {known}")
    keys = ", ".join(quote_ident(k) for k in r.series)
    cond = f" AND {r.condition}" if r.condition else ""
    res = client.query(
        f"SELECT mean({quote_ident(r.field)}) AS value FROM {quote_ident(r.measurement)} "
        f"WHERE time >= $s AND time < $e{cond} GROUP BY time({step}s), {keys} fill(none)",
        _span(lo_ns, hi_ns),
    )
    df = series_to_frame(res[0]["series"]) if res else pd.DataFrame()
    cols = ["time", "node", "role", "device", "value"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if r.invert:
        df["value"] = 100.0 - df["value"]
    df = df.rename(columns={"cpu": "device", "id": "device"})
    if "device" not in df:
        df["device"] = ""
    return df[cols]

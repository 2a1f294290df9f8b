"""Per-test numbers (IOPS, bandwidth, latency percentiles) and Wally's storage summary.

Throughput comes from the per-second `fio` series inside the reliable window, cut where it
becomes steady; latency percentiles come from `fio_hist_fine` (fio's own bins, summed over
seconds, jobs and nodes, then interpolated within the bin), so they agree with fio's JSON.
Summing histograms weighs every second by its completions: each I/O counts once, unlike
an average of per-second percentiles, which would weigh a slow second like a fast one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.windows import NS, TestWindow, load_tests
from collector import histogram, schema
from collector.influx import InfluxClient, quote_ident

ALL_OPS = "all"
LAT_LEVELS = dict(
    zip(("p50", "p90", "p95", "p99", "p99_9"), histogram.DEFAULT_PERCENTILES, strict=True)
)
# p95 latency classes of the storage summary: database, file system, file server.
LATENCY_CLASSES_MS = (10.0, 30.0, 100.0)
RANDOM = {"randread": "read", "randwrite": "write"}
SEQUENTIAL = {"read": "read", "write": "write"}


@dataclass
class TestNumbers:
    """One test and direction (read, write or all): trustworthy numbers and warnings."""

    test: TestWindow
    op: str
    warmup: stats.WarmUp
    iops: stats.Description
    bw_bytes: stats.Description
    lat_ns: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict:
        t = self.test
        out = {
            "test": t.test,
            "op": self.op,
            "rw": t.rw,
            "bs": t.bs,
            "qd": t.qd,
            "nodes": len(t.nodes),
            "window_s": t.duration_s,
            "warmup_cut_s": self.warmup.cut,
            "steady": self.warmup.steady,
        }
        for name, d in (("iops", self.iops), ("bw_bytes", self.bw_bytes)):
            for k in (
                "mean",
                "stddev",
                "ci_low",
                "ci_high",
                "median",
                "p5",
                "p95",
                "skew",
                "kurtosis",
            ):
                out[f"{name}_{k}"] = getattr(d, k)
        out["iops_n"] = self.iops.n
        out["iops_normal_p"] = self.iops.normal_p
        out["iops_outliers"] = self.iops.outliers
        for k, v in self.lat_ns.items():
            out[f"lat_{k}_ms"] = v / 1e6
        out["warnings"] = "; ".join(self.warnings)
        return out


def fio_seconds(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """Per second IOPS and bandwidth (bytes/s) summed over nodes, one column pair per op.

    A sample stamped t covers (t - 1 s, t]: only seconds wholly inside the window count.
    """
    m = schema.FIO.name
    df = client.query_df(
        f'SELECT "iops", "bw" FROM {quote_ident(m)} WHERE "run" = $run AND "test" = $test '
        f'AND time >= $s AND time <= $e GROUP BY "op"',
        {"run": t.run, "test": t.test, "s": t.start_ns + NS, "e": t.end_ns},
    )
    if df.empty:
        return pd.DataFrame()
    df["bw"] = df["bw"] * 1024.0
    wide = df.pivot_table(index="time", columns="op", values=["iops", "bw"], aggfunc="sum")
    return wide.sort_index()


def fine_histograms(
    client: InfluxClient, t: TestWindow, window: bool = False, nodes: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Summed fine histograms per op over the test (or only its reliable window).

    Without `window` every completion fio logged after its ramp counts: the same I/Os as
    fio's JSON. Returns ({op: counts}, coarseness).
    """
    m = schema.FIO_HIST_FINE.name
    q = f'SELECT "bins", "coarseness" FROM {quote_ident(m)} WHERE "run" = $run AND "test" = $test'
    params: dict = {"run": t.run, "test": t.test}
    if window:
        q += " AND time >= $s AND time <= $e"
        params.update(s=t.start_ns + NS, e=t.end_ns)
    if nodes:
        ors = []
        for i, n in enumerate(nodes):
            params[f"n{i}"] = n
            ors.append(f'"node" = $n{i}')
        q += " AND (" + " OR ".join(ors) + ")"
    df = client.query_df(q + ' GROUP BY "op"', params)
    if df.empty:
        return {}, 0
    coarse = {int(c) for c in df["coarseness"]}
    if len(coarse) > 1:
        raise ValueError(
            f"test {t.test}: fio_hist_fine rows with different coarseness {sorted(coarse)}"
        )
    c = coarse.pop()
    nbins = histogram.PLAT_NR >> c
    out = {
        str(op): histogram.sparse_decode(list(g["bins"]), nbins).sum(axis=0)
        for op, g in df.groupby("op")
    }
    return out, c


def latency_of(counts: np.ndarray, coarseness: int) -> dict[str, float]:
    """p50..p99_9 interpolated within bins, and the mean from bin midpoints (ns)."""
    if not counts.any():
        return {}
    p = histogram.percentiles(counts, list(LAT_LEVELS.values()), coarseness)
    out = {k: float(v) for k, v in zip(LAT_LEVELS, p, strict=True)}
    edges = histogram.bin_edges(coarseness)
    out["mean"] = float((counts * (edges[:-1] + edges[1:]) / 2).sum() / counts.sum())
    return out


def test_numbers(client: InfluxClient, t: TestWindow) -> list[TestNumbers]:
    """Numbers of one fio test per direction and for all directions together."""
    warn = []
    if t.end_ns <= t.start_ns:
        warn.append("empty reliable window: nodes did not overlap after the ramp")
    sec = fio_seconds(client, t)
    hists, coarse = fine_histograms(client, t)
    if sec.empty:
        warn.append("no per-second fio data in the window")
        ops: list[str] = []
        total = np.zeros(0)
    else:
        ops = sorted({op for _, op in sec.columns})
        total = sec["iops"].sum(axis=1).to_numpy()
    wu = stats.warmup_cut(total)
    if len(total) < stats.MIN_STEADY:
        warn.append(f"only {len(total)} s of data: steadiness untested")
    elif not wu.steady:
        warn.append("IOPS never became steady in the window")
    elif wu.cut:
        warn.append(f"warm-up: first {wu.cut} s cut")
    out = []
    for op in [*ops, ALL_OPS] if len(ops) != 1 else ops:
        if op == ALL_OPS:
            iops, bw = total, sec["bw"].sum(axis=1).to_numpy()
            counts = sum(hists.values()) if hists else np.zeros(0, np.int64)
        else:
            iops, bw = sec[("iops", op)].to_numpy(), sec[("bw", op)].to_numpy()
            counts = hists.get(op, np.zeros(0, np.int64))
        steady = wu.steady or len(total) < stats.MIN_STEADY  # too short: said above
        di = stats.describe(iops[wu.cut :], steady=steady)
        db = stats.describe(bw[wu.cut :], steady=steady)
        lat = latency_of(counts, coarse) if len(counts) else {}
        out.append(TestNumbers(t, op, wu, di, db, lat, [*warn, *di.warnings]))
    return out


def run_numbers(
    client: InfluxClient, run: str, tests: list[TestWindow] | None = None
) -> list[TestNumbers]:
    """Every fio test of a run."""
    tests = load_tests(client, run) if tests is None else tests
    return [n for t in tests if t.kind == "fio" for n in test_numbers(client, t)]


def numbers_frame(numbers: list[TestNumbers]) -> pd.DataFrame:
    return pd.DataFrame([n.row() for n in numbers])


@dataclass
class StorageSummary:
    """Wally's headline: what the storage delivers within latency classes."""

    best_iops: pd.DataFrame  # rw, p95 limit ms, iops, test, qd
    max_bandwidth: pd.DataFrame  # rw, bw bytes/s, test, qd
    vs_qd: pd.DataFrame  # rw, bs, qd, iops mean/ci, latency percentiles


def storage_summary(
    frame: pd.DataFrame, classes_ms: Sequence[float] = LATENCY_CLASSES_MS
) -> StorageSummary:
    """Best random IOPS per p95 latency class, max sequential bandwidth, numbers vs QD."""
    if frame.empty:
        empty = pd.DataFrame()
        return StorageSummary(empty, empty, empty)
    rows = []
    for rw, op in RANDOM.items():
        sel = frame[(frame["rw"] == rw) & (frame["op"] == op)]
        for limit in classes_ms:
            ok = sel[sel.get("lat_p95_ms", pd.Series(np.nan, index=sel.index)) < limit]
            best = ok.loc[ok["iops_mean"].idxmax()] if len(ok) else None
            rows.append(
                {
                    "rw": rw,
                    "p95_limit_ms": limit,
                    "iops": None if best is None else best["iops_mean"],
                    "lat_p95_ms": None if best is None else best["lat_p95_ms"],
                    "qd": None if best is None else best["qd"],
                    "test": None if best is None else best["test"],
                }
            )
    bw_rows = []
    for rw, op in SEQUENTIAL.items():
        sel = frame[(frame["rw"] == rw) & (frame["op"] == op)]
        best = sel.loc[sel["bw_bytes_mean"].idxmax()] if len(sel) else None
        bw_rows.append(
            {
                "rw": rw,
                "bw_bytes": None if best is None else best["bw_bytes_mean"],
                "bs": None if best is None else best["bs"],
                "qd": None if best is None else best["qd"],
                "test": None if best is None else best["test"],
            }
        )
    single = frame[(frame["op"] != ALL_OPS) | ~frame["test"].duplicated(keep=False)]
    cols = ["rw", "op", "bs", "qd", "iops_mean", "iops_ci_low", "iops_ci_high", "bw_bytes_mean"]
    cols += [c for c in ("lat_p50_ms", "lat_p95_ms", "lat_p99_ms") if c in frame.columns]
    vs_qd = single[cols].sort_values(["rw", "op", "bs", "qd"]).reset_index(drop=True)
    return StorageSummary(pd.DataFrame(rows), pd.DataFrame(bw_rows), vs_qd)

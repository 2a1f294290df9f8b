"""One iteration's fio outputs, fetched from its nodes, into InfluxDB and into totals.

Layout read here (written by the runner): `<iteration dir>/<node>/out.json` (fio's own json+
result) and fio's logs `*_iops.N.log`, `*_bw.N.log`, `*_clat_hist.N.log` (epoch stamped,
1 s windows). Totals over all nodes: IOPS and bandwidth add up (from fio's JSON, the ground
truth); latency percentiles come from the clat histogram logs, added across jobs, nodes and
directions and then interpolated within bins (never averaged percentiles).

fio never writes a job's last, partial histogram window (a window is written by the first
I/O completing after it ends). What it did not log is exactly its json+ cumulative bins
minus the logged windows, so that remainder is added back as the job's final window: the
per-second series then covers the whole run and the totals are complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from collector import fio, histogram, schema
from collector.writer import InfluxWriter
from loadgen.jobfile import LOG_MSEC

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


@dataclass
class OpTotals:
    iops: float = 0.0
    bw_bytes: float = 0.0
    io_bytes: int = 0
    clat_ns: dict[str, float] = field(default_factory=dict)


@dataclass
class IterationTotals:
    """What the summary table and `loadgen run --json` report for an iteration."""

    iops: float
    bw_bytes: float
    clat_ns: dict[str, float]
    ops: dict[str, OpTotals]
    per_node: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return asdict(self)


def _logs(node_dir: Path, kind: str) -> list[Path]:
    """`*_{kind}.N.log` in job order: N is the job's number (1-based), `.10` after `.9`."""
    return sorted(node_dir.glob(f"*_{kind}.*.log"), key=lambda p: int(p.suffixes[-2][1:]))


def _hist_logs_by_job(node_dir: Path, njobs: int) -> list[fio.HistLog]:
    """Job i's histogram log at index i (empty if fio wrote none for it)."""
    logs = [fio.HistLog.empty() for _ in range(njobs)]
    for p in _logs(node_dir, "clat_hist"):
        n = int(p.suffixes[-2][1:])
        if not 1 <= n <= njobs:
            raise fio.FioParseError(f"{p}: job {n} is not one of the {njobs} jobs in out.json")
        logs[n - 1] = fio.read_hist_log(p)
    return logs


def complete_hist_logs(doc: dict, logs: Sequence[fio.HistLog]) -> list[fio.HistLog]:
    """Each job's histogram log with the unlogged tail (json+ bins - logged) appended.

    `logs[i]` is job i's `*_clat_hist.{i+1}.log`, as fio numbers them with per_job_logs.
    """
    end_ms = int(doc.get("timestamp_ms", 0))
    out = []
    for job, log in zip(doc["jobs"], logs, strict=False):
        rows_t, rows_d, rows_c = [log.time_ms], [log.ddir], [log.counts]
        for ddir, op in enumerate(fio.OPS):
            total = histogram.coarsen(fio.json_clat_bins({"jobs": [job]}, op), log.coarseness)
            rest = total - log.counts[log.ddir == ddir].sum(axis=0)
            if rest.any():
                rows_t.append(np.array([max([end_ms, *log.time_ms[-1:]])], np.int64))
                rows_d.append(np.array([ddir], np.int64))
                rows_c.append(np.clip(rest, 0, None)[None, :])
        out.append(
            fio.HistLog.from_counts(
                np.concatenate(rows_t),
                np.concatenate(rows_d),
                np.zeros(sum(len(t) for t in rows_t), np.int64),
                np.concatenate(rows_c),
                log.coarseness,
            )
        )
    return out


def fine_frame(seconds: fio.SecondHistograms) -> pd.DataFrame:
    """`fio_hist_fine` rows: each second's histogram in fio's own bins, sparse text."""
    total = seconds.counts.sum(axis=1)
    keep = total > 0
    return pd.DataFrame(
        {
            "time": seconds.time_ns[keep],
            "node": seconds.node[keep],
            "op": seconds.op[keep],
            "bins": histogram.sparse_encode(seconds.counts[keep]),
            "coarseness": seconds.coarseness,
            "count": total[keep],
        }
    )


def _percentiles(counts: np.ndarray, coarseness: int) -> dict[str, float]:
    if not counts.any():
        return {}
    values = histogram.percentiles(counts[None, :], list(PERCENTILES.values()), coarseness)[0]
    return {k: float(v) for k, v in zip(PERCENTILES, values, strict=True)}


def ingest_iteration(
    writer: InfluxWriter,
    iteration_dir: Path,
    nodes: Sequence[str],
    tags: Mapping[str, str],
) -> IterationTotals:
    """Write fio_summary, fio, fio_lat and fio_hist points; return the iteration's totals.

    `tags` are run, test, bs and qd (node and op come from the files).
    """
    run, test = tags["run"], tags["test"]
    ops: dict[str, OpTotals] = {}
    per_node: dict[str, dict[str, float]] = {}
    iops_logs, bw_logs, hist_logs = {}, {}, {}
    for node in nodes:
        node_dir = iteration_dir / node
        out = node_dir / "out.json"
        writer.write(fio.summary_points(out, run, test, node))
        summary = fio.summary_frame(fio.read_json(out), out)
        per_node[node] = {
            "iops": float(summary["iops"].sum()),
            "bw_bytes": float(summary["bw_bytes"].sum()),
        }
        for row in summary.to_dict("records"):
            op = ops.setdefault(row["op"], OpTotals())
            op.iops += row["iops"]
            op.bw_bytes += row["bw_bytes"]
            op.io_bytes += row["io_bytes"]
        iops_logs[node] = [fio.read_log(p) for p in _logs(node_dir, "iops")]
        bw_logs[node] = [fio.read_log(p) for p in _logs(node_dir, "bw")]
        doc = fio.read_json(out)
        logged = _hist_logs_by_job(node_dir, len(doc["jobs"]))
        hist_logs[node] = complete_hist_logs(doc, logged)

    const = {"run": run, "test": test, "bs": tags["bs"], "qd": tags["qd"]}
    # One grid for rates and latencies, so their per-second points share timestamps.
    starts = [f["time_ms"].to_numpy() for fs in iops_logs.values() for f in fs]
    starts += [h.time_ms for hs in hist_logs.values() for h in hs]
    grid = fio.grid_for(starts, LOG_MSEC) if any(len(t) for t in starts) else None
    if any(iops_logs.values()):
        rates = fio.rates_frame(iops_logs, bw_logs, log_avg_msec=LOG_MSEC, grid=grid)
        writer.write_frame(rates, "fio", ["node", "op"], ["iops", "bw"], "time", const)

    clat: dict[str, float] = {}
    if any(hist_logs.values()):
        seconds = fio.merge_hist_logs(hist_logs, LOG_MSEC, grid)
        lat = fio.lat_frame(seconds)
        writer.write_frame(
            lat, "fio_lat", ["node", "op"], [*fio.LAT_FIELDS, "count"], "time", const
        )
        hist = fio.hist_frame(seconds)
        writer.write_frame(
            hist, "fio_hist", ["node", "op", "le"], ["count"], "time", {"run": run, "test": test}
        )
        writer.write_frame(
            fine_frame(seconds),
            schema.FIO_HIST_FINE.name,
            ["node", "op"],
            None,
            "time",
            {"run": run, "test": test},
        )
        totals = seconds.totals()
        for op_name, op in ops.items():
            if ("*", op_name) in totals:
                op.clat_ns = _percentiles(totals[("*", op_name)], seconds.coarseness)
        all_counts = (
            seconds.counts.sum(axis=0)
            if len(seconds.counts)
            else np.zeros(histogram.PLAT_NR, np.int64)
        )
        clat = _percentiles(all_counts, seconds.coarseness)

    return IterationTotals(
        iops=sum(o.iops for o in ops.values()),
        bw_bytes=sum(o.bw_bytes for o in ops.values()),
        clat_ns=clat,
        ops=ops,
        per_node=per_node,
    )

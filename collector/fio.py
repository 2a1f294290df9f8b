"""Parsers of fio's outputs into frames and points: json+ results, bw/iops/lat logs, clat
histogram logs.

Pure functions over files fio 3.33 wrote (see tests/data/fio/). What fio 3.33 really does,
checked on this machine and in its source (stat.c, iolog.c):

- Log lines are `time_ms, value, ddir, bs, prio` (`offset` before `prio` with
  log_offset=1). With log_avg_msec each line is one window's average, stamped at the
  window's end; without it, one line per I/O (iops value 1, bw the I/O's own rate).
- bw/iops/clat-histogram logs never write the last, partial window of a job: the logs
  cover the run up to the last full window (lat/clat/slat logs do flush it, repeating a
  timestamp). Rates from logs therefore describe the covered span.
- Histogram logs hold per-window DELTA counts; a window is written by the first I/O that
  completes after it ends; ramp_time is excluded (the histogram restarts after the ramp).

Everything is re-gridded to 1 s: a sample covering the window (t - w, t] is put in the
second that holds its midpoint, counted from a common origin (the test start), which is
robust to a few hundred ms of skew between jobs and nodes. Jobs and nodes are merged by
adding: rates are summed, histograms are added, percentiles are taken afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from collector import histogram, schema
from collector.lineproto import Point

OPS = ("read", "write", "trim")
DDIR = {name: i for i, name in enumerate(OPS)}
LAT_FIELDS = ("p50", "p90", "p95", "p99", "p99_9")
LAT_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
STEP_MS = 1000


class FioParseError(ValueError):
    """fio output that cannot be read as fio 3.x writes it; names the file and the problem."""


# --- json+ results --------------------------------------------------------------------


def read_json(path: str | Path) -> dict:
    """fio's JSON document, skipping any non-JSON lines fio printed before or after it."""
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as e:
        raise FioParseError(f"{p}: cannot read fio JSON output: {e.strerror}") from None
    # fio may print warnings ("fio: ...") before the document: start at the first line
    # that opens an object.
    start = 0 if text.startswith("{") else text.find("\n{") + 1
    if start == 0 and not text.startswith("{"):
        raise FioParseError(f"{p}: no JSON object found (expected fio --output-format=json+)")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise FioParseError(
            f"{p}: bad fio JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise FioParseError(f"{p}: fio JSON has no 'jobs' list")
    return doc


def _option(job: dict, doc: dict, name: str) -> str:
    return str(
        job.get("job options", {}).get(name) or doc.get("global options", {}).get(name) or ""
    )


def json_jobs(doc: dict, path: str | Path = "<fio json>") -> pd.DataFrame:
    """One row per job and direction that did I/O: fio's own numbers, units in the names."""
    rows = []
    for n, job in enumerate(doc["jobs"]):
        for op in OPS:
            d = job.get(op)
            if not d or not d.get("total_ios"):
                continue
            try:
                clat = d["clat_ns"]
                pct = clat.get("percentile", {})
                rows.append(
                    {
                        "job": n,
                        "jobname": job.get("jobname", ""),
                        "op": op,
                        "bs": _option(job, doc, "bs"),
                        "qd": _option(job, doc, "iodepth") or "1",
                        "iops": float(d["iops"]),
                        "bw_kib": float(d["bw"]),
                        "bw_bytes": float(d.get("bw_bytes", d["bw"] * 1024)),
                        "io_bytes": int(d["io_bytes"]),
                        "total_ios": int(d["total_ios"]),
                        "runtime_ms": int(d["runtime"]),
                        "clat_n": int(clat.get("N", d["total_ios"])),
                        "clat_min": int(clat["min"]),
                        "clat_max": int(clat["max"]),
                        "clat_mean": float(clat["mean"]),
                        "clat_stddev": float(clat["stddev"]),
                        **{
                            f"clat_{f}": float(pct[f"{q:f}"]) if f"{q:f}" in pct else np.nan
                            for f, q in zip(LAT_FIELDS, LAT_PERCENTILES, strict=True)
                        },
                        "usr_cpu": float(job["usr_cpu"]),
                        "sys_cpu": float(job["sys_cpu"]),
                        "ctx": int(job["ctx"]),
                    }
                )
            except (KeyError, TypeError, ValueError) as e:
                raise FioParseError(
                    f"{path}: job {n} {op}: missing or bad field {e} in fio JSON"
                ) from None
    return pd.DataFrame(rows)


def json_clat_bins(doc: dict, op: str) -> np.ndarray:
    """Fine (1856-bin) clat histogram of one direction summed over jobs, from json+ `bins`."""
    total = np.zeros(histogram.PLAT_NR, dtype=np.int64)
    for job in doc["jobs"]:
        bins = job.get(op, {}).get("clat_ns", {}).get("bins", {})
        if bins:
            values = np.fromiter((int(k) for k in bins), dtype=np.int64, count=len(bins))
            counts = np.fromiter(bins.values(), dtype=np.int64, count=len(bins))
            np.add.at(total, histogram.value_to_bin(values), counts)
    return total


def summary_frame(doc: dict, path: str | Path = "<fio json>") -> pd.DataFrame:
    """Per direction totals over the jobs of one fio run (one node): what fio_summary holds.

    Rates, bytes, CPU and context switches add up; clat mean and stddev are pooled; the
    percentiles are fio's own for one job and, for several, computed fio's way from the
    summed json+ bins (what group_reporting would print).
    """
    jobs = json_jobs(doc, path)
    out = []
    for op, g in jobs.groupby("op", sort=False) if len(jobs) else []:
        n = g["clat_n"].to_numpy(dtype=np.float64)
        mean = float(np.sum(n * g["clat_mean"]) / n.sum())
        ss = np.sum((n - 1) * g["clat_stddev"] ** 2 + n * (g["clat_mean"] - mean) ** 2)
        row = {
            "op": op,
            "bs": ",".join(sorted(set(g["bs"]))),
            "qd": ",".join(sorted(set(g["qd"]))),
            "iops": float(g["iops"].sum()),
            "bw_bytes": float(g["bw_bytes"].sum()),
            "io_bytes": int(g["io_bytes"].sum()),
            "runtime_ms": int(g["runtime_ms"].max()),
            "clat_mean": mean,
            "clat_stddev": float(np.sqrt(ss / max(n.sum() - 1, 1))),
            "clat_min": int(g["clat_min"].min()),
            "clat_max": int(g["clat_max"].max()),
            "usr_cpu": float(g["usr_cpu"].sum()),
            "sys_cpu": float(g["sys_cpu"].sum()),
            "ctx": int(g["ctx"].sum()),
        }
        pcts = {f"clat_{f}": float(g[f"clat_{f}"].iloc[0]) for f in LAT_FIELDS}
        if len(g) > 1:
            bins = json_clat_bins(doc, op)
            merged = histogram.fio_percentiles(bins, LAT_PERCENTILES) if bins.any() else None
            pcts = {
                f"clat_{f}": float(merged[i]) if merged is not None else np.nan
                for i, f in enumerate(LAT_FIELDS)
            }
        row.update(pcts)
        out.append(row)
    return pd.DataFrame(out)


def summary_points(
    path: str | Path, run: str, test: str, node: str, time_ns: int | None = None
) -> list[Point]:
    """`fio_summary` points of one node's json+ result, one per direction, at fio's end time."""
    doc = read_json(path)
    if time_ns is None:
        time_ns = int(doc.get("timestamp_ms", doc.get("timestamp", 0) * 1000)) * 1_000_000
    fields = [f for f in schema.FIO_SUMMARY.fields]
    points = []
    for row in summary_frame(doc, path).to_dict("records"):
        tags = {
            "run": run,
            "test": test,
            "node": node,
            "op": row["op"],
            "bs": row["bs"],
            "qd": row["qd"],
        }
        values = {f: row[f] for f in fields if not (isinstance(row[f], float) and np.isnan(row[f]))}
        points.append(Point("fio_summary", tags, values, time_ns))
    return points


# --- bw / iops / lat logs -------------------------------------------------------------

_LOG_COLUMNS = {
    4: ("time_ms", "value", "ddir", "bs"),
    5: ("time_ms", "value", "ddir", "bs", "prio"),
    6: ("time_ms", "value", "ddir", "bs", "offset", "prio"),
}


def _first_line(p: Path) -> str:
    try:
        with p.open("rb") as f:
            return f.readline().decode(errors="replace").strip()
    except OSError as e:
        raise FioParseError(f"{p}: cannot read fio log: {e.strerror}") from None


def read_log(path: str | Path) -> pd.DataFrame:
    """A bw/iops/lat/clat/slat log as int64 columns time_ms, value, ddir, bs[, offset], prio."""
    p = Path(path)
    first = _first_line(p)
    if not first:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in _LOG_COLUMNS[5]})
    names = _LOG_COLUMNS.get(first.count(",") + 1)
    if names is None:
        raise FioParseError(
            f"{p}: {first.count(',') + 1} columns in a fio log line, expected 4-6 "
            "(time_ms, value, ddir, bs[, offset][, prio])"
        )
    try:
        return pd.read_csv(
            p, header=None, names=list(names), dtype=dict.fromkeys(names, np.int64), engine="c"
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise FioParseError(
            f"{p}: not a fio log of integer columns {', '.join(names)}: {e}"
        ) from None


@dataclass(frozen=True)
class Grid:
    """Seconds counted from a common origin: sample (t - window, t] -> its midpoint's second.

    A bucket k covers [origin + (k-1) s, origin + k s) and is stamped at its end.
    """

    origin_ms: int
    step_ms: int = STEP_MS

    def bucket(self, time_ms: np.ndarray, window_ms: int, offset: int = 0) -> np.ndarray:
        """The bucket of each sample (plus `offset`, added on the way for free)."""
        # The midpoint, from the origin: multiples of 0.5 far below 2**53, so a float
        # division floors exactly (and is much faster than an int64 floor division).
        mid = np.asarray(time_ms, dtype=np.int64) - (self.origin_ms + window_ms / 2)
        return (np.floor(mid / self.step_ms) + (1 + offset)).astype(np.int64)

    def time_ns(self, bucket: np.ndarray) -> np.ndarray:
        return (self.origin_ms + np.asarray(bucket, dtype=np.int64) * self.step_ms) * 1_000_000


def grid_for(time_ms: Sequence[np.ndarray], window_ms: int, step_ms: int = STEP_MS) -> Grid:
    """The grid starting where the earliest sample's window starts."""
    starts = [int(t.min()) for t in time_ms if len(t)]
    if not starts:
        raise FioParseError("no samples in any fio log: cannot place them in time")
    return Grid(min(starts) - window_ms, step_ms)


@dataclass(frozen=True)
class _Keys:
    """(node, direction, second) of samples as dense int64 codes, one array per source.

    code = (node * 4 + ddir) * span + (bucket - first bucket): consecutive seconds of a
    series are consecutive codes, so grouping is a table lookup and a bincount, not a sort.
    """

    codes: list[np.ndarray]
    first: int
    span: int

    @classmethod
    def of(
        cls, grid: Grid, window_ms: int, sources: Sequence[tuple[int, np.ndarray, np.ndarray]]
    ) -> _Keys:
        """Codes of `sources`: (node index, ddir array, time_ms array) per log."""
        first = min(int(grid.bucket(t.min(), window_ms)) for _, _, t in sources)
        last = max(int(grid.bucket(t.max(), window_ms)) for _, _, t in sources)
        if first < 0 or last >= 1 << 40:
            raise FioParseError(
                "fio log times are far before the test start: mixed relative/epoch logs?"
            )
        span = last - first + 1
        codes = []
        for node, ddir, t in sources:
            code = grid.bucket(t, window_ms, node * 4 * span - first)
            code += ddir * span
            codes.append(code)
        return cls(codes, first, span)

    def compact(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Codes to group by, sorted, and each source's index into them.

        Dense codes (the usual case) index a table over their whole range directly, which
        may include codes without samples: callers drop rows that stay empty. Sparse codes
        (e.g. a stray timestamp) are sorted out with np.unique instead.
        """
        lo = min(int(c.min()) for c in self.codes)
        hi = max(int(c.max()) for c in self.codes)
        n = sum(len(c) for c in self.codes)
        if hi - lo <= 4 * n + 4096:
            return np.arange(lo, hi + 1), [c - lo for c in self.codes]
        uniq, inv = np.unique(np.concatenate(self.codes), return_inverse=True)
        return uniq, np.split(inv.ravel(), np.cumsum([len(c) for c in self.codes])[:-1])

    def label(
        self, uniq: np.ndarray, nodes: Sequence[str], grid: Grid
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """time (ns), node and op of codes."""
        series = uniq // self.span
        return (
            grid.time_ns(self.first + uniq % self.span),
            np.asarray(nodes, dtype=object)[series // 4],
            np.asarray(OPS, dtype=object)[series % 4],
        )


def rates_frame(
    iops_logs: Mapping[str, Sequence[pd.DataFrame]],
    bw_logs: Mapping[str, Sequence[pd.DataFrame]],
    log_avg_msec: int,
    grid: Grid | None = None,
) -> pd.DataFrame:
    """Per second IOPS and bandwidth (KiB/s) per node and direction, summed over jobs.

    `iops_logs`/`bw_logs` map node -> one frame per job (read_log). With log_avg_msec > 0
    each sample is a window average: averaged per second per job, then summed over jobs;
    seconds that not every job of the node reported are dropped.
    With 0 the logs hold one line per I/O: IOPS is the count, bandwidth the bytes moved.
    Returns columns time (ns), node, op, iops, bw, ready for the `fio` measurement.
    """
    window = max(int(log_avg_msec), 0)
    if grid is None:
        grid = grid_for([f["time_ms"].to_numpy() for fs in iops_logs.values() for f in fs], window)
    nodes = list(dict.fromkeys([*iops_logs, *bw_logs]))
    jobs = [
        (field, nodes.index(node), f)
        for field, logs in (("iops", iops_logs), ("bw", bw_logs))
        for node, frames in logs.items()
        for f in frames
        if len(f)
    ]
    if not jobs:
        return pd.DataFrame(columns=["time", "node", "op", "iops", "bw"])
    keys = _Keys.of(
        grid, window, [(n, f["ddir"].to_numpy(), f["time_ms"].to_numpy()) for _, n, f in jobs]
    )
    uniq, index = keys.compact()
    size = len(uniq)
    acc = {name: (np.zeros(size), np.zeros(size, dtype=np.int64)) for name in ("iops", "bw")}
    for (field, _, f), idx in zip(jobs, index, strict=True):
        if window:  # a job's window averages falling in one second: their mean
            lines = np.bincount(idx, minlength=size)
            value = np.bincount(idx, f["value"].to_numpy(dtype=np.float64), minlength=size)
            value /= np.maximum(lines, 1)
        elif field == "iops":  # one line per I/O
            lines = value = np.bincount(idx, minlength=size)
        else:  # every I/O moves bytes: a second with I/O has bytes
            lines = value = np.bincount(idx, f["bs"].to_numpy() / 1024.0, minlength=size)
        total, njobs = acc[field]
        total += value
        njobs += lines > 0
    out_cols = {}
    for field, (total, njobs) in acc.items():
        keep = njobs > 0
        if window:
            # fio's helper thread may skip a job's last window: a second that not every
            # job of the node reported would show a false dip, so it is left out.
            series = uniq // keys.span
            most = np.zeros(int(series.max()) + 1, dtype=np.int64)
            np.maximum.at(most, series, njobs)
            keep &= njobs == most[series]
        out_cols[field] = np.where(keep, total, np.nan)
    rows = ~(np.isnan(out_cols["iops"]) & np.isnan(out_cols["bw"]))
    time_ns, node, op = keys.label(uniq[rows], nodes, grid)
    return pd.DataFrame(
        {"time": time_ns, "node": node, "op": op, **{k: v[rows] for k, v in out_cols.items()}}
    )


# --- clat histogram logs --------------------------------------------------------------


@dataclass(frozen=True)
class HistLog:
    """One job's clat histogram log, sparse: a row per window, an entry per non-zero bin.

    Latencies fill a few hundred of the 1856 bins, so parsing, merging and re-gridding
    work on the non-zero entries; `counts` is the dense (rows, bins) view.
    """

    time_ms: np.ndarray  # int64 per row: window end
    ddir: np.ndarray  # int64 per row
    bs: np.ndarray  # int64 per row
    row: np.ndarray  # int64 per entry: its row
    bin: np.ndarray  # int64 per entry: its bin (coarse bins when coarseness > 0)
    count: np.ndarray  # int64 per entry (a zero entry adds nothing)
    coarseness: int

    @classmethod
    def from_counts(
        cls,
        time_ms: np.ndarray,
        ddir: np.ndarray,
        bs: np.ndarray,
        counts: np.ndarray,
        coarseness: int,
    ) -> HistLog:
        """From dense (rows, 1856 >> coarseness) counts."""
        row, col = np.nonzero(counts)
        return cls(
            *(
                np.asarray(a, dtype=np.int64)
                for a in (time_ms, ddir, bs, row, col, counts[row, col])
            ),
            coarseness,
        )

    @classmethod
    def empty(cls) -> HistLog:
        """A log without windows (fio wrote nothing, or an empty file)."""
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none, none, none, none, none, 0)

    @property
    def nbins(self) -> int:
        return histogram.PLAT_NR >> self.coarseness

    @cached_property
    def counts(self) -> np.ndarray:
        dense = np.zeros((len(self.time_ms), self.nbins), dtype=np.int64)
        np.add.at(dense, (self.row, self.bin), self.count)
        return dense


_ZERO, _NINE, _SPACE = (np.uint8(ord(c)) for c in "09 ")


def _integers(b: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal integers starting at `pos` in bytes `b` (which ends with a newline): their
    values and end positions. The caller checks that each starts with a digit.

    Digit by digit over the tokens still running: most counts have one or two digits.
    """
    value = b[pos].astype(np.int64) - int(_ZERO)
    end = pos + 1
    d = b[end] - _ZERO
    live = np.flatnonzero(d <= 9)
    d = d[live]
    while len(live):
        value[live] = value[live] * 10 + d
        end[live] += 1
        d = b[end[live]] - _ZERO
        more = d <= 9
        live, d = live[more], d[more]
    return value, end


def _line_ends(data: bytes) -> Iterator[int]:
    """Positions of the newlines: a few long lines, so bytes.find beats a byte mask."""
    at = data.find(b"\n")
    while at >= 0:
        yield at
        at = data.find(b"\n", at + 1)


def read_hist_log(path: str | Path) -> HistLog:
    """Parse `{prefix}_clat_hist.N.log` (write_hist_log=1) into a sparse HistLog.

    fio writes `time, ddir, bs, c0, c1, ...` with "%llu, " (iolog.c): an empty bin is the
    three bytes "0, ", so a non-zero count is a digit 1-9 after a space, and its column is
    the previous non-zero one's plus the zero tokens between them (3 bytes each). The work
    is one vectorised scan of the bytes plus a few operations per non-zero count. Every
    token gap and line length is checked, so a line of another shape, a stray character in
    a number or a truncated last line is an error, never a silently wrong count.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FioParseError(f"{p}: cannot read fio log: {e.strerror}") from None
    if data.isspace() or not data:
        return HistLog.empty()
    if not data.endswith(b"\n"):
        data += b"\n"
    ncols = data[: data.index(b"\n")].count(b",") + 1
    try:
        coarseness = histogram.coarseness_for(ncols - 3)
    except ValueError as e:
        raise FioParseError(f"{p}: not a fio clat histogram log: {e}") from None
    b = np.frombuffer(data, dtype=np.uint8)
    ends = np.fromiter(_line_ends(data), dtype=np.int64)
    starts = np.r_[0, ends[:-1] + 1]
    nlines = len(ends)
    mask = np.greater(b[1:], _ZERO)
    mask &= b[:-1] == _SPACE
    tok = np.flatnonzero(mask) + 1
    time_ms, time_end = _integers(b, starts)
    value, end = _integers(b, tok)
    # Tokens per line; each token's column from the gap since the previous one's end.
    upto = np.searchsorted(tok, ends)
    first = np.r_[0, upto[:-1]]
    ntok = upto - first
    has = np.flatnonzero(ntok)
    prev_end = np.r_[0, end[:-1]]
    prev_end[first[has]] = time_end[has]
    step, gap_rem = np.divmod(tok - prev_end + 1, 3)
    col = np.cumsum(step)
    line_base = np.zeros(nlines, dtype=np.int64)
    line_base[has] = col[first[has]] - step[first[has]]
    col -= np.repeat(line_base, ntok)
    # After the last non-zero token of a line, zero tokens fill it up to ncols.
    last_end, last_col = time_end.copy(), np.zeros(nlines, dtype=np.int64)
    last_end[has], last_col[has] = end[upto[has] - 1], col[upto[has] - 1]
    bad_line = (b[starts] - _ZERO > 9) | (ends - last_end != 3 * (ncols - 1 - last_col))
    not_digit = b[tok] > _NINE
    if bad_line.any() or not_digit.any() or gap_rem.any() or step.min(initial=1) < 1:
        bad = not_digit | (gap_rem != 0) | (step < 1)
        lines = np.r_[np.flatnonzero(bad_line), np.repeat(np.arange(nlines), ntok)[bad]]
        raise FioParseError(
            f"{p}: bad clat histogram log: line {lines.min() + 1} is not {ncols} integers "
            f'separated by ", " (as fio writes them, and as on the first line)'
        )
    # ddir and bs are the tokens in columns 1 and 2 when non-zero: the first one or two of
    # their line. They stay in place as empty entries (bin 0, count 0).
    ddir, bs = np.zeros(nlines, dtype=np.int64), np.zeros(nlines, dtype=np.int64)
    for k in (0, 1):
        at = first[has] + k
        at = at[at < upto[has]]
        for c, dest in ((1, ddir), (2, bs)):
            hit = at[col[at] == c]
            dest[np.searchsorted(upto, hit, side="right")] = value[hit]
            value[hit] = 0
            col[hit] = 3
    line = np.repeat(np.arange(nlines), ntok)
    return HistLog(time_ms, ddir, bs, line, col - 3, value, coarseness)


@dataclass(frozen=True)
class SecondHistograms:
    """Histograms per (second, node, direction), merged over jobs: the unit we store."""

    time_ns: np.ndarray
    node: np.ndarray  # object (str)
    op: np.ndarray  # object (str)
    counts: np.ndarray  # int64 (rows, bins)
    coarseness: int

    def totals(self) -> dict[tuple[str, str], np.ndarray]:
        """One histogram per (node, op) over the whole test, plus ("*", op) over all nodes."""
        out: dict[tuple[str, str], np.ndarray] = {}
        for key in {*zip(self.node, self.op, strict=True)}:
            sel = (self.node == key[0]) & (self.op == key[1])
            out[key] = self.counts[sel].sum(axis=0)
        for op in set(self.op):
            out[("*", op)] = self.counts[self.op == op].sum(axis=0)
        return out


def _merge_hist_rows(
    logs: Sequence[tuple[int, HistLog]], grid: Grid, log_hist_msec: int
) -> tuple[_Keys, np.ndarray, np.ndarray]:
    """Add every log's entries into one histogram per (node, direction, second).

    Returns the keys, the sorted distinct codes and the (codes, bins) counts.
    """
    keys = _Keys.of(grid, log_hist_msec, [(i, h.ddir, h.time_ms) for i, h in logs])
    uniq, index = keys.compact()
    nbins = logs[0][1].nbins
    dense = np.zeros(len(uniq) * nbins, dtype=np.int64)
    for (_, h), out_row in zip(logs, index, strict=True):
        np.add.at(dense, (out_row * nbins)[h.row] + h.bin, h.count)
    rows = np.zeros(len(uniq), dtype=bool)
    for out_row in index:
        rows[out_row] = True
    return keys, uniq[rows], dense.reshape(len(uniq), nbins)[rows]


def merge_hist_logs(
    logs: Mapping[str, Sequence[HistLog]], log_hist_msec: int = STEP_MS, grid: Grid | None = None
) -> SecondHistograms:
    """Re-grid every job's windows to 1 s and add up jobs of the same node and direction."""
    nodes = list(logs)
    all_logs = [(i, h) for i, n in enumerate(nodes) for h in logs[n] if len(h.time_ms)]
    if not all_logs:
        return SecondHistograms(
            *(np.zeros(0, dtype=t) for t in ("int64", object, object)),
            np.zeros((0, histogram.PLAT_NR), np.int64),
            0,
        )
    coarse = {h.coarseness for _, h in all_logs}
    if len(coarse) > 1:
        raise FioParseError(
            f"histogram logs with different coarseness {sorted(coarse)} cannot be merged"
        )
    if grid is None:
        grid = grid_for([h.time_ms for _, h in all_logs], log_hist_msec)
    keys, uniq, counts = _merge_hist_rows(all_logs, grid, log_hist_msec)
    return SecondHistograms(*keys.label(uniq, nodes, grid), counts, coarse.pop())


def clat_log_histograms(
    logs: Mapping[str, Sequence[pd.DataFrame]], grid: Grid | None = None
) -> SecondHistograms:
    """Per second fio histograms from per-I/O clat logs (no log_avg_msec): value is ns."""
    nodes = list(logs)
    frames = [(i, f) for i, n in enumerate(nodes) for f in logs[n] if len(f)]
    if not frames:
        raise FioParseError("no samples in any clat log")
    if grid is None:
        grid = grid_for([f["time_ms"].to_numpy() for _, f in frames], 0)
    keys = _Keys.of(
        grid, 0, [(i, f["ddir"].to_numpy(), f["time_ms"].to_numpy()) for i, f in frames]
    )
    uniq, index = keys.compact()
    counts = np.zeros(len(uniq) * histogram.PLAT_NR, dtype=np.int64)
    for (_, f), row in zip(frames, index, strict=True):
        flat = row * histogram.PLAT_NR + histogram.value_to_bin(f["value"].to_numpy())
        counts += np.bincount(flat, minlength=len(counts))
    counts = counts.reshape(len(uniq), histogram.PLAT_NR)
    rows = counts.any(axis=1)
    return SecondHistograms(*keys.label(uniq[rows], nodes, grid), counts[rows], 0)


def lat_frame(h: SecondHistograms) -> pd.DataFrame:
    """Per second percentiles for `fio_lat`: time (ns), node, op, p50..p99_9, count."""
    p = histogram.percentiles(h.counts, LAT_PERCENTILES, h.coarseness)
    out = pd.DataFrame({"time": h.time_ns, "node": h.node, "op": h.op})
    for i, f in enumerate(LAT_FIELDS):
        out[f] = p[:, i]
    out["count"] = h.counts.sum(axis=1)
    return out[out["count"] > 0].reset_index(drop=True)


def hist_frame(h: SecondHistograms) -> pd.DataFrame:
    """Per second log2-bucket histogram for `fio_hist` (non-empty buckets only; le in ns)."""
    le, c = histogram.log2_buckets(h.counts, h.coarseness)
    row, col = np.nonzero(c)
    return pd.DataFrame(
        {
            "time": h.time_ns[row],
            "node": h.node[row],
            "op": h.op[row],
            "le": le.astype(str)[col],
            "count": c[row, col],
        }
    )


def frame_points(df: pd.DataFrame, measurement: str, const_tags: Mapping[str, str]) -> list[Point]:
    """Points of a frame from this module (time, tag columns, fields), for small frames.

    Large frames go to the writer's write_frame with the same column roles.
    """
    tag_cols = [c for c in ("node", "op", "le") if c in df.columns]
    field_cols = [c for c in df.columns if c not in ("time", *tag_cols)]
    recs = df.to_dict("records")
    return [
        Point(
            measurement,
            {**const_tags, **{c: str(r[c]) for c in tag_cols}},
            {c: r[c] for c in field_cols if not (isinstance(r[c], float) and np.isnan(r[c]))},
            int(r["time"]),
        )
        for r in recs
    ]

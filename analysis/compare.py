"""`analysis compare`: the same tests of two or more runs side by side, and what changed.

Tests are matched by name (a plan run twice gives the same names). For each matched test
and direction the numbers of analysis.summary are set side by side: IOPS, bandwidth and
latency percentiles, with the difference (absolute and %) and whether it is significant:
a two-sided Mann-Whitney U test on the per-second samples of both runs (IOPS and
bandwidth from `fio`, latency from each second's merged fine histogram), taken from each
test's reliable window after its warm-up cut. Mann-Whitney assumes no distribution, so
skewed or bimodal series are compared fairly; with fewer than MIN_SAMPLES seconds on a
side nothing is called significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sstats

from analysis import page, plots, report, series, summary
from analysis.page import Block, Section
from analysis.stats import ALPHA
from analysis.windows import NS, TestWindow
from collector.influx import InfluxClient

MIN_SAMPLES = 3
# metric -> (column of the numbers frame, scale applied to it)
METRICS = {
    "IOPS": ("iops_mean", 1.0),
    "MiB/s": ("bw_bytes_mean", 1 / 2**20),
    "p50 ms": ("lat_p50_ms", 1.0),
    "p95 ms": ("lat_p95_ms", 1.0),
    "p99 ms": ("lat_p99_ms", 1.0),
}
_LAT_LEVEL = {"p50 ms": "p50", "p95 ms": "p95", "p99 ms": "p99"}


def significance(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> tuple[float, bool]:
    """(p-value, significant) of a two-sided Mann-Whitney U test of two samples.

    Too few samples on a side gives (nan, False); two identical constant samples p = 1.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return math.nan, False
    if np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0]:
        return 1.0, False
    p = float(sstats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p, p < alpha


@dataclass
class RunSide:
    """One run's tests, numbers and per-second samples by (test, op, metric)."""

    run: str
    tests: dict[str, TestWindow]
    numbers: pd.DataFrame
    samples: dict[tuple[str, str, str], np.ndarray]


def _samples(client: InfluxClient, t: TestWindow, cut: dict[str, int]) -> dict:
    """Per-second samples of one test in its reliable window, after the warm-up cut."""
    out: dict[tuple[str, str, str], np.ndarray] = {}
    sec = summary.fio_seconds(client, t)
    skip = cut.get(t.test, 0)
    if not sec.empty:
        sec = sec.iloc[skip:]
        for op in {op for _, op in sec.columns}:
            out[(t.test, op, "IOPS")] = sec[("iops", op)].to_numpy()
            out[(t.test, op, "MiB/s")] = sec[("bw", op)].to_numpy() / 2**20
        out.update(
            {
                (t.test, summary.ALL_OPS, m): sum(
                    out[(t.test, op, m)] for op in {op for _, op in sec.columns}
                )
                for m in ("IOPS", "MiB/s")
            }
        )
    lat = series.latency(client, t)
    if not lat.empty:
        at = t.first_start_ns + (lat["t_s"] * NS).astype(np.int64)
        lat = lat[(at >= t.start_ns + (skip + 1) * NS) & (at <= t.end_ns)]
        for op, g in lat.groupby("op"):
            for metric, level in _LAT_LEVEL.items():
                out[(t.test, str(op), metric)] = g[level].to_numpy()
    return out


def load_side(client: InfluxClient, run: str) -> RunSide:
    """A run's fio tests with their numbers and samples (unknown run: a clear error)."""
    tests = [t for t in report.run_tests(client, run) if t.kind == "fio"]
    numbers = summary.numbers_frame([n for t in tests for n in summary.test_numbers(client, t)])
    cut = (
        dict(zip(numbers["test"], numbers["warmup_cut_s"].astype(int), strict=True))
        if not numbers.empty
        else {}
    )
    samples: dict = {}
    for t in tests:
        samples.update(_samples(client, t, cut))
    return RunSide(run, {t.test: t for t in tests}, numbers, samples)


def compare_sides(a: RunSide, b: RunSide, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per matched test, direction and metric: both values, difference, p-value."""
    rows = []
    if a.numbers.empty or b.numbers.empty:
        return pd.DataFrame()
    nb = b.numbers.set_index(["test", "op"])
    for r in a.numbers.itertuples(index=False):
        key = (r.test, r.op)
        if key not in nb.index:
            continue
        other = nb.loc[key]
        for metric, (col, scale) in METRICS.items():
            va = getattr(r, col, math.nan) * scale
            vb = other.get(col, math.nan) * scale
            if not (np.isfinite(va) or np.isfinite(vb)):
                continue
            p, sig = significance(
                a.samples.get((r.test, r.op, metric), []),
                b.samples.get((r.test, r.op, metric), []),
                alpha,
            )
            rows.append(
                {
                    "test": r.test,
                    "op": r.op,
                    "qd": r.qd,
                    "metric": metric,
                    "run_a": a.run,
                    "run_b": b.run,
                    "a": va,
                    "b": vb,
                    "diff": vb - va,
                    "diff_pct": (vb - va) / va * 100 if va else math.nan,
                    "p": p,
                    "significant": sig,
                }
            )
    return pd.DataFrame(rows)


def unmatched(a: RunSide, b: RunSide) -> pd.DataFrame:
    """Tests present in only one of the two runs."""
    only_a = [t for t in a.tests if t not in b.tests]
    only_b = [t for t in b.tests if t not in a.tests]
    return pd.DataFrame(
        [{"test": t, "only_in": a.run} for t in only_a]
        + [{"test": t, "only_in": b.run} for t in only_b]
    )


def compare_runs(
    client: InfluxClient, runs: list[str], alpha: float = ALPHA
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every later run against the first: (comparison rows, unmatched tests)."""
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(runs)}")
    sides = [load_side(client, r) for r in runs]
    base = sides[0]
    diffs = [compare_sides(base, s, alpha) for s in sides[1:]]
    missing = [unmatched(base, s) for s in sides[1:]]
    diffs = [d for d in diffs if not d.empty]
    missing = [m for m in missing if not m.empty]
    return (
        pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame(),
        pd.concat(missing, ignore_index=True) if missing else pd.DataFrame(),
    )


def text_table(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison for people: values, change and a mark when significant."""
    if table.empty:
        return table
    several = table["run_b"].nunique() > 1
    return pd.DataFrame(
        {
            "test": table["test"],
            "op": table["op"],
            "metric": table["metric"],
            **({"B run": table["run_b"]} if several else {}),
            "A": table["a"],
            "B": table["b"],
            "change": [
                "-" if not np.isfinite(x) else f"{x:+.1f}%" for x in table["diff_pct"].astype(float)
            ],
            "p": table["p"],
            "significant": np.where(table["significant"], "yes", "no"),
        }
    )


def render_html(runs: list[str], table: pd.DataFrame, missing: pd.DataFrame) -> str:
    """The comparison as a self-contained page: a chart per metric and the tables."""
    import plotly.graph_objects as go

    secs = []
    charts = Section(
        "charts",
        "Side by side",
        "Each matched test's value per run; hover for the p-value of the change "
        "(two-sided Mann-Whitney U on per-second samples). Click a legend entry to hide a run.",
    )
    for metric in METRICS:
        sel = table[table["metric"] == metric] if not table.empty else table
        if sel.empty:
            continue
        fig = go.Figure()
        label = sel["test"] + " " + sel["op"]
        base = sel.drop_duplicates(["test", "op"])
        fig.add_trace(go.Bar(x=base["test"] + " " + base["op"], y=base["a"], name=runs[0]))
        for run_b, g in sel.groupby("run_b", sort=False):
            fig.add_trace(
                go.Bar(
                    x=label[g.index],
                    y=g["b"],
                    name=str(run_b),
                    customdata=np.stack([g["diff_pct"], g["p"]], axis=-1),
                    hovertemplate="%{y:.4g} (%{customdata[0]:+.1f}%, p=%{customdata[1]:.3g})"
                    "<extra>%{fullData.name}</extra>",
                )
            )
        fig.update_layout(barmode="group", height=plots.HEIGHT, title_text=metric)
        charts.blocks.append(page.figure(fig))
    if not charts.blocks:
        charts.blocks.append(Block("empty", text="no test is in both runs"))
    secs.append(charts)
    tab = Section(
        "table",
        "Differences",
        "B - A, absolute and relative to A; significant when p < alpha.",
        [page.table(text_table(table), empty="no test is in both runs")],
    )
    secs.append(tab)
    secs.append(
        Section(
            "unmatched",
            "Unmatched tests",
            "Tests found in only one run (matched by name).",
            [page.table(missing, empty="every test is in every run")],
        )
    )
    meta = [("A", runs[0]), ("B", ", ".join(runs[1:]))]
    return page.render(f"Wally comparison: {' vs '.join(runs)}", meta, secs)

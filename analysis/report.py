"""`analysis report`: everything about a run in one self-contained, interactive HTML page.

The numbers come from the analysis jobs (summary, ratios, bottlenecks); this module
gathers them with the series behind the plots, lays them out as sections of a page
(analysis.page) and writes the same tables as CSV, JSON and YAML. A report can also
cover a time span without tests (scheduled reports of an idle cluster): then only the
cluster sections have content.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml
from rich.progress import Progress

from analysis import bottlenecks, page, plots, ratios, series, summary
from analysis.config import AnalysisSection
from analysis.page import Block, Section
from analysis.windows import NS, RunNotFound, TestWindow, load_tests, windows_frame
from collector import schema
from collector.influx import InfluxClient, InfluxError, quote_ident

log = logging.getLogger(__name__)

MARGIN_S = 30  # cluster load shown around the tests
TOP_RESOURCES = 5  # bottleneck rows per test in the page (exports have all)
CPU_COST = re.compile(r"\.cpu\.")  # ratios plotted as "CPU per IOP vs QD"
SECRET_KEY = re.compile(r"^(password|passwd|token|secret|api_key|passphrase)$", re.IGNORECASE)
HEATMAP_RESOURCES = {"cpu": "CPU busy % per node", "disk util": "device utilisation % per device"}


@dataclass
class ReportData:
    """What one report shows; every frame may be empty."""

    title: str
    run: str | None
    tests: list[TestWindow]
    span: tuple[int, int]  # ns, the cluster sections' time range
    step_s: int
    numbers: pd.DataFrame = field(default_factory=pd.DataFrame)
    storage: summary.StorageSummary | None = None
    ratios: pd.DataFrame = field(default_factory=pd.DataFrame)
    bottlenecks: pd.DataFrame = field(default_factory=pd.DataFrame)
    first_saturated: pd.DataFrame = field(default_factory=pd.DataFrame)
    checks: pd.DataFrame = field(default_factory=pd.DataFrame)
    throughput: dict[str, pd.DataFrame] = field(default_factory=dict)
    latency: dict[str, pd.DataFrame] = field(default_factory=dict)
    latency_heatmaps: dict[str, pd.DataFrame] = field(default_factory=dict)
    load: pd.DataFrame = field(default_factory=pd.DataFrame)
    resource_heatmaps: dict[str, pd.DataFrame] = field(default_factory=dict)
    nodes: pd.DataFrame = field(default_factory=pd.DataFrame)
    devices: pd.DataFrame = field(default_factory=pd.DataFrame)
    plan_text: str | None = None
    config_text: str | None = None
    database: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)  # section id -> failures
    generated: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    )

    def tables(self) -> dict[str, pd.DataFrame]:
        """The exported tables by name."""
        s = self.storage
        return {
            "tests": windows_frame(self.tests).assign(
                params=[json.dumps(t.params, sort_keys=True) for t in self.tests]
            )
            if self.tests
            else pd.DataFrame(),
            "numbers": self.numbers,
            "best_iops": s.best_iops if s else pd.DataFrame(),
            "max_bandwidth": s.max_bandwidth if s else pd.DataFrame(),
            "vs_qd": s.vs_qd if s else pd.DataFrame(),
            "ratios": self.ratios,
            "bottlenecks": self.bottlenecks,
            "first_saturated": self.first_saturated,
            "checks": self.checks,
            "nodes": self.nodes,
            "devices": self.devices,
        }


# --- gathering ------------------------------------------------------------------------


def run_tests(client: InfluxClient, run: str) -> list[TestWindow]:
    """The run's tests; an unknown run id says how to list the known ones."""
    try:
        return load_tests(client, run)
    except RunNotFound as e:
        raise RunNotFound(
            f"{e}\nList runs with the InfluxQL query "
            f'SHOW TAG VALUES FROM wally_test WITH KEY = "run" (database {client.database!r}); '
            "each `loadgen run` prints its run id and keeps a directory runs/RUN_ID."
        ) from None


def run_span(tests: list[TestWindow], margin_s: int = MARGIN_S) -> tuple[int, int]:
    """From a little before the first test to a little after the last one."""
    return (
        min(t.first_start_ns for t in tests) - margin_s * NS,
        max(t.last_end_ns for t in tests) + margin_s * NS,
    )


@contextmanager
def _step(
    data: ReportData, where: str, progress: Progress | None, label: str, total: int = 1
) -> Iterator:
    """One gathering step: a progress line, and its failure kept for the page.

    An analysis that fails leaves its section with the error and the rest of the report
    intact; a database that cannot be reached stops the report.
    """
    task = progress.add_task(label, total=total) if progress else None
    try:
        yield (lambda: progress.advance(task)) if progress else (lambda: None)
    except InfluxError:
        raise
    except Exception as e:
        log.debug("report: %s failed", label, exc_info=True)
        data.errors.setdefault(where, []).append(f"{label} failed: {type(e).__name__}: {e}")
    finally:
        if progress:
            progress.update(task, completed=total)


def _latest(
    client: InfluxClient, measurement: str, keys: tuple[str, ...], end_ns: int
) -> pd.DataFrame:
    """The last record per series up to `end_ns` (node and device inventory)."""
    by = ", ".join(quote_ident(k) for k in keys)
    df = client.query_df(
        f"SELECT * FROM {quote_ident(measurement)} WHERE time <= $e GROUP BY {by}", {"e": end_ns}
    )
    if df.empty:
        return df
    df = df.sort_values("time").drop_duplicates(list(keys), keep="last")
    return df.drop(columns=["_measurement", "info", "role"], errors="ignore").reset_index(drop=True)


def read_run_dir(run_dir: Path) -> tuple[str | None, str | None]:
    """(plan.txt, config.yaml with literal secrets redacted) of a run directory."""
    plan = run_dir / "plan.txt"
    cfg = run_dir / "config.yaml"
    plan_text = plan.read_text() if plan.is_file() else None
    config_text = redact(cfg.read_text()) if cfg.is_file() else None
    return plan_text, config_text


def redact(text: str) -> str:
    """The config as written, unless a key such as `password:` holds a literal value.

    Lab configs name secrets by environment variable or file (`password_env`,
    `password_file`); a literal one is replaced before the text enters a report.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text

    found = False

    def walk(node: object) -> object:
        nonlocal found
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if isinstance(k, str) and SECRET_KEY.match(k) and v not in (None, ""):
                    found, out[k] = True, "<redacted>"
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    clean = walk(doc)
    return yaml.safe_dump(clean, sort_keys=False) if found else text


def collect(
    client: InfluxClient,
    tests: list[TestWindow],
    section: AnalysisSection | None = None,
    *,
    run: str | None = None,
    span: tuple[int, int] | None = None,
    run_dir: Path | None = None,
    title: str | None = None,
    progress: Progress | None = None,
) -> ReportData:
    """Run every analysis the report shows over `tests` (may be empty) and `span`."""
    section = section or AnalysisSection()
    if span is None:
        if not tests:
            raise ValueError("a report without tests needs a time span")
        span = run_span(tests)
    data = ReportData(
        title=title or (f"Wally report: run {run}" if run else "Wally report"),
        run=run,
        tests=tests,
        span=span,
        step_s=series.step_for(*span),
        database=client.database,
    )
    fio_tests = [t for t in tests if t.kind == "fio"]
    key = run or ""
    if tests:
        with _step(data, "summary", progress, "per-test numbers", len(fio_tests)) as advance:
            nums = []
            for t in fio_tests:
                nums += summary.test_numbers(client, t)
                advance()
            data.numbers = summary.numbers_frame(nums)
            data.storage = summary.storage_summary(data.numbers)
        with _step(data, "costs", progress, "resource costs"):
            data.ratios = ratios.ratio_table(
                client, key, section.ratio_exprs(), tests=tests, **section.engine_kw()
            )
        with _step(data, "bottlenecks", progress, "bottlenecks and checks"):
            limits = section.limits()
            data.bottlenecks = bottlenecks.run_bottlenecks(client, key, limits, tests)
            data.first_saturated = bottlenecks.first_saturated(data.bottlenecks, tests, limits)
            data.checks = bottlenecks.run_checks(client, key, limits, tests, **section.engine_kw())
        with _step(data, "series", progress, "per-test series", len(fio_tests)) as advance:
            for t in fio_tests:
                data.throughput[t.test] = series.throughput(client, t)
                data.latency[t.test] = series.latency(client, t)
                data.latency_heatmaps[t.test] = series.latency_heatmap(client, t)
                advance()
    with _step(data, "cluster", progress, "cluster load", 1 + len(HEATMAP_RESOURCES)) as advance:
        data.load = series.cluster_load(client, *span, data.step_s)
        advance()
        for name in HEATMAP_RESOURCES:
            data.resource_heatmaps[name] = series.resource_heatmap(client, name, *span, data.step_s)
            advance()
        data.nodes = _latest(client, schema.WALLY_NODE.name, ("node",), span[1])
        data.devices = _latest(client, schema.WALLY_DEVICE.name, ("node", "device"), span[1])
    if run_dir is not None:
        data.plan_text, data.config_text = read_run_dir(run_dir)
    return data


# --- tables for people ------------------------------------------------------------------


def brief_numbers(numbers: pd.DataFrame) -> pd.DataFrame:
    """The per-test table people read: IOPS with its 95% CI, MiB/s, latency, warnings."""
    if numbers.empty:
        return numbers
    out = pd.DataFrame(
        {
            "test": numbers["test"],
            "op": numbers["op"],
            "qd": numbers["qd"],
            "IOPS": numbers["iops_mean"].round(0),
            "IOPS 95% CI": [
                f"{lo:,.0f} … {hi:,.0f}"
                for lo, hi in zip(numbers["iops_ci_low"], numbers["iops_ci_high"], strict=True)
            ],
            "MiB/s": numbers["bw_bytes_mean"] / 2**20,
        }
    )
    for k in summary.LAT_LEVELS:
        col = f"lat_{k}_ms"
        if col in numbers:
            out[f"{k.replace('_', '.')} ms"] = numbers[col]
    out["window s"] = numbers["window_s"]
    out["cut s"] = numbers["warmup_cut_s"]
    out["warnings"] = numbers["warnings"]
    return out


def cost_table(table: pd.DataFrame) -> pd.DataFrame:
    """Ratios as one row per test and one column per ratio: "value ±deviation".

    Ratios skipped for every test (e.g. no storage nodes) are left out: they are listed
    with the reason separately.
    """
    if table.empty:
        return table

    def cell(r: pd.Series) -> str:
        if r["skipped"]:
            return "skipped"
        dev = r["deviation"]
        return page.fmt(r["value"]) + (f" ±{dev:.0%}" if pd.notna(dev) else "")

    wide = table.assign(cell=table.apply(cell, axis=1)).pivot(
        index="test", columns="name", values="cell"
    )
    computed = table.groupby("name", sort=False)["skipped"].apply(lambda s: (s == "").any())
    wide = wide.reindex(
        index=list(dict.fromkeys(table["test"])), columns=list(computed[computed].index)
    )
    return wide.reset_index().rename_axis(columns=None)


def _cpu_costs(data: ReportData) -> pd.DataFrame:
    t = data.ratios
    if t.empty:
        return t
    sel = t[t["expr"].str.contains(CPU_COST) & t["value"].notna() & (t["skipped"] == "")]
    info = pd.DataFrame(
        [{"test": x.test, "qd": x.qd, "family": f"{x.rw} {x.bs}"} for x in data.tests]
    )
    return sel.merge(info, on="test").dropna(subset=["qd"])


def _test_windows(tests: list[TestWindow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "test": [t.test for t in tests],
            "start": plots.datetimes(pd.Index([t.first_start_ns for t in tests], dtype="int64")),
            "end": plots.datetimes(pd.Index([t.last_end_ns for t in tests], dtype="int64")),
        }
    )


def text_tables(data: ReportData) -> tuple[dict[str, pd.DataFrame], dict[str, str], list[str]]:
    """What the terminal shows after writing a report: tables, their titles, warnings."""
    n = data.numbers
    tables = {}
    if not n.empty:
        half = (n["iops_ci_high"] - n["iops_ci_low"]) / 2
        tables["tests"] = pd.DataFrame(
            {
                "test": n["test"],
                "op": n["op"],
                "IOPS": [f"{m:,.0f} ±{h:,.0f}" for m, h in zip(n["iops_mean"], half, strict=True)],
                "MiB/s": n["bw_bytes_mean"] / 2**20,
                **{
                    f"{k} ms": n[f"lat_{k}_ms"] for k in ("p50", "p95", "p99") if f"lat_{k}_ms" in n
                },
            }
        )
    s = data.storage
    if s is not None:
        tables["best_iops"] = s.best_iops
        tables["max_bandwidth"] = s.max_bandwidth
    tables["first_saturated"] = data.first_saturated
    titles = {
        "tests": "tests (IOPS mean ±95% CI over the reliable window)",
        "best_iops": "best random IOPS by p95 latency class",
        "max_bandwidth": "max sequential bandwidth",
        "first_saturated": "first resource to saturate as QD grows",
    }
    warnings = (
        [f"{r.test} {r.op}: {r.warnings}" for r in n.itertuples() if r.warnings]
        if not n.empty
        else []
    )
    return tables, titles, warnings


# --- the page -------------------------------------------------------------------------

HELP = {
    "summary": "Headline numbers. Best random read/write IOPS whose p95 latency stays under "
    "10 ms (database class), 30 ms (file system) and 100 ms (file server); max "
    "sequential bandwidth; and every test's IOPS with a 95% confidence interval over its "
    "reliable window (latest node start + ramp to earliest node stop, warm-up cut).",
    "qd": "IOPS (mean, error bars = 95% CI of per-second samples) and latency percentiles "
    "(fio's fine histograms summed over the test, interpolated within the bin) against "
    "queue depth. Click a legend entry to hide a series; hover for values.",
    "cpu": "CPU cost of client work against QD: the configured ratios over `.cpu.` "
    "terms, e.g. testnode.cpu.busy_seconds * 1000 / client.ios = non-idle, non-iowait "
    "core-seconds per 1000 client I/Os over the test window.",
    "series": "Per-second IOPS (all nodes summed) and latency percentiles (all nodes' "
    "completions of that second together) over each test's whole run, ramp included.",
    "latency-heatmaps": "Completions per second in log2 latency buckets (fio_hist, all "
    "nodes summed): bands show latency modes (cache hits, device, queueing).",
    "costs": "Resource-cost ratios per test (analysis.ratios): the value over the test "
    "window and ±its relative deviation across equal time chunks (a steady cost has a "
    "small one). Skipped ratios name what is missing (e.g. no storage role).",
    "bottlenecks": "Every resource ranked by the share of the window spent at or past its "
    "threshold, then by closeness = mean level / threshold; the first resource to saturate "
    "as QD grows; checks (cache hits, data flushed).",
    "cluster": "Load per node role over the span (gray bands: test windows; hover the "
    "triangles for names): CPU busy % averaged over the role's nodes, disk IOPS and "
    "MiB/s and network MiB/s summed over its devices. A node with several roles counts "
    "in each.",
    "heatmaps": "Per node (rows grouped by role): CPU busy % of cpu-total, and per device: "
    "utilisation (io_time share).",
    "plan": "The tests as recorded in InfluxDB (wally_test: status, nodes, parameters) and "
    "the compiled plan of the run directory (plan.txt).",
    "config": "The lab config of the run directory (config.yaml) and the nodes and devices "
    "as discovered. Secrets are named by environment variable or file, never included.",
    "help": "How to read this report.",
}


def _summary_section(data: ReportData) -> Section:
    s = Section("summary", "Storage summary", HELP["summary"])
    if not data.tests:
        s.blocks.append(Block("empty", text="No tests in this span: see the cluster sections."))
        return s
    st = data.storage
    if st is not None:
        s.blocks.append(page.table(st.best_iops, "Best random IOPS by p95 latency class"))
        s.blocks.append(page.table(st.max_bandwidth, "Max sequential bandwidth (bytes/s)"))
    s.blocks.append(page.table(brief_numbers(data.numbers), "Tests", empty="no fio tests"))
    rpc = [t.test for t in data.tests if t.kind == "rpc"]
    if rpc:
        s.blocks.append(
            Block("warn", text=f"{len(rpc)} RPC iteration(s): see `analysis rpc {data.run}`.")
        )
    return s


def _plot_sections(data: ReportData) -> list[Section]:
    out = []
    qd = Section("qd", "IOPS and latency vs QD", HELP["qd"])
    vs = data.storage.vs_qd if data.storage else pd.DataFrame()
    qd.blocks.append(
        page.figure(plots.vs_qd(vs)) if not vs.empty else Block("empty", text="no fio tests")
    )
    out.append(qd)
    cpu = Section("cpu", "CPU per IOP vs QD", HELP["cpu"])
    costs = _cpu_costs(data)
    cpu.blocks.append(
        page.figure(plots.cost_vs_qd(costs))
        if not costs.empty
        else Block("empty", text="no CPU cost ratio could be computed for these tests")
    )
    out.append(cpu)
    ts = Section("series", "Per-test time series", HELP["series"])
    ts.blocks.append(
        page.figure(plots.test_series(data.throughput, data.latency))
        if data.throughput
        else Block("empty", text="no fio tests")
    )
    out.append(ts)
    hm = Section("latency-heatmaps", "Latency heatmaps", HELP["latency-heatmaps"])
    for test, df in data.latency_heatmaps.items():
        hm.blocks.append(
            page.figure(plots.latency_heatmap(test, df))
            if not df.empty
            else Block("empty", heading=test, text="no latency histogram data")
        )
    if not data.latency_heatmaps:
        hm.blocks.append(Block("empty", text="no fio tests"))
    out.append(hm)
    return out


def _analysis_sections(data: ReportData) -> list[Section]:
    costs = Section("costs", "Resource costs", HELP["costs"])
    costs.blocks.append(page.table(cost_table(data.ratios), empty="no tests"))
    if not data.ratios.empty:
        exprs = data.ratios.drop_duplicates("name")
        skipped = exprs[exprs["skipped"] != ""]
        costs.blocks.append(
            Block(
                "defs",
                heading="Expressions",
                items=list(zip(exprs["name"], exprs["expr"], strict=True)),
            )
        )
        if len(skipped):
            costs.blocks.append(page.table(skipped[["name", "skipped"]], "Skipped"))
    bn = Section("bottlenecks", "Bottlenecks", HELP["bottlenecks"])
    bn.blocks.append(page.table(data.first_saturated, "First to saturate as QD grows"))
    top = (
        data.bottlenecks.groupby("test", sort=False).head(TOP_RESOURCES)
        if not data.bottlenecks.empty
        else data.bottlenecks
    )
    bn.blocks.append(
        page.table(top, f"Closest to saturation (top {TOP_RESOURCES} per test; exports have all)")
    )
    bn.blocks.append(page.table(data.checks, "Checks"))
    return [costs, bn]


def _cluster_sections(data: ReportData) -> list[Section]:
    lo, hi = data.span
    when = (
        f"{pd.Timestamp(lo, unit='ns', tz='UTC'):%Y-%m-%d %H:%M:%S} to "
        f"{pd.Timestamp(hi, unit='ns', tz='UTC'):%H:%M:%S} UTC, {data.step_s} s buckets"
    )
    cl = Section("cluster", "Cluster load", HELP["cluster"])
    if data.load.empty:
        cl.blocks.append(Block("empty", text=f"no node data from {when}"))
    else:
        fig = plots.cluster_load(data.load, series.LOAD_METRICS, _test_windows(data.tests))
        cl.blocks.append(page.figure(fig, note=when))
    hm = Section("heatmaps", "CPU and device heatmaps by role", HELP["heatmaps"])
    for name, title in HEATMAP_RESOURCES.items():
        df = data.resource_heatmaps.get(name, pd.DataFrame())
        hm.blocks.append(
            page.figure(plots.resource_heatmap(df, title))
            if not df.empty
            else Block("empty", heading=title, text=f"no {name} data from {when}")
        )
    return [cl, hm]


def _plan_table(text: str) -> pd.DataFrame:
    rows = []
    for line in text.splitlines():
        if line.strip():
            name, _, rest = line.partition("\t")
            nodes, _, params = rest.partition("\t")
            rows.append({"test": name, "nodes": nodes, "params": params})
    return pd.DataFrame(rows)


def _inventory_sections(data: ReportData) -> list[Section]:
    plan = Section("plan", "Compiled test list", HELP["plan"])
    frame = data.tables()["tests"]
    if not frame.empty:
        frame = frame.assign(
            start=pd.to_datetime(frame["start_ns"], unit="ns", utc=True).dt.strftime("%H:%M:%S")
        ).drop(columns=["start_ns", "end_ns"])
    plan.blocks.append(page.table(frame, "Tests run (wally_test)", empty="no tests"))
    if data.plan_text is not None:
        plan.blocks.append(page.table(_plan_table(data.plan_text), "Compiled plan (plan.txt)"))
    cfg = Section("config", "Lab config", HELP["config"])
    if data.config_text is not None:
        cfg.blocks.append(Block("pre", text=data.config_text, heading="config.yaml"))
    else:
        cfg.blocks.append(Block("empty", text="no run directory given (--run-dir)"))
    cfg.blocks.append(page.table(data.nodes, "Nodes", empty="no node inventory"))
    cfg.blocks.append(page.table(data.devices, "Devices", empty="no device inventory"))
    return [plan, cfg]


def _help_section(sections: list[Section]) -> Section:
    items = [(s.title, s.help) for s in sections]
    items += [
        (
            "Interaction",
            "Hover a plot for values; click a legend entry to hide or show its "
            "series, double-click to show it alone; drag to zoom, double-click to reset.",
        ),
        (
            "Exports",
            "`analysis report RUN --export DIR` writes every table as CSV plus "
            "report.json and report.yaml.",
        ),
    ]
    return Section("help", "Help", HELP["help"], [Block("defs", items=items)])


def sections(data: ReportData) -> list[Section]:
    out = [
        _summary_section(data),
        *_plot_sections(data),
        *_analysis_sections(data),
        *_cluster_sections(data),
        *_inventory_sections(data),
    ]
    for s in out:
        s.blocks[:0] = [Block("warn", text=e) for e in data.errors.get(s.id, [])]
    return [*out, _help_section(out)]


SECTION_IDS = tuple(HELP)


def render(data: ReportData) -> str:
    lo, hi = data.span
    meta = [
        ("database", data.database),
        ("tests", str(len(data.tests))),
        (
            "span",
            f"{pd.Timestamp(lo, unit='ns', tz='UTC'):%Y-%m-%d %H:%M:%S} – "
            f"{pd.Timestamp(hi, unit='ns', tz='UTC'):%H:%M:%S} UTC",
        ),
        ("generated", data.generated),
    ]
    if data.run:
        meta.insert(0, ("run", data.run))
    return page.render(data.title, meta, sections(data))


def write(data: ReportData, out: Path) -> Path:
    """Write the page (atomically: a reader never sees half a report)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(render(data), encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def export(data: ReportData, directory: Path) -> dict[str, Path]:
    """Every table as NAME.csv, and all of them in report.json and report.yaml."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    doc: dict[str, object] = {
        "run": data.run,
        "database": data.database,
        "span_ns": list(data.span),
        "generated": data.generated,
    }
    for name, df in data.tables().items():
        path = directory / f"{name}.csv"
        df.to_csv(path, index=False)
        paths[name] = path
        doc[name] = json.loads(df.to_json(orient="records")) if not df.empty else []
    paths["json"] = directory / "report.json"
    paths["json"].write_text(json.dumps(doc, indent=1))
    paths["yaml"] = directory / "report.yaml"
    paths["yaml"].write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return paths

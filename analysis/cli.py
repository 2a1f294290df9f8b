"""`analysis`: turning measurements into answers — summaries, costs, bottlenecks, reports."""

from __future__ import annotations

import json
import math
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from analysis import bottlenecks, compare, config, ratios, report, rpc, schedule, summary
from analysis.page import fmt as _cell
from analysis.windows import load_tests
from collector.clicommon import WallyGroup, db_options, setup_logging, verbose_option


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Analyse runs stored in InfluxDB: statistics, resource costs, bottlenecks, reports.

    \b
    Example:
      analysis summary RUN_ID
    """
    setup_logging(verbose)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Lab config: its `analysis:` section (ratios, thresholds) and `influx:` section.",
)
output_options = [
    click.option("--json", "fmt", flag_value="json", help="Print JSON instead of tables."),
    click.option("--csv", "fmt", flag_value="csv", help="Print CSV instead of tables."),
]


def _outputs(f):
    for opt in reversed(output_options):
        f = opt(f)
    return f


def emit(
    tables: dict[str, pd.DataFrame], fmt: str | None, titles: dict[str, str] | None = None
) -> None:
    """Tables as rich tables (titled), one JSON object of record lists, or CSV sections."""
    if fmt == "json":
        doc = {k: json.loads(v.to_json(orient="records")) for k, v in tables.items()}
        click.echo(json.dumps(doc, indent=2))
        return
    if fmt == "csv":
        for i, (name, df) in enumerate(tables.items()):
            if len(tables) > 1:
                click.echo(("\n" if i else "") + f"# {name}")
            df.to_csv(sys.stdout, index=False)
        return
    console = Console()
    for key, df in tables.items():
        name = (titles or {}).get(key, key)
        if df.empty:
            console.print(f"[bold]{name}[/bold]: nothing")
            continue
        table = Table(title=name, title_justify="left")
        for c in df.columns:
            table.add_column(
                str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left"
            )
        for row in df.itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        console.print(table)


def _setup(db, config_path: Path | None):
    section, influx = config.load(config_path)
    return section, db.client(influx)


@main.command("summary")
@click.argument("run")
@config_option
@db_options
@_outputs
def summary_cmd(run: str, config_path: Path | None, db, fmt: str | None) -> None:
    """Per-test IOPS, bandwidth and latency with their statistics, and the storage summary.

    IOPS/bandwidth come from the reliable window (all nodes running, after the ramp) cut
    where the series becomes steady; latency percentiles from fio's fine histograms.

    \b
    Example:
      analysis summary 20260101-120000-ab12 --json
    """
    _, client = _setup(db, config_path)
    frame = summary.numbers_frame(summary.run_numbers(client, run))
    s = summary.storage_summary(frame)
    brief = frame
    if not fmt and not frame.empty:
        half = (frame["iops_ci_high"] - frame["iops_ci_low"]) / 2
        lat = {
            f"{k} ms": frame[f"lat_{k}_ms"] for k in summary.LAT_LEVELS if f"lat_{k}_ms" in frame
        }
        brief = pd.DataFrame(
            {
                "test": frame["test"],
                "op": frame["op"],
                "iops": [
                    f"{m:,.0f} ±{h:,.0f}" for m, h in zip(frame["iops_mean"], half, strict=True)
                ],
                "MiB/s": frame["bw_bytes_mean"] / 2**20,
                **lat,
                "cut s": frame["warmup_cut_s"],
            }
        )
    emit(
        {
            "tests": brief,
            "best_iops": s.best_iops,
            "max_bandwidth": s.max_bandwidth,
            "vs_qd": s.vs_qd,
        },
        fmt,
        {
            "tests": "tests (IOPS mean ±95% CI)",
            "best_iops": "best random IOPS by p95 latency class",
            "max_bandwidth": "max sequential bandwidth",
            "vs_qd": "IOPS and latency vs QD",
        },
    )
    if not fmt and not frame.empty:
        for row in frame[frame["warnings"] != ""].itertuples():
            click.echo(f"{row.test} {row.op}: {row.warnings}")


def _parse_exprs(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for i, item in enumerate(items):
        name, sep, expr = item.partition("=")
        if sep and name.strip().isidentifier():
            out[name.strip()] = expr
        else:
            out[f"expr{i + 1}"] = item
    return out


@main.command("ratios")
@click.argument("run")
@click.option(
    "--expr",
    "exprs",
    multiple=True,
    help="NAME=EXPRESSION (or just EXPRESSION) over ROLE.DEVICE_OR_CLASS.FIELD; repeatable. "
    "Replaces the configured set.",
)
@config_option
@db_options
@_outputs
def ratios_cmd(
    run: str, exprs: tuple[str, ...], config_path: Path | None, db, fmt: str | None
) -> None:
    """Resource costs per test: the configured ratio expressions (or --expr) in one table.

    Each cell is the ratio over the test window, with its deviation across time chunks.

    \b
    Example:
      analysis ratios RUN_ID --expr "w=testnode.disk.writes / client.write.ios"
    """
    section, client = _setup(db, config_path)
    given = _parse_exprs(exprs)
    for name, text in given.items():
        ratios.parse(name, text)
    table = ratios.ratio_table(
        client, run, given or section.ratio_exprs(), strict=bool(given), **section.engine_kw()
    )
    if fmt or table.empty:
        emit({"ratios": table}, fmt)
        return
    cell = table.apply(
        lambda r: (
            (r["skipped"] and "skipped")
            or (
                f"{_cell(r['value'])} ±{r['deviation']:.0%}"
                if math.isfinite(r["deviation"])
                else _cell(r["value"])
            )
        ),
        axis=1,
    )
    wide = table.assign(cell=cell).pivot(index="test", columns="name", values="cell")
    wide = wide.reindex(
        index=list(dict.fromkeys(table["test"])), columns=list(dict.fromkeys(table["name"]))
    )
    skipped = table[table["skipped"] != ""].drop_duplicates("name")[["name", "skipped"]]
    emit(
        {"ratios": wide.reset_index(), "skipped": skipped},
        fmt,
        {"ratios": "ratios (value ±deviation across chunks)"},
    )


@main.command("bottlenecks")
@click.argument("run")
@click.option("--top", default=5, show_default=True, help="Resources shown per test (tables only).")
@config_option
@db_options
@_outputs
def bottlenecks_cmd(run: str, top: int, config_path: Path | None, db, fmt: str | None) -> None:
    """Resources ranked by closeness to saturation per test, the first to saturate as QD
    grows, and the checks (cache hits, data flushed).

    \b
    Example:
      analysis bottlenecks RUN_ID --top 3
    """
    section, client = _setup(db, config_path)
    limits = section.limits()
    tests = load_tests(client, run)
    table = bottlenecks.run_bottlenecks(client, run, limits, tests)
    first = bottlenecks.first_saturated(table, tests, limits)
    checks = bottlenecks.run_checks(client, run, limits, tests, **section.engine_kw())
    shown = table if fmt or table.empty else table.groupby("test", sort=False).head(top)
    emit(
        {"bottlenecks": shown, "first_saturated": first, "checks": checks},
        fmt,
        {
            "bottlenecks": "closest to saturation",
            "first_saturated": "first to saturate as QD grows",
        },
    )


@main.command("rpc")
@click.argument("run")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for rpc.html, rpc.csv and rpc.json [default: ./rpc-RUN].",
)
@click.option(
    "--bus-role",
    default=rpc.DEFAULT_BUS_ROLE,
    show_default=True,
    help="Node role of the broker nodes (their netstat and net are the bus's).",
)
@db_options
def rpc_cmd(run: str, out_dir: Path | None, bus_role: str, db) -> None:
    """RPC post-mortem of a run (or an imported ombt campaign): table, plots, exports.

    One row per iteration: agents, messages ok/failed sent and received (total and per
    agent min/mean/max), aggregate rate, latency mean/stddev/p50/p90/p99/p99.9 on both
    sides, and the bus's CPU, memory, connections, TCP and network over its window.
    The HTML page embeds its plots' JavaScript: it opens without network.

    \b
    Example:
      analysis rpc 20261122-101500-ab12 --out /tmp/rpc-report
      collector ingest ombt ./test_case_1 --run tc1 && analysis rpc tc1
    """
    client = db.client()
    iterations = rpc.load_iterations(client, run, bus_role)
    table, paths = rpc.export(run, iterations, out_dir or Path(f"rpc-{run}"))
    Console().print(rpc.console_table(run, table))
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}", err=True)


@main.command("report")
@click.argument("run")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file [default: ./report-RUN.html].",
)
@click.option(
    "--run-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The run's directory: adds its compiled plan and lab config to the report; its "
    "config.yaml also gives the analysis: and influx: sections unless --config is given.",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write every table as CSV, and all of them as report.json and report.yaml.",
)
@config_option
@db_options
def report_cmd(
    run: str, out: Path | None, run_dir: Path | None, export_dir: Path | None, config_path, db
) -> None:
    """A self-contained interactive HTML report of a run (opens without network).

    Sections: storage summary, IOPS/latency vs QD, CPU per IOP vs QD, per-test time
    series, latency heatmaps, resource costs, bottlenecks, cluster load, per-role CPU and
    device heatmaps, the compiled test list, the lab config, help. The key tables are
    printed too.

    \b
    Example:
      analysis report 20261122-101500-ab12 --run-dir runs/20261122-101500-ab12 --export out/
    """
    if config_path is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        config_path = run_dir / "config.yaml"
    section, client = _setup(db, config_path)
    out = out or Path(f"report-{run}.html")
    with Progress(console=Console(stderr=True), transient=True) as progress:
        tests = report.run_tests(client, run)
        data = report.collect(client, tests, section, run=run, run_dir=run_dir, progress=progress)
        progress.add_task("writing the page", total=None)
        report.write(data, out)
        paths = report.export(data, export_dir) if export_dir else {}
    tables, titles, warnings = report.text_tables(data)
    emit(tables, None, titles)
    for line in warnings:
        click.echo(line)
    for where, errors in data.errors.items():
        for e in errors:
            click.echo(f"warning: section {where}: {e}", err=True)
    click.echo(f"report: {out}", err=True)
    if paths:
        click.echo(f"exports: {export_dir} ({', '.join(p.name for p in paths.values())})", err=True)


@main.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the comparison as a self-contained HTML page.",
)
@click.option(
    "--alpha",
    default=compare.ALPHA,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Significance level of the Mann-Whitney U test.",
)
@db_options
@_outputs
def compare_cmd(runs: tuple[str, ...], html_out: Path | None, alpha: float, db, fmt) -> None:
    """The same tests of two or more runs side by side (every run against the first).

    Tests are matched by name. For IOPS, MiB/s and latency p50/p95/p99: both values, the
    change (absolute and %), and whether it is significant (two-sided Mann-Whitney U on
    the per-second samples of each test's reliable window).

    \b
    Example:
      analysis compare 20261122-101500-ab12 20261123-090000-cd34 --html cmp.html
    """
    if len(runs) < 2:
        raise click.UsageError("give at least two run ids")
    table, missing = compare.compare_runs(db.client(), list(runs), alpha)
    shown = table if fmt else compare.text_table(table)
    emit(
        {"compare": shown, "unmatched": missing},
        fmt,
        {"compare": f"{runs[0]} (A) vs {', '.join(runs[1:])} (B)", "unmatched": "unmatched tests"},
    )
    if html_out:
        html_out.write_text(compare.render_html(list(runs), table, missing), encoding="utf-8")
        click.echo(f"html: {html_out}", err=True)


def _duration(option: str):
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return schedule.parse_duration(value, option)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return convert


@main.command("schedule")
@click.option(
    "--every",
    default="1h",
    show_default=True,
    callback=_duration("--every"),
    help="Time between ticks (90s, 15m, 1h, 1d).",
)
@click.option(
    "--window",
    default="1h",
    show_default=True,
    callback=_duration("--window"),
    help="How far back each report looks.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the reports: one subdirectory per tick, index.html, ticks.jsonl.",
)
@click.option("--once", is_flag=True, help="One tick, then exit (for cron or a systemd timer).")
@click.option("--ticks", type=click.IntRange(min=1), help="Stop after this many ticks.")
@config_option
@db_options
def schedule_cmd(
    every: float, window: float, out_dir: Path, once: bool, ticks: int | None, config_path, db
) -> None:
    """Write a report of recent activity on every tick until Ctrl+C (or SIGTERM).

    Each tick reports the runs with tests in the last --window (or the cluster's load
    when nothing ran). Ticks never overlap: a tick that finds another one still writing
    (lock file DIR/.lock, also across processes) is skipped, and so are ticks missed
    while a long one ran. docs/analysis.md shows cron and systemd-timer equivalents.

    \b
    Example:
      analysis schedule --every 1h --window 1h --out reports/
      analysis schedule --once --window 1h --out reports/   # from cron
    """
    section, client = _setup(db, config_path)

    def log(text: str) -> None:
        click.echo(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {text}", err=True)

    # a service manager stops the loop with SIGTERM: the same clean stop as Ctrl+C
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if once:
            schedule.run_once(client, out_dir, window, section, log)
        else:
            schedule.run_schedule(client, out_dir, every, window, section, ticks, log)
    except KeyboardInterrupt:
        log("stopped")

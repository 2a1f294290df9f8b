"""`loadgen run | resume | cleanup`: the runner's commands."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console

from collector.clicommon import DbTarget, db_options
from collector.engine import PreflightError
from collector.grafana import configured_url, run_url
from collector.inventory import Inventory, load_inventory
from collector.liveview import node_table, show_while
from collector.ssh import SshError, connect
from collector.writer import InfluxWriter
from loadgen import fionode, rbd
from loadgen.plan import CompiledPlan, compile_plan
from loadgen.rpcplan import RpcIteration
from loadgen.rpcrun import agent_node
from loadgen.rpcrun import summary_table as rpc_summary_table
from loadgen.rundir import RunDir
from loadgen.runner import (
    RunInterrupted,
    Runner,
    live_view,
    plain_progress,
    result_json,
    summary_table,
)

EXIT_INTERRUPTED = 130
REPORT_TIMEOUT_S = 900


def _execute(
    inventory: Inventory,
    rundir: RunDir,
    db: DbTarget,
    keep_files: bool,
    fail_fast: bool,
    as_json: bool,
) -> None:
    plan = compile_plan(inventory, osd_count=rundir.state.osd_count)
    (rundir.path / "plan.txt").write_text(
        "\n".join(
            f"{it.name}\t{','.join(it.nodes)}\t{json.dumps(it.to_dict()['params'])}" for it in plan
        )
        + "\n"
    )
    client = db.client(inventory.config.influx.model_dump())
    console = Console(stderr=True, soft_wrap=True)  # paths and URLs stay on one line
    console.print(
        f"run {rundir.state.run_id}: {len(plan)} iterations, ~{plan.total_duration:.0f} s; results in {rundir.path}"
    )
    grafana_url = configured_url(inventory)
    if grafana_url:
        console.print(f"live: {run_url(grafana_url, rundir.state.run_id, rundir.state.started_ns)}")
    interrupted = False
    with InfluxWriter(client, spool_dir=db.state / "spool") as writer:
        runner = Runner(
            inventory,
            plan,
            client,
            rundir,
            writer=writer,
            keep_files=keep_files,
            fail_fast=fail_fast,
            console=console,
        )

        async def go() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runner.stop)

            def view():
                return live_view(
                    runner.progress,
                    lambda: node_table(runner.collector.status) if runner.collector else None,
                )

            await show_while(
                runner.run(),
                view,
                lambda: plain_progress(runner.progress),
                console,
                plain_every=5.0,
            )

        try:
            asyncio.run(go())
        except RunInterrupted:
            interrupted = True
        except PreflightError as e:
            raise click.ClickException(f"pre-flight failed, nothing was started:\n{e}") from None
    fio_table = summary_table(rundir)
    if fio_table.row_count:  # an RPC-only plan has no fio rows
        console.print(fio_table)
    rpc_table = rpc_summary_table(rundir)
    if rpc_table is not None:
        console.print(rpc_table)
    console.print(
        f"results: {rundir.path} (InfluxDB {client.url} / {client.database}, run {rundir.state.run_id})"
    )
    if not interrupted:
        _write_reports(rundir, plan, client.url, client.database, console)
    if grafana_url:
        state = rundir.state
        console.print(
            f"dashboard: {run_url(grafana_url, state.run_id, state.started_ns, state.ended_ns or None)}"
        )
    if as_json:
        click.echo(json.dumps(result_json(rundir), indent=1))
    if interrupted:
        console.print(f"interrupted: resume with `loadgen resume {rundir.path}`")
        sys.exit(EXIT_INTERRUPTED)
    if rundir.state.status != "done":
        sys.exit(1)


def _write_reports(
    rundir: RunDir, plan: CompiledPlan, url: str, database: str, console: Console
) -> None:
    """The run's pages, by `analysis` in a subprocess (loadgen never imports analysis):
    RUN_DIR/report.html for fio iterations, RUN_DIR/rpc/ (rpc.html, .csv, .json) for RPC
    ones. A failure is reported with the command to retry; the run stays as measured."""
    db = ["--influx-url", url, "--database", database]
    head = [sys.executable, "-m", "analysis"]
    pages = []
    if any(not isinstance(it, RpcIteration) for it in plan):
        out = rundir.path / "report.html"
        args = ["report", rundir.state.run_id, "--out", str(out), "--run-dir", str(rundir.path)]
        pages.append(("report", out, [*head, *args, *db]))
    if any(isinstance(it, RpcIteration) for it in plan):
        out = rundir.path / "rpc"
        pages.append(
            (
                "rpc report",
                out / "rpc.html",
                [*head, "rpc", rundir.state.run_id, "--out", str(out), *db],
            )
        )
    for what, out, cmd in pages:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            console.print(
                f"{what}: not written, took over {REPORT_TIMEOUT_S} s; run: {shlex.join(cmd)}"
            )
            continue
        except KeyboardInterrupt:  # the run is measured and saved; only the pages are skipped
            console.print(f"{what}: interrupted, not written; run: {shlex.join(cmd)}")
            return
        if r.returncode == 0:
            console.print(f"{what}: {out}")
        else:
            why = (r.stderr.strip().splitlines() or ["no output"])[-1]
            console.print(f"{what}: not written ({why}); retry: {shlex.join(cmd)}")


@click.command("run")
@click.argument("plan", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Where run directories are created.",
)
@click.option("--keep-files", is_flag=True, help="Leave test files and fio outputs on the nodes.")
@click.option(
    "--fail-fast", is_flag=True, help="Stop at the first iteration that fails (after its retry)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the results as one JSON document on stdout."
)
@db_options
def run_cmd(
    plan: Path, runs_dir: Path, keep_files: bool, fail_fast: bool, as_json: bool, db: DbTarget
) -> None:
    """Run a test plan on the lab's test nodes while the collector watches every node.

    Pre-flight checks every node first (fio, targets, space, clock skew) and reports all
    problems before anything starts. Ctrl+C stops fio on every node and keeps what was
    measured; `loadgen resume RUN_DIR` continues.

    \b
    Example:
      loadgen run examples/local.yaml --json > result.json
    """
    inventory = load_inventory(plan)
    compile_plan(inventory)  # bad plans fail here, before a run directory exists
    try:
        osd_count, note = rbd.osd_count_for_plan(inventory)
    except rbd.RbdError as e:
        raise click.ClickException(f"pre-flight failed, nothing was started:\n{e}") from None
    if note:
        Console(stderr=True).print(note)
    rundir = RunDir.create(runs_dir, plan.read_text(), str(plan))
    rundir.state.osd_count = osd_count
    rundir.save()
    _execute(inventory, rundir, db, keep_files, fail_fast, as_json)


@click.command("resume")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--keep-files", is_flag=True, help="Leave test files and fio outputs on the nodes.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first iteration that fails.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the results as one JSON document on stdout."
)
@db_options
def resume_cmd(
    run_dir: Path, keep_files: bool, fail_fast: bool, as_json: bool, db: DbTarget
) -> None:
    """Continue an interrupted run, skipping the iterations it finished.

    \b
    Example:
      loadgen resume runs/20261122-101500-ab12
    """
    rundir = RunDir.load(run_dir)
    inventory = load_inventory(rundir.config_path)
    _execute(inventory, rundir, db, keep_files, fail_fast, as_json)


@click.command("cleanup")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def cleanup_cmd(run_dir: Path) -> None:
    """Remove whatever a run left on its nodes: fio and RPC agent processes (by PID), test
    files, work dirs and the RBD images it created.

    \b
    Example:
      loadgen cleanup runs/20261122-101500-ab12
    """
    rundir = RunDir.load(run_dir)
    inventory = load_inventory(rundir.config_path)
    ceph = rbd.ceph_clients(inventory)

    async def go() -> list[str]:
        errors = []
        for name, left in rundir.state.nodes.items():
            try:
                conn = await connect(agent_node(inventory, name))
            except SshError as e:
                errors.append(str(e))
                continue
            try:
                killed = await fionode.kill_run_pids(conn, left.pids, left.workdir)
                files, images = len(left.files), len(left.rbd_images)
                failed = await fionode.remove_leftovers(conn, left, ceph.get(name))
                click.echo(
                    f"{name}: stopped {killed} process(es), removed {files} file(s), "
                    f"{images - len(failed)} RBD image(s) and the work dir"
                )
                left.pids = []
                errors += [f"{name}: RBD image {s} not removed: {why}" for s, why in failed.items()]
            finally:
                await conn.close()
        rundir.save()
        return errors

    errors = asyncio.run(go())
    if errors:
        raise click.ClickException("\n".join(errors))

"""`loadgen`: generating load — fio test plans and RPC bus load."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from collector.clicommon import WallyGroup, setup_logging, verbose_option
from collector.inventory import load_inventory
from loadgen import jobfile
from loadgen.cephlab import cephlab_cli
from loadgen.plan import Iteration, compile_plan, plan_table
from loadgen.rpcplan import RpcIteration, rpc_table
from loadgen.runcli import cleanup_cmd, resume_cmd, run_cmd


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Run storage (fio) and RPC load across a cluster while the collector watches it.

    \b
    Example:
      loadgen run examples/local.yaml
    """
    setup_logging(verbose)


@main.command("plan")
@click.argument("plan", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the iterations as one JSON document.")
@click.option(
    "--jobs",
    "jobs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write each iteration's fio job file per node to DIR/ITERATION/NODE/job.fio.",
)
@click.option(
    "--osd-count",
    type=click.IntRange(min=1),
    help="Derive the QD sweep of profiles that allow it (ceph) from this many OSDs.",
)
def plan_cmd(plan: Path, as_json: bool, jobs_dir: Path | None, osd_count: int | None) -> None:
    """Compile the test plan of the lab config PLAN and show what would run; nothing runs.

    One line per iteration (fio run on all its nodes at once): name, nodes, fio
    parameters and the expected duration, with the total for the ETA. RPC campaigns
    (the `rpc:` section) follow in their own table.

    \b
    Example:
      loadgen plan examples/local.yaml --jobs /tmp/wally-jobs
      loadgen plan lab.yaml --json | jq -r '.iterations[].name'
    """
    compiled = compile_plan(load_inventory(plan), osd_count=osd_count)
    written: dict[str, dict[str, str]] = {}
    if jobs_dir is not None:
        fio = [it for it in compiled.iterations if isinstance(it, Iteration)]
        for job in jobfile.render_all(fio, str(jobs_dir.resolve())):
            Path(job.path).parent.mkdir(parents=True, exist_ok=True)
            Path(job.path).write_text(job.text)
            written.setdefault(job.iteration, {})[job.node] = job.path
    if as_json:
        doc = {
            "source": compiled.source,
            "count": len(compiled),
            "total_duration_s": compiled.total_duration,
            "iterations": [
                {**it.to_dict(), **({"job_files": written[it.name]} if written else {})}
                for it in compiled.iterations
            ],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    console = Console()
    if not console.is_terminal:
        # Piped into a file or a log: no terminal to fit, keep every column readable.
        console.width = max(console.width, 132)
    rpc = [it for it in compiled.iterations if isinstance(it, RpcIteration)]
    if len(rpc) < len(compiled):
        console.print(plan_table(compiled))
    if rpc:
        console.print(rpc_table(rpc))
    if jobs_dir is not None:
        n = sum(len(v) for v in written.values())
        click.echo(f"wrote {n} job files under {jobs_dir.resolve()}")


for _command in (run_cmd, resume_cmd, cleanup_cmd, cephlab_cli):
    main.add_command(_command)

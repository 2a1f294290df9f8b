"""`collector`: getting data in — the database, node inventory and sensors."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from collector import influxd, ombt, schemadoc
from collector.clicommon import DbTarget, WallyGroup, db_options, setup_logging, verbose_option
from collector.discovery import inventory_table
from collector.engine import Collector, PreflightError
from collector.inventory import load_inventory
from collector.lineproto import Point
from collector.liveview import node_table, plain_lines, show_while
from collector.sensors import configured_intervals
from collector.telegraf import telegraf_config_command
from collector.writer import InfluxWriter


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Collect node metrics into InfluxDB and manage the embedded database.

    \b
    Example:
      collector db start && collector db status --json
    """
    setup_logging(verbose)


@main.group()
def db() -> None:
    """Manage the embedded private InfluxDB (used when no --influx-url is configured).

    \b
    Example:
      collector db start; collector db status --json; collector db stop
    """


@db.command("start")
@db_options
def db_start(db: DbTarget) -> None:
    """Start the embedded influxd (if not running) and create the database.

    \b
    Example:
      collector db start --state-dir /var/tmp/wally
    """
    client = db.client()
    click.echo(f"InfluxDB {client.ping()} at {client.url}, database {client.database!r}")


@db.command("stop")
@click.option("--purge", is_flag=True, help="Also delete the embedded database's files.")
@db_options
def db_stop(db: DbTarget, purge: bool) -> None:
    """Stop the embedded influxd (by its recorded PID).

    \b
    Example:
      collector db stop --purge
    """
    server = influxd.EmbeddedInfluxd(db.state)
    if purge:
        server.destroy()
        click.echo(f"stopped and removed {server.root}")
    else:
        click.echo("stopped" if server.stop() else "not running")


@db.command("status")
@click.option(
    "--json", "as_json", is_flag=True, help="Print {url, database, running, pid, data_dir}."
)
@db_options
def db_status(db: DbTarget, as_json: bool) -> None:
    """Say whether the embedded influxd runs, and where.

    \b
    Example:
      collector db status --json | jq -r .url
    """
    status = influxd.EmbeddedInfluxd(db.state).status(db.database or "wally")
    if as_json:
        click.echo(json.dumps(status))
    else:
        for k, v in status.items():
            click.echo(f"{k}: {v}")


@db.command("check")
@click.option("--points", default=1000, show_default=True, help="How many sample points to write.")
@db_options
def db_check(db: DbTarget, points: int) -> None:
    """Write sample points through the writer and read them back (connectivity check).

    \b
    Example:
      collector db check --influx-url http://influx.example:8086 --database lab
    """
    client = db.client()
    now = time.time_ns()
    samples = [
        Point(
            "wally_event", {"node": "local", "kind": "check"}, {"message": f"sample {i}"}, now + i
        )
        for i in range(points)
    ]
    started = time.perf_counter()
    with InfluxWriter(client, spool_dir=db.state / "spool") as writer:
        writer.write(samples)
    elapsed = time.perf_counter() - started
    df = client.query_df(
        "SELECT count(message) FROM wally_event WHERE kind = 'check' AND time >= $start",
        params={"start": now},
    )
    back = int(df["count"].iloc[0]) if not df.empty else 0
    table = Table(title=f"InfluxDB {client.ping()} at {client.url} / {client.database}")
    for col in ("written", "read back", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(points), str(back), f"{elapsed:.3f}")
    Console().print(table)
    if back != points:
        raise click.ClickException(f"wrote {points} points but read back {back}")


@main.command("nodes")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-store", is_flag=True, help="Do not write the node records to InfluxDB.")
@db_options
def nodes_cmd(config: Path, no_store: bool, db: DbTarget) -> None:
    """Discover every node of the lab config and print the inventory table.

    Node and device records (`wally_node`, `wally_device`) are stored in InfluxDB so that
    dashboards and analysis can find nodes and devices by role.

    \b
    Example:
      collector nodes lab.yaml
    """
    inventory = load_inventory(config)

    async def discover_all() -> tuple[dict, dict]:
        col = Collector(inventory, sink=lambda pts: None)
        errors: dict[str, str] = {}
        try:
            infos = await col.prepare()
        except PreflightError as e:
            return {}, e.problems
        finally:
            await col.close()
        for name, st in col.status.items():
            if st.info is None:
                errors[name] = st.last_error or "not reached"
        return infos, errors

    infos, errors = asyncio.run(discover_all())
    Console().print(inventory_table(infos.values(), errors))
    if infos and not no_store:
        client = db.client(inventory.config.influx.model_dump())
        with InfluxWriter(client, spool_dir=db.state / "spool") as writer:
            now = time.time_ns()
            for info in infos.values():
                writer.write(info.points(now))
        click.echo(
            f"stored {len(infos)} node record(s) in {client.url} / {client.database}", err=True
        )
    if errors:
        raise click.ClickException(f"{len(errors)} node(s) could not be discovered")


@main.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--duration", type=float, help="Stop after this many seconds [default: until Ctrl+C]."
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Reader tick in seconds."
)
@db_options
def run_cmd(config: Path, duration: float | None, interval: float, db: DbTarget) -> None:
    """Collect from every node of the lab config into InfluxDB until Ctrl+C or --duration.

    One reader per node streams /proc over one SSH channel; a dropped connection is
    re-established with backoff and the gap is recorded as a `wally_event`.

    \b
    Example:
      collector run lab.yaml --duration 60
    """
    if duration is not None and duration <= 0:
        raise click.BadParameter(
            f"expected a positive number of seconds, got {duration}", param_hint="--duration"
        )
    inventory = load_inventory(config)
    client = db.client(inventory.config.influx.model_dump())
    with InfluxWriter(client, spool_dir=db.state / "spool") as writer:
        col = Collector(
            inventory,
            sink=writer.write,
            sensors=configured_intervals(inventory),
            tick=interval,
        )

        async def go() -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, col.stop)
            loop.add_signal_handler(signal.SIGTERM, col.stop)
            await col.prepare()
            await show_while(
                col.run(duration), lambda: node_table(col.status), lambda: plain_lines(col.status)
            )

        asyncio.run(go())
    for line in plain_lines(col.status):
        click.echo(line, err=True)
    click.echo(f"wrote {writer.stats.points} points to {client.url} / {client.database}", err=True)


@main.group()
def ingest() -> None:
    """Import results produced outside Wally into InfluxDB, for the same analysis.

    \b
    Example:
      collector ingest ombt ./test_case_1-incremental --run tc1
    """


@ingest.command("ombt")
@click.argument("campaign_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--run", "run_id", help="Run id to file it under [default: the directory's name].")
@db_options
def ingest_ombt(campaign_dir: Path, run_id: str | None, db: DbTarget) -> None:
    """Import a legacy ombt / ombt-orchestrator campaign (params.json + controller logs).

    Each iteration becomes a `wally_test` record (kind=rpc), `rpc` summary points per
    agent and merged, and the merged latency distribution (`rpc_hist`); aggregates are
    ombt's own (the seed notebook's numbers). `analysis rpc RUN` then works on it.

    \b
    Example:
      collector ingest ombt ./test_case_1-incremental --run tc1 && analysis rpc tc1
    """
    run = run_id or campaign_dir.resolve().name
    points = ombt.campaign_points(campaign_dir, run)
    client = db.client()
    with InfluxWriter(client, spool_dir=db.state / "spool") as writer:
        writer.write(points)
    tests = sum(p.measurement == "wally_test" for p in points)
    click.echo(
        f"imported {tests} iteration(s), {len(points)} points as run {run!r} into "
        f"{client.url} / {client.database}; next: analysis rpc {run}",
        err=True,
    )


@main.command("schema")
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (docs/schema.md).")
def schema_cmd(markdown: bool) -> None:
    """Print every measurement Wally writes, with field types, units and kinds.

    \b
    Example:
      collector schema --markdown > docs/schema.md
    """
    text = schemadoc.markdown()
    if markdown:
        click.echo(text)
    else:
        Console().print(text)


main.add_command(telegraf_config_command)

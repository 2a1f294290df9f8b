"""`collector`: getting data in — the database, node inventory and sensors."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console
from rich.table import Table

from collector import influxd, schemadoc
from collector.clicommon import DbTarget, WallyGroup, db_options, setup_logging, verbose_option
from collector.lineproto import Point
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

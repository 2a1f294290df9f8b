"""`dashboards`: Grafana dashboards generated from the schema and the inventory."""

from __future__ import annotations

from pathlib import Path

import click

from collector.clicommon import WallyGroup, setup_logging, verbose_option
from collector.inventory import Inventory, load_inventory
from dashboards import provisioning
from dashboards.build import all_dashboards, defaults_from

DEFAULT_INFLUX_URL = provisioning.DEFAULT_INFLUX_URL


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Build Grafana dashboards and provisioning from code, or push them to a Grafana.

    \b
    Example:
      dashboards build lab.yaml --out grafana/
    """
    setup_logging(verbose)


def _inventory(config: Path | None) -> Inventory | None:
    return load_inventory(config, check_files=False) if config else None


config_argument = click.argument(
    "config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
influx_options = [
    click.option(
        "--influx-url",
        help="InfluxDB URL as Grafana reaches it [default: the config's influx.url, "
        f"else {DEFAULT_INFLUX_URL}].",
    ),
    click.option("--database", help="Database [default: the config's, else wally]."),
]


def _with_influx(f):
    for opt in reversed(influx_options):
        f = opt(f)
    return f


@main.command("build")
@config_argument
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for provisioning/ and dashboards/.",
)
@_with_influx
@click.option(
    "--dashboards-path",
    default=provisioning.CONTAINER_DASHBOARDS,
    show_default=True,
    help="Where Grafana sees OUT/dashboards (the file provider's path).",
)
def build_cmd(
    config: Path | None,
    out: Path,
    influx_url: str | None,
    database: str | None,
    dashboards_path: str,
) -> None:
    """Write dashboard JSON and Grafana provisioning files into OUT.

    CONFIG (optional) is the lab config: its roles choose what the dashboards show when
    opened, its influx section the datasource.

    \b
    Example:
      dashboards build lab.yaml --out grafana/ --influx-url http://influxdb:8086
    """
    files = provisioning.render_for(_inventory(config), influx_url, database, dashboards_path)
    for path in provisioning.write_tree(out, files):
        click.echo(str(path))


@main.command("push")
@config_argument
@click.option("--grafana-url", required=True, help="Grafana base URL, e.g. http://127.0.0.1:3000.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the API token [default: env GRAFANA_TOKEN].",
)
@click.option(
    "--with-datasource",
    is_flag=True,
    help="Also create/update the InfluxDB datasource (uid wally-influxdb).",
)
@_with_influx
def push_cmd(
    config: Path | None,
    grafana_url: str,
    token_file: Path | None,
    with_datasource: bool,
    influx_url: str | None,
    database: str | None,
) -> None:
    """Upload the dashboards to a running Grafana through its HTTP API.

    \b
    Example:
      GRAFANA_TOKEN=glsa_... dashboards push lab.yaml --grafana-url http://127.0.0.1:3000
    """
    from dashboards.push import PushError, push, read_token

    inv = _inventory(config)
    try:
        token = read_token(token_file)
        ds = None
        if with_datasource:
            url, db = provisioning.influx_target(inv, influx_url, database)
            ds = provisioning.datasource(url, db)["datasources"][0]
        urls = push(grafana_url, token, all_dashboards(defaults_from(inv)), ds)
    except PushError as e:
        raise click.ClickException(str(e)) from None
    for u in urls:
        click.echo(u)


@main.command("check")
@config_argument
@click.option("--from", "start", required=True, type=int, help="Window start, Unix ms.")
@click.option("--to", "end", required=True, type=int, help="Window end, Unix ms.")
@_with_influx
def check_cmd(
    config: Path | None, start: int, end: int, influx_url: str | None, database: str | None
) -> None:
    """Run every panel's query against InfluxDB like Grafana would; list empty panels.

    Exit code 1 when a panel would show nothing or a query fails.

    \b
    Example:
      dashboards check --influx-url http://127.0.0.1:8086 --from 1700000000000 --to 1700000600000
    """
    from collector.influx import InfluxClient, InfluxConfig
    from dashboards.check import check_dashboard

    inv = _inventory(config)
    url, db = provisioning.influx_target(inv, influx_url, database)
    client = InfluxClient(InfluxConfig(url=url, database=db))
    bad = 0
    for name, doc in all_dashboards(defaults_from(inv)).items():
        for r in check_dashboard(client, doc, start, end):
            if r.rows == 0:
                bad += 1
                click.echo(f"{name}: {r.panel} [{r.ref}]: {r.error or 'no data'}")
    if bad:
        raise SystemExit(1)
    click.echo("every panel has data")

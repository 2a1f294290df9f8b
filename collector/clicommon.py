"""What the four console scripts share: database options and error reporting."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from collector import influxd
from collector.influx import InfluxClient, InfluxError, config_from


def db_options(f: Callable) -> Callable:
    """--influx-url/--database/--state-dir, resolved into an `InfluxClient` on demand."""

    @click.option(
        "--influx-url",
        envvar="WALLY_INFLUX_URL",
        help="External InfluxDB (v1 API). Default: the embedded private influxd.",
    )
    @click.option(
        "--database", envvar="WALLY_INFLUX_DATABASE", help="Database name [default: wally]."
    )
    @click.option(
        "--state-dir",
        envvar="WALLY_STATE_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where the embedded database and spool live [default: ./.wally].",
    )
    @functools.wraps(f)
    def wrapper(
        *args: Any, influx_url: str | None, database: str | None, state_dir: Path | None, **kw: Any
    ):
        def connect(section: dict | None = None) -> InfluxClient:
            config = config_from(section, url=influx_url, database=database)
            return influxd.resolve(config, influxd.state_dir(state_dir), database)

        kw["db"] = DbTarget(connect, influxd.state_dir(state_dir), database)
        return f(*args, **kw)

    return wrapper


class DbTarget:
    """Lazily connects, so commands that never touch the database never start one."""

    def __init__(
        self, connect: Callable[..., InfluxClient], state: Path, database: str | None
    ) -> None:
        self._connect = connect
        self.state = state
        self.database = database

    def client(self, section: dict | None = None) -> InfluxClient:
        return self._connect(section)


class WallyGroup(click.Group):
    """Turns the project's expected errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (InfluxError, ValueError, FileNotFoundError) as e:
            if isinstance(e, click.ClickException):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


verbose_option = click.option(
    "-v", "--verbose", count=True, help="More log output (-vv for debug)."
)

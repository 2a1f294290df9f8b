"""`dashboards`: Grafana dashboards generated from the schema and the inventory."""

from __future__ import annotations

import click

from collector.clicommon import WallyGroup, setup_logging, verbose_option


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Build Grafana dashboards and provisioning from code, or push them to a Grafana.

    \b
    Example:
      dashboards build lab.yaml --out grafana/
    """
    setup_logging(verbose)

"""`analysis`: turning measurements into answers — summaries, costs, bottlenecks, reports."""

from __future__ import annotations

import click

from collector.clicommon import WallyGroup, setup_logging, verbose_option


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Analyse runs stored in InfluxDB: statistics, resource costs, bottlenecks, reports.

    \b
    Example:
      analysis report RUN_ID --out report.html
    """
    setup_logging(verbose)

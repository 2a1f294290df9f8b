"""`loadgen`: generating load — fio test plans and RPC bus load."""

from __future__ import annotations

import click

from collector.clicommon import WallyGroup, setup_logging, verbose_option


@click.group(cls=WallyGroup)
@verbose_option
def main(verbose: int) -> None:
    """Run storage (fio) and RPC load across a cluster while the collector watches it.

    \b
    Example:
      loadgen run examples/local.yaml
    """
    setup_logging(verbose)

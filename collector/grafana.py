"""What the tool knows of Grafana: where it is, and links into the generated dashboards.

Lives in `collector` because both `loadgen` (which prints a run's dashboard link) and
`dashboards` (which builds the dashboards with these uids) need it, and imports go one way.
"""

from __future__ import annotations

import os
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict

from collector.inventory import Inventory

STORAGE_DASHBOARD_UID = "wally-storage"
RUN_VAR = "run"
ENV_URL = "WALLY_GRAFANA_URL"
# Margin around a run so its first and last samples are not cut off at the edges.
MARGIN_MS = 10_000


class GrafanaSection(BaseModel):
    """The lab config's `grafana:` section."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = None


def configured_url(inventory: Inventory | None) -> str | None:
    """Grafana's URL from the environment or the config's `grafana: url:`, if any."""
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    section = inventory.section("grafana", GrafanaSection) if inventory is not None else None
    return section.url if section is not None else None


def run_url(grafana_url: str, run_id: str, start_ns: int, end_ns: int | None = None) -> str:
    """URL of the storage dashboard at the run's window, with `run` selected.

    Without `end_ns` (a run still going) the window ends at "now" and the dashboard keeps
    refreshing every 5 s.
    """
    if end_ns is not None and end_ns < start_ns:
        raise ValueError(f"run {run_id}: end {end_ns} is before start {start_ns}")
    to = "now" if end_ns is None else -(-end_ns // 1_000_000) + MARGIN_MS
    query = urlencode(
        {"orgId": 1, "from": start_ns // 1_000_000 - MARGIN_MS, "to": to, f"var-{RUN_VAR}": run_id}
    )
    return f"{grafana_url.rstrip('/')}/d/{STORAGE_DASHBOARD_UID}/?{query}"

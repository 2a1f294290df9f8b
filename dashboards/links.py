"""Links into Grafana, e.g. the storage dashboard showing one run's time window."""

from __future__ import annotations

from urllib.parse import urlencode

from dashboards import storage
from dashboards.panels import RUN_VAR

# Margin around a run so its first and last samples are not cut off at the edges.
MARGIN_MS = 10_000


def run_url(grafana_url: str, run_id: str, start_ns: int, end_ns: int | None = None) -> str:
    """URL of the storage dashboard at the run's window, with `run` selected.

    Without `end_ns` (a run still going) the window ends at "now" and the dashboard keeps
    refreshing every 5 s.
    """
    if end_ns is not None and end_ns < start_ns:
        raise ValueError(f"run {run_id}: end {end_ns} is before start {start_ns}")
    to = "now" if end_ns is None else -(-end_ns // 1_000_000) + MARGIN_MS
    query = urlencode(
        {
            "orgId": 1,
            "from": start_ns // 1_000_000 - MARGIN_MS,
            "to": to,
            f"var-{RUN_VAR}": run_id,
        }
    )
    return f"{grafana_url.rstrip('/')}/d/{storage.UID}/?{query}"

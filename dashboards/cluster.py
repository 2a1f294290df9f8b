"""Cluster: what every node of the chosen roles does, disk by disk and NIC by NIC."""

from __future__ import annotations

from typing import Any

from dashboards import panels as P
from dashboards import resources as R

UID = "wally-cluster"


def build(default_role: str | None = None) -> dict[str, Any]:
    """`default_role`: the role selected when the dashboard opens (e.g. ceph-osd)."""
    rows = [
        [R.disk_iops(), R.disk_bandwidth()],
        [R.disk_utilisation(), R.disk_queue()],
        [R.disk_latency(), R.load()],
        [R.cpu_heatmap(), R.cpu_per_node()],
        [R.memory(), R.tcp_established()],
        [R.net_bytes(), R.net_packets()],
    ]
    return P.dashboard(
        "Wally / Cluster",
        UID,
        rows,
        [P.role_var(default_role), P.node_var(), P.device_role_var(), P.device_var(), P.nic_var()],
        [P.event_annotation()],
        description="Disk, CPU, memory and network of the nodes with the chosen roles.",
    )

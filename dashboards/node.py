"""Node: everything about one node, from CPU modes to the processes its roles run."""

from __future__ import annotations

from typing import Any

from collector import schema
from dashboards import panels as P
from dashboards import resources as R

UID = "wally-node"
PROCESS_NAME = "process_name"


def _procstat(title: str, field: str, unit: str, counter: bool) -> P.G.Panel:
    expr = P.rate(field) if counter else P.mean(field)
    q = P.select(
        schema.PROCSTAT.name,
        P.as_(expr, field),
        [P.var_match(schema.TAG_NODE)],
        [schema.TAG_NODE, PROCESS_NAME, "pid"],
    )
    return P.timeseries(title, [P.target(q, "$tag_process_name $tag_pid")], unit)


def _kernel() -> P.G.Panel:
    fields = ("context_switches", "interrupts", "processes_forked")
    q = P.select(
        schema.KERNEL.name,
        [P.as_(P.rate(f), f) for f in fields],
        [P.var_match(schema.TAG_NODE)],
        [schema.TAG_NODE],
    )
    return P.timeseries("Kernel activity", [P.target(q, "$col")], "ops")


def _processes() -> P.G.Panel:
    fields = ("running", "blocked", "zombies", "total_threads")
    q = P.select(
        schema.PROCESSES.name,
        [P.as_(P.mean(f), f) for f in fields],
        [P.var_match(schema.TAG_NODE)],
        [schema.TAG_NODE],
    )
    return P.timeseries("Processes", [P.target(q, "$col")])


def build() -> dict[str, Any]:
    rows = [
        [R.cpu_modes(), R.cpu_cores()],
        [R.memory(), R.load()],
        [R.disk_iops(by_device=True), R.disk_bandwidth(by_device=True)],
        [R.disk_utilisation(), R.disk_queue()],
        [R.disk_latency(), _processes()],
        [R.net_bytes(), R.net_packets()],
        [R.tcp_established(), _kernel()],
        [
            _procstat("Process CPU (% of one core)", "cpu_usage", "percent", False),
            _procstat("Process memory (RSS)", "memory_rss", "bytes", False),
        ],
    ]
    return P.dashboard(
        "Wally / Node",
        UID,
        rows,
        [
            P.role_var(),
            P.node_var(multi=False),
            P.device_role_var(),
            P.device_var(),
            P.nic_var(),
        ],
        [P.event_annotation()],
        description="One node: CPU, memory, disks, NICs, sockets and its role's processes.",
    )

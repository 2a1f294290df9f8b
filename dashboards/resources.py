"""Node resource panels (disk, CPU, memory, network, load) shared by several dashboards.

Every panel filters `"node" =~ /^$node$/` (see `dashboards.panels` for why not by role);
disk panels also filter `$device`, network panels `$nic`. Disk figures come from the
`diskio` counters (as Telegraf writes them), never from our derived gauges, so Telegraf-
sourced data shows the same.
"""

from __future__ import annotations

import grafanalib.core as G

from collector import schema
from dashboards import panels as P

NODE, DEVICE = schema.TAG_NODE, schema.TAG_DEVICE
CPU_TOTAL = "cpu-total"
CPU_TAG = "cpu"


def _disk_where() -> list[str]:
    return [P.var_match(NODE), P.var_match(DEVICE)]


def _net_where() -> list[str]:
    return [P.var_match(NODE), P.var_match(DEVICE, P.NIC_VAR)]


def _per_node_sum(measurement: str, expr: str, where: list[str], by_device: bool) -> str:
    """`expr` per series; summed over devices per node unless `by_device`."""
    if by_device:
        return P.select(measurement, P.as_(expr, "v"), where, [NODE, DEVICE])
    inner = P.select(measurement, P.as_(expr, "v"), where, [NODE, DEVICE])
    return P.sum_over(inner, "v", [NODE])


def _legend(by_device: bool) -> str:
    return P.alias(NODE, DEVICE) if by_device else P.alias(NODE)


def _disk_pair(title: str, fields: tuple[str, str], unit: str, by_device: bool, width: int):
    targets = [
        P.target(
            _per_node_sum(schema.DISKIO.name, P.rate(f), _disk_where(), by_device),
            _legend(by_device) + f" {label}",
        )
        for f, label in zip(fields, ("read", "write"), strict=True)
    ]
    return P.timeseries(title, targets, unit, width=width)


def disk_iops(by_device: bool = False, width: int = 12) -> G.Panel:
    return _disk_pair("Disk IOPS", ("reads", "writes"), "ops", by_device, width)


def disk_bandwidth(by_device: bool = False, width: int = 12) -> G.Panel:
    return _disk_pair("Disk bandwidth", ("read_bytes", "write_bytes"), "bytes/s", by_device, width)


def disk_utilisation(width: int = 12) -> G.Panel:
    """io_time grows by 1000 ms per second of a busy device: rate / 10 = percent."""
    q = P.select(
        schema.DISKIO.name,
        P.as_(f"{P.rate('io_time')} / 10", "util"),
        _disk_where(),
        [NODE, DEVICE],
    )
    return P.timeseries(
        "Disk utilisation", [P.target(q, P.alias(NODE, DEVICE))], "percent", width=width
    )


def disk_queue(width: int = 12) -> G.Panel:
    """weighted_io_time grows by (I/Os in flight x ms): rate / 1000 = mean queue depth."""
    q = P.select(
        schema.DISKIO.name,
        P.as_(f"{P.rate('weighted_io_time')} / 1000", "qd"),
        _disk_where(),
        [NODE, DEVICE],
    )
    return P.timeseries("Disk queue depth", [P.target(q, P.alias(NODE, DEVICE))], width=width)


def disk_latency(width: int = 12) -> G.Panel:
    """Mean time per completed I/O = d(read_time)/d(reads), as iostat's r_await/w_await."""
    targets = [
        P.target(
            P.select(
                schema.DISKIO.name,
                P.as_(P.ratio_of_rates(t, n), "await"),
                _disk_where(),
                [NODE, DEVICE],
            ),
            P.alias(NODE, DEVICE, prefix="") + f" {label}",
        )
        for t, n, label in (("read_time", "reads", "read"), ("write_time", "writes", "write"))
    ]
    return P.timeseries("Disk latency (await)", targets, "ms", width=width)


def _cpu_busy(where_cpu: str, by: list[str]) -> str:
    return P.select(
        schema.CPU.name,
        P.as_(f"100 - {P.mean('usage_idle')}", "busy"),
        [P.var_match(NODE), where_cpu],
        by,
    )


def cpu_heatmap(width: int = 12) -> G.Panel:
    q = _cpu_busy(P.tag_eq(CPU_TAG, CPU_TOTAL), [NODE])
    return P.heatmap(
        "CPU busy across nodes",
        [P.target(q, P.alias(NODE))],
        "percent",
        buckets=False,
        description="How many nodes are how busy: each column buckets the nodes' non-idle CPU.",
        width=width,
    )


def cpu_per_node(width: int = 12) -> G.Panel:
    q = _cpu_busy(P.tag_eq(CPU_TAG, CPU_TOTAL), [NODE])
    return P.timeseries("CPU busy per node", [P.target(q, P.alias(NODE))], "percent", width=width)


def cpu_modes(width: int = 12) -> G.Panel:
    modes = ("user", "system", "iowait", "softirq", "irq", "steal")
    q = P.select(
        schema.CPU.name,
        [P.as_(P.mean(f"usage_{m}"), m) for m in modes],
        [P.var_match(NODE), P.tag_eq(CPU_TAG, CPU_TOTAL)],
        [NODE],
    )
    return P.timeseries(
        "CPU by mode", [P.target(q, "$tag_node $col")], "percent", stacked=True, width=width
    )


def cpu_cores(width: int = 12) -> G.Panel:
    q = _cpu_busy(P.tag_ne(CPU_TAG, CPU_TOTAL), [NODE, CPU_TAG])
    return P.heatmap(
        "CPU busy per core",
        [P.target(q, P.alias(NODE, CPU_TAG))],
        "percent",
        buckets=False,
        width=width,
    )


def memory(width: int = 12) -> G.Panel:
    fields = ("used", "cached", "buffered", "available")
    q = P.select(
        schema.MEM.name, [P.as_(P.mean(f), f) for f in fields], [P.var_match(NODE)], [NODE]
    )
    return P.timeseries("Memory", [P.target(q, "$tag_node $col")], "bytes", width=width)


def load(width: int = 12) -> G.Panel:
    q = P.select(
        schema.SYSTEM.name,
        [P.as_(P.mean(f), f) for f in ("load1", "load5", "load15")],
        [P.var_match(NODE)],
        [NODE],
    )
    return P.timeseries("Load average", [P.target(q, "$tag_node $col")], width=width)


def net_bytes(by_nic: bool = True, width: int = 12) -> G.Panel:
    targets = [
        P.target(
            _per_node_sum(schema.NET.name, P.rate(f), _net_where(), by_nic),
            _legend(by_nic) + f" {label}",
        )
        for f, label in (("bytes_recv", "in"), ("bytes_sent", "out"))
    ]
    return P.timeseries("Network", targets, "bytes/s", width=width)


def net_packets(width: int = 12) -> G.Panel:
    fields = ("packets_recv", "packets_sent", "err_in", "err_out", "drop_in", "drop_out")
    q = P.select(
        schema.NET.name,
        [P.as_(P.rate(f), f) for f in fields],
        _net_where(),
        [NODE, DEVICE],
    )
    return P.timeseries(
        "Packets, errors, drops", [P.target(q, "$tag_node $tag_device $col")], "pps", width=width
    )


def tcp_established(width: int = 12) -> G.Panel:
    q = P.select(
        schema.NETSTAT.name,
        P.as_(P.mean("tcp_established"), "established"),
        [P.var_match(NODE)],
        [NODE],
    )
    return P.timeseries("TCP established", [P.target(q, P.alias(NODE))], width=width)

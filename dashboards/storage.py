"""Storage test: one run's client numbers next to what the cluster did meanwhile.

Client data (`fio*`) is selected by the `run` tag; cluster data only by the time range
(`loadgen run` prints a link with the run's window), so Telegraf-sourced node data shows
the same. Test iterations appear as annotated regions with their parameters.
"""

from __future__ import annotations

from typing import Any

from collector import grafana, schema
from dashboards import panels as P
from dashboards import resources as R

UID = grafana.STORAGE_DASHBOARD_UID
CLIENT_VAR = "client"
OP_VAR = "op"
TEST_KIND = "fio"
NODE, OP, RUN = schema.TAG_NODE, "op", P.RUN_VAR
PERCENTILES = ("p50", "p90", "p95", "p99", "p99_9")


def _client_where() -> list[str]:
    return [P.var_match(RUN), P.var_match(NODE, CLIENT_VAR), P.var_match(OP, OP_VAR)]


def _fio(field: str, per_node: bool) -> str:
    m = schema.FIO.name
    if per_node:
        return P.select(m, P.as_(P.mean(field), field), _client_where(), [NODE, OP])
    inner = P.select(m, P.as_(P.mean(field), field), _client_where(), [NODE, OP])
    return P.sum_over(inner, field, [OP])


def _client(title: str, field: str, unit: str, per_node: bool) -> P.G.Panel:
    legend = P.alias(NODE, OP) if per_node else P.alias(OP)
    return P.timeseries(title, [P.target(_fio(field, per_node), legend)], unit)


def _percentiles() -> P.G.Panel:
    """The worst node's percentile per second: percentiles of different nodes don't add."""
    q = P.select(
        schema.FIO_LAT.name,
        [P.as_(f"max({P.ident(p)})", p) for p in PERCENTILES],
        _client_where(),
        [OP],
    )
    return P.timeseries(
        "Completion latency percentiles (worst node)", [P.target(q, "$tag_op $col")], "ns"
    )


def _latency_heatmap() -> P.G.Panel:
    q = P.select(
        schema.FIO_HIST.name,
        P.as_(f"sum({P.ident('count')})", "count"),
        _client_where(),
        ["le"],
        fill="0",
    )
    return P.heatmap(
        "Completion latency histogram",
        [P.target(q, "$tag_le")],
        "ns",
        description="I/Os completed per log2 latency bucket (upper bound), all clients.",
    )


def _by_qd(title: str, expr_inner: str, field: str, outer: str, unit: str) -> P.G.Panel:
    """Per iteration numbers from fio's own JSON, against queue depth."""
    m = schema.FIO_SUMMARY.name
    where = [P.var_match(RUN), P.var_match(NODE, CLIENT_VAR), P.var_match(OP, OP_VAR)]
    inner = P.select(
        m, P.as_(expr_inner, field), where, ["test", NODE, OP, "qd", "bs"], time_bucket=False
    )
    q = P.select(
        "",
        P.as_(f"{outer}({P.ident(field)})", field),
        by=["qd", OP, "bs"],
        time_bucket=False,
        source=f"({inner})",
    )
    return P.barchart(title, [P.target(q, fmt="table")], "qd", unit)


def build(default_role: str | None = None) -> dict[str, Any]:
    """`default_role`: the cluster role shown next to the clients (e.g. ceph-osd)."""
    rows = [
        [
            _client("Client IOPS (total)", "iops", "IOPS", False),
            _client("Client IOPS per node", "iops", "IOPS", True),
        ],
        [
            _client("Client bandwidth (total)", "bw", "KiB/s", False),
            _client("Client bandwidth per node", "bw", "KiB/s", True),
        ],
        [_percentiles(), _latency_heatmap()],
        [
            _by_qd("IOPS vs queue depth", P.mean("iops"), "iops", "sum", "IOPS"),
            _by_qd("p99 latency vs queue depth", P.mean("clat_p99"), "clat_p99", "max", "ns"),
        ],
        [R.disk_iops(width=8), R.cpu_per_node(width=8), R.net_bytes(by_nic=False, width=8)],
        [R.disk_utilisation(width=8), R.cpu_heatmap(width=8), R.disk_latency(width=8)],
    ]
    client = P.variable(
        CLIENT_VAR,
        P.tag_values_query(schema.FIO.name, NODE, [P.var_match(RUN)]),
        "Client node",
    )
    op = P.variable(OP_VAR, P.tag_values_query(schema.FIO.name, OP, [P.var_match(RUN)]), "Op")
    return P.dashboard(
        "Wally / Storage test",
        UID,
        rows,
        [
            P.run_var(TEST_KIND),
            client,
            op,
            P.role_var(default_role),
            P.node_var(),
            P.device_role_var(),
            P.device_var(),
            P.nic_var(),
        ],
        [P.test_annotation(TEST_KIND)],
        description="Client IOPS, bandwidth and latency of a run; the cluster's disks, CPU "
        "and network over the same time range.",
    )

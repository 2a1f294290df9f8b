"""RPC bus: per-test message rates and latency percentiles, and what the broker paid.

Per test numbers are the merged `agent=all` summaries (`test=<name>/summary`) the RPC
controller and the ombt importer write; broker figures come from the management API
(`rabbitmq_*`), procstat of the Erlang VM (`beam.smp`), netstat and net counters of the
nodes chosen by `$role`/`$node`.
"""

from __future__ import annotations

from typing import Any

from collector import schema
from dashboards import panels as P
from dashboards import resources as R

UID = "wally-rpc"
TEST_KIND = "rpc"
RABBITMQ_ROLE = "rabbitmq"
BROKER_PROCESS = "beam.smp"
ALL_AGENTS = "all"
SUMMARY_TESTS = r"/\/summary$/"
# ombt campaigns carry mean/max only, our agents the percentiles too.
LATENCIES = ("lat_mean", "lat_p50", "lat_p90", "lat_p99", "lat_p99_9", "lat_max")


def _per_test(title: str, fields: tuple[str, ...], unit: str) -> P.G.Panel:
    q = P.select(
        schema.RPC.name,
        [P.as_(f"last({P.ident(f)})", f) for f in fields],
        [
            P.var_match(P.RUN_VAR),
            P.tag_eq("agent", ALL_AGENTS),
            f"{P.ident('test')} =~ {SUMMARY_TESTS}",
        ],
        ["test", "side"],
        time_bucket=False,
    )
    return P.barchart(title, [P.target(q, fmt="table")], "test", unit)


def _overview() -> P.G.Panel:
    m = schema.RABBITMQ_OVERVIEW.name
    rates = [P.as_(P.rate(f), f) for f in ("messages_published", "messages_delivered")]
    return P.timeseries(
        "Broker message rates",
        [P.target(P.select(m, rates, [P.var_match(schema.TAG_NODE)], ["url"]), "$col")],
        "msg/s",
    )


def _objects() -> P.G.Panel:
    m = schema.RABBITMQ_OVERVIEW.name
    fields = ("connections", "channels", "consumers", "queues")
    q = P.select(m, [P.as_(P.mean(f), f) for f in fields], [P.var_match(schema.TAG_NODE)], ["url"])
    return P.timeseries("Connections, channels, consumers, queues", [P.target(q, "$col")])


def _broker_node() -> P.G.Panel:
    m = schema.RABBITMQ_NODE.name
    fields = ("mem_used", "mem_limit")
    q = P.select(
        m, [P.as_(P.mean(f), f) for f in fields], [P.var_match(schema.TAG_NODE)], ["rabbit_node"]
    )
    return P.timeseries("Broker memory", [P.target(q, "$tag_rabbit_node $col")], "bytes")


def _broker_fds() -> P.G.Panel:
    m = schema.RABBITMQ_NODE.name
    fields = ("fd_used", "sockets_used", "proc_used", "run_queue")
    q = P.select(
        m, [P.as_(P.mean(f), f) for f in fields], [P.var_match(schema.TAG_NODE)], ["rabbit_node"]
    )
    return P.timeseries("Broker fds, sockets, processes", [P.target(q, "$tag_rabbit_node $col")])


def _queues() -> P.G.Panel:
    m = schema.RABBITMQ_QUEUE.name
    q = P.select(
        m,
        [P.as_(P.mean(f), f) for f in ("messages_ready", "messages_unack")],
        [P.var_match(schema.TAG_NODE)],
        ["queue"],
    )
    return P.timeseries("Queue depths", [P.target(q, "$tag_queue $col")])


def _beam(title: str, field: str, unit: str) -> P.G.Panel:
    q = P.select(
        schema.PROCSTAT.name,
        P.as_(P.mean(field), field),
        [P.var_match(schema.TAG_NODE), P.tag_eq("process_name", BROKER_PROCESS)],
        [schema.TAG_NODE],
    )
    return P.timeseries(title, [P.target(q, P.alias(schema.TAG_NODE))], unit)


def build(default_role: str | None = RABBITMQ_ROLE) -> dict[str, Any]:
    rows = [
        [
            _per_test("Message rate per test", ("rate",), "msg/s"),
            _per_test("Latency per test (mean, percentiles, max)", LATENCIES, "ms"),
        ],
        [_overview(), _queues()],
        [
            _beam("Broker CPU (beam.smp, % of one core)", "cpu_usage", "percent"),
            _beam("Broker RSS (beam.smp)", "memory_rss", "bytes"),
        ],
        [_broker_node(), _broker_fds()],
        [_objects(), R.tcp_established()],
        [R.net_bytes(by_nic=False), R.cpu_per_node()],
    ]
    return P.dashboard(
        "Wally / RPC bus",
        UID,
        rows,
        [P.run_var(TEST_KIND), P.role_var(default_role), P.node_var(), P.nic_var()],
        [P.test_annotation(TEST_KIND)],
        description="Message rates and latency per test; broker CPU, memory, connections, "
        "queues and network over the same time range.",
    )

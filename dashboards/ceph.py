"""Ceph: OSD op rates and latencies from perf counters, per-OSD heatmaps, slow op stages.

Perf counters are Telegraf's `ceph` layout: tags `type`/`id`/`collection`, a latency is a
`.sum`/`.avgcount` pair of counters, so the mean over an interval is
d(sum)/d(avgcount). Cluster-wide measurements (pools, PG states) come from one node and
are not filtered by `$node`.
"""

from __future__ import annotations

from typing import Any

from collector import schema
from collector.ceph import OSD_ROLE
from collector.sensors.ceph import OP_STAGES, TELEGRAF_TYPES
from dashboards import panels as P

UID = "wally-ceph"
OSD_VAR = "osd"
ID, TYPE, COLLECTION = "id", "type", "collection"
OSD_COLLECTION = "osd"
BLUESTORE_COLLECTION = "bluestore"
OPS = (("op_w", "write"), ("op_r", "read"))
OP_LATENCIES = (("op_w_latency", "write"), ("op_r_latency", "read"))
COMMIT_LATENCY = "commit_lat"


def _osd_where(collection: str) -> list[str]:
    return [
        P.var_match(schema.TAG_NODE),
        P.tag_eq(TYPE, TELEGRAF_TYPES["osd"]),
        P.tag_eq(COLLECTION, collection),
        P.var_match(ID, OSD_VAR),
    ]


def _latency(counter: str) -> str:
    return P.ratio_of_rates(f"{counter}.sum", f"{counter}.avgcount")


def _op_rates() -> P.G.Panel:
    targets = [
        P.target(
            P.select(schema.CEPH.name, P.as_(P.rate(f), label), _osd_where(OSD_COLLECTION), [ID]),
            f"osd.$tag_id {label}",
        )
        for f, label in OPS
    ]
    return P.timeseries("OSD client ops", targets, "ops")


def _op_latency() -> P.G.Panel:
    targets = [
        P.target(
            P.select(schema.CEPH.name, P.as_(_latency(c), label), _osd_where(OSD_COLLECTION), [ID]),
            f"osd.$tag_id {label}",
        )
        for c, label in OP_LATENCIES
    ]
    return P.timeseries("OSD op latency (sum/avgcount)", targets, "s")


def _commit_latency() -> P.G.Panel:
    q = P.select(
        schema.CEPH.name,
        P.as_(_latency(COMMIT_LATENCY), "commit"),
        _osd_where(BLUESTORE_COLLECTION),
        [ID],
    )
    return P.timeseries("BlueStore commit latency", [P.target(q, "osd.$tag_id")], "s")


def _osd_heatmap(title: str, expr: str, unit: str) -> P.G.Panel:
    q = P.select(schema.CEPH.name, P.as_(expr, "v"), _osd_where(OSD_COLLECTION), [ID])
    return P.heatmap(
        title, [P.target(q, "osd.$tag_id")], unit, description="One row per OSD: hot spots."
    )


def _stages() -> P.G.Panel:
    """Mean seconds per stage of the ops Ceph kept in its history (its slowest ops)."""
    m = schema.CEPH_OP_STAGES
    exprs = [
        P.as_(f"sum({P.ident(st + '_sum')}) / sum({P.ident(st + '_count')})", st)
        for st in OP_STAGES
    ]
    q = P.select(
        m.name, exprs, [P.var_match(schema.TAG_NODE), P.var_match(ID, OSD_VAR)], ["op_type"]
    )
    return P.timeseries(
        "Slow op stages (mean per op)", [P.target(q, "$tag_op_type $col")], "s", stacked=True
    )


def _in_flight() -> P.G.Panel:
    m = schema.CEPH_OPS_IN_FLIGHT
    q = P.select(
        m.name,
        [P.as_(f"max({P.ident(f)})", f) for f in ("num_ops", "oldest_age")],
        [P.var_match(schema.TAG_NODE), P.var_match(ID, OSD_VAR)],
        [ID],
    )
    return P.timeseries("Ops in flight / oldest age (s)", [P.target(q, "osd.$tag_id $col")])


def _pools() -> P.G.Panel:
    fields = ("read_op_per_sec", "write_op_per_sec")
    q = P.select(schema.CEPH_POOL_STATS.name, [P.as_(P.mean(f), f) for f in fields], by=["name"])
    return P.timeseries("Pool client ops", [P.target(q, "$tag_name $col")], "ops")


def _pg_states() -> P.G.Panel:
    q = P.select(schema.CEPH_PGMAP_STATE.name, P.as_(P.mean("count"), "pgs"), by=["state"])
    return P.timeseries("PG states", [P.target(q, "$tag_state")])


def build() -> dict[str, Any]:
    osd = P.variable(
        OSD_VAR,
        P.tag_values_query(
            schema.CEPH.name,
            ID,
            [P.var_match(schema.TAG_NODE), P.tag_eq(TYPE, TELEGRAF_TYPES["osd"])],
        ),
        "OSD",
    )
    rows = [
        [_op_rates(), _op_latency()],
        [
            _osd_heatmap("Write ops per OSD", P.rate("op_w"), "ops"),
            _osd_heatmap("Write latency per OSD", _latency("op_w_latency"), "s"),
        ],
        [_commit_latency(), _stages()],
        [_in_flight(), _pools()],
        [_pg_states()],
    ]
    return P.dashboard(
        "Wally / Ceph",
        UID,
        rows,
        [P.role_var(OSD_ROLE), P.node_var(), osd],
        [P.event_annotation()],
        description="OSD op rates and latencies, per-OSD heatmaps, where slow ops spend time.",
    )

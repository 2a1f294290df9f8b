"""The ceph sensor: pure parsers on captured Ceph 16.2 JSON, then the real lab under fio."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from collector import schema
from collector.inventory import Node
from collector.lineproto import encode_points
from collector.sensors import ceph
from collector.ssh import LocalConnection
from loadgen import cephlab

DATA = Path(__file__).parents[2] / "data" / "ceph"
TAGS = {"node": "n1", "role": "ceph-osd"}
T = 1_700_000_000_000_000_000


def _text(name: str) -> str:
    return (DATA / name).read_text()


def test_perf_dump_in_telegraf_layout() -> None:
    raw = json.loads(_text("osd0_perf_dump.json"))
    points = ceph.parse_perf_dump(_text("osd0_perf_dump.json"), "osd", "0", TAGS, T)
    by_coll = {p.tags["collection"]: p for p in points}
    assert set(by_coll) == {k for k, v in raw.items() if ceph.flatten(v)}
    osd = by_coll["osd"]
    assert osd.tags == {**TAGS, "type": "osd", "id": "0", "collection": "osd"}
    assert osd.fields["op_w"] == float(raw["osd"]["op_w"])
    assert osd.fields["op_w_latency.sum"] == raw["osd"]["op_w_latency"]["sum"]
    assert osd.fields["op_w_latency.avgcount"] == float(raw["osd"]["op_w_latency"]["avgcount"])
    assert all(type(v) is float for p in points for v in p.fields.values())
    assert len(encode_points(points)) == len(points)  # schema-valid


def test_mon_perf_dump_is_type_monitor() -> None:
    points = ceph.parse_perf_dump(_text("mon_a_perf_dump.json"), "mon", "a", TAGS, T)
    assert {p.tags["type"] for p in points} == {"monitor"}
    assert "paxos" in {p.tags["collection"] for p in points}


def test_flatten_skips_what_telegraf_skips() -> None:
    assert ceph.flatten({"a": {"b": 1, "c": "x", "d": [1]}, "e": True, "f": 2.5}) == {
        "a.b": 1.0,
        "f": 2.5,
    }


def test_socket_names() -> None:
    assert ceph.socket_daemon("ceph-osd.12.asok") == ("osd", "12")
    assert ceph.socket_daemon("prod-mon.host-a.asok") == ("mon", "host-a")
    assert ceph.socket_daemon("ceph-client.admin.1234.94.asok") is None
    assert ceph.socket_daemon("ceph-mgr.x.asok") is None


def test_bad_input_names_the_source() -> None:
    with pytest.raises(ValueError, match=r"osd\.3 perf dump: not JSON"):
        ceph.parse_perf_dump("{oops", "osd", "3", TAGS, T, source="osd.3 perf dump")
    with pytest.raises(ValueError, match="no 'ops' list"):
        ceph.summarise_historic_ops("{}", "0", TAGS, T)
    with pytest.raises(ValueError, match="pg_summary"):
        ceph.parse_pg_stat("[]", TAGS, T)


@pytest.mark.parametrize("name", ["osd0_historic_ops.json", "osd1_historic_ops_by_duration.json"])
def test_historic_op_stages(name: str) -> None:
    raw = json.loads(_text(name))
    points, mark = ceph.summarise_historic_ops(_text(name), "0", TAGS, T)
    by_type = {p.tags["op_type"]: p.fields for p in points}
    assert sum(f["ops"] for f in by_type.values()) == len(raw["ops"])
    writes = [op for op in raw["ops"] if "ondisk+write" in op["description"]]
    assert by_type["write"]["ops"] == len(writes)
    w = by_type["write"]
    assert w["duration_sum"] == pytest.approx(sum(op["duration"] for op in writes))
    # The stages of a write tile its life: initiated -> done.
    stages = sum(w[f"{st}_sum"] for st in ceph.OP_STAGES)
    assert stages == pytest.approx(w["duration_sum"], abs=1e-4 * w["ops"])
    assert all(w[f"{st}_count"] == w["ops"] for st in ceph.OP_STAGES)
    assert len(encode_points(points)) == len(points)
    # Nothing is counted twice: after the watermark, the same dump yields nothing.
    again, mark2 = ceph.summarise_historic_ops(_text(name), "0", TAGS, T, since=mark)
    assert again == [] and mark2 == mark


def test_ops_in_flight_pool_stats_pg_stat() -> None:
    raw = json.loads(_text("osd0_ops_in_flight.json"))
    p = ceph.parse_ops_in_flight(_text("osd0_ops_in_flight.json"), "0", TAGS, T)
    assert p.fields["num_ops"] == raw["num_ops"] > 0
    assert p.fields["oldest_age"] == max(float(op["age"]) for op in raw["ops"])

    pools = {
        p.tags["name"]: p.fields
        for p in ceph.parse_pool_stats(_text("osd_pool_stats.json"), TAGS, T)
    }
    rate = json.loads(_text("osd_pool_stats.json"))[0]["client_io_rate"]
    assert pools["rbd"]["write_op_per_sec"] == rate["write_op_per_sec"] > 0
    assert pools["device_health_metrics"]["write_op_per_sec"] == 0.0

    pg = ceph.parse_pg_stat(_text("pg_stat.json"), TAGS, T)
    summary = json.loads(_text("pg_stat.json"))["pg_summary"]
    pgmap = next(p for p in pg if p.measurement == "ceph_pgmap")
    assert pgmap.fields["num_pgs"] == summary["num_pgs"]
    assert pgmap.fields["op_per_sec"] == summary["io_sec"]
    states = {p.tags["state"]: p.fields["count"] for p in pg if p.measurement == "ceph_pgmap_state"}
    assert states == {s["name"]: s["num"] for s in summary["num_pg_by_state"]}
    assert len(
        encode_points([p, *pg, *ceph.parse_pool_stats(_text("osd_pool_stats.json"), TAGS, T)])
    )


# --- against the real lab -------------------------------------------------------------


def _conn() -> LocalConnection:
    return LocalConnection(Node(name="n1", roles=("ceph-osd",)))


def _op_w(col: ceph.Collection) -> dict[str, float]:
    return {
        p.tags["id"]: p.fields["op_w"]
        for p in col.points
        if p.measurement == schema.CEPH.name and p.tags["collection"] == "osd"
    }


def test_op_w_advances_by_what_fio_wrote(ceph_lab: cephlab.CephLab) -> None:
    run_dir = str(ceph_lab.run_dir)

    async def poll(state: ceph.CephSensorState | None) -> ceph.Collection:
        return await ceph.collect_node(_conn(), TAGS, state, run_dir)

    before = asyncio.run(poll(None))
    assert before.errors == {} and before.gone == []
    assert {p.tags["id"] for p in before.points if p.tags.get("type") == "monitor"} == {"a"}
    fio = cephlab.fio_write(ceph_lab, 3)
    after = asyncio.run(poll(before.state))
    delta = sum(after_w - _op_w(before)[i] for i, after_w in _op_w(after).items())
    assert fio["total_ios"] > 1000
    assert delta == pytest.approx(fio["total_ios"], rel=0.03)
    stages = [p for p in after.points if p.measurement == "ceph_op_stages"]
    assert any(p.tags["op_type"] == "write" and p.fields["ops"] > 0 for p in stages)
    assert len(encode_points(after.points)) == len(after.points)

    cluster = asyncio.run(ceph.collect_cluster(_conn(), TAGS, T, ["--conf", str(ceph_lab.conf)]))
    pools = {p.tags["name"] for p in cluster if p.measurement == "ceph_pool_stats"}
    assert ceph_lab.pool in pools
    clean = [p for p in cluster if p.tags.get("state") == "active+clean"]
    assert clean and clean[0].fields["count"] > 0


def test_killed_osd_is_reported_gone_and_others_kept(ceph_lab: cephlab.CephLab) -> None:
    run_dir = str(ceph_lab.run_dir)
    first = asyncio.run(ceph.collect_node(_conn(), TAGS, None, run_dir))
    assert set(_op_w(first)) == {"0", "1"}
    cephlab.stop_daemon(ceph_lab, "osd.1", signal.SIGKILL)  # a crash: stale socket left
    try:
        assert os.path.exists(ceph_lab.admin_sockets["osd.1"])
        second = asyncio.run(ceph.collect_node(_conn(), TAGS, first.state, run_dir))
        assert second.gone == ["osd.1"]
        assert "osd.1" in second.errors
        assert set(_op_w(second)) == {"0"}
        assert {p.tags["id"] for p in second.points if p.tags.get("type") == "monitor"} == {"a"}
        third = asyncio.run(ceph.collect_node(_conn(), TAGS, second.state, run_dir))
        assert third.gone == []  # reported once
    finally:
        cephlab.start_daemon(ceph_lab, "osd.1")
        cephlab.wait_healthy(ceph_lab, timeout=90)
    # A restarted OSD can be "up" for the monitor a moment before its admin socket answers.
    deadline = time.monotonic() + 30
    while True:
        back = asyncio.run(ceph.collect_node(_conn(), TAGS, None, run_dir))
        if set(_op_w(back)) == {"0", "1"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(_op_w(back)) == {"0", "1"}, back.errors

"""Ceph-aware discovery: captured JSON for the parser, the real lab for the whole path."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from collector import ceph
from collector.discovery import NodeInfo
from collector.inventory import Node
from collector.ssh import LocalConnection
from loadgen import cephlab

DATA = Path(__file__).parents[1] / "data" / "ceph"


def _sections() -> dict[str, str]:
    return {name: (DATA / f"{name}.json").read_text() for name in ceph.SECTIONS}


def test_parse_cluster_from_captured_json() -> None:
    cluster = ceph.parse_cluster(_sections(), (DATA / "config_show_osd0.json").read_text())
    assert [o.id for o in cluster.osds] == [0, 1]
    osd = cluster.osds[0]
    assert osd.objectstore == "bluestore" and osd.up and osd.in_
    assert osd.devices == {ceph.DATA_ROLE: ["vda"]}
    assert osd.data_path.endswith("/osd/ceph-0")
    assert [m.name for m in cluster.mons] == ["a"]
    rbd = next(p for p in cluster.pools if p.name == "rbd")
    assert (rbd.size, rbd.pg_num, rbd.applications) == (1, 32, ["rbd"])
    assert cluster.hosts == {osd.host: [ceph.MON_ROLE, ceph.OSD_ROLE]}
    assert cluster.device_roles(osd.host) == {"vda": ceph.DATA_ROLE}
    assert cluster.osd_settings["osd_op_num_shards"] == "2"
    summary = cluster.summary()
    assert summary["osds"] == 2 and summary["objectstores"] == ["bluestore"]


def test_dedicated_db_and_wal_devices() -> None:
    meta = {
        "osd_objectstore": "bluestore",
        "bluestore_bdev_devices": "sdb",
        "bluefs_dedicated_db": "1",
        "bluefs_db_devices": "nvme0n1",
        "bluefs_dedicated_wal": "1",
        "bluefs_wal_devices": "nvme1n1",
    }
    assert ceph._osd_devices(meta) == {
        ceph.DATA_ROLE: ["sdb"],
        ceph.DB_ROLE: ["nvme0n1"],
        ceph.WAL_ROLE: ["nvme1n1"],
    }


def test_bad_discovery_output_is_named() -> None:
    sections = _sections()
    sections["osd_dump"] = "not json"
    with pytest.raises(ceph.CephDiscoveryError, match="ceph osd dump: not JSON"):
        ceph.parse_cluster(sections)
    del sections["osd_dump"]
    with pytest.raises(ceph.CephDiscoveryError, match="ceph osd dump: no output"):
        ceph.parse_cluster(sections)


def test_discover_the_lab(ceph_lab: cephlab.CephLab, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = LocalConnection(Node(name="local", roles=(ceph.OSD_ROLE,)))
    cluster = asyncio.run(ceph.discover_cluster(conn, ["--conf", str(ceph_lab.conf)]))
    host = socket.gethostname()
    assert cluster.fsid == ceph_lab.fsid
    assert [o.id for o in cluster.osds] == ceph_lab.osd_ids
    assert all(o.host == host and o.up for o in cluster.osds)
    assert all(o.data_path.startswith(str(ceph_lab.cluster_dir)) for o in cluster.osds)
    assert {p.name: p.size for p in cluster.pools}[ceph_lab.pool] == 1
    assert cluster.osd_settings["osd_objectstore"] == "bluestore"
    # The block files live on the disk holding the cluster dir: that disk is OSD data.
    roles = cluster.device_roles(host)
    assert set(roles.values()) == {ceph.DATA_ROLE} and roles

    # The discovery hook: device roles, and the cluster summary in the node's facts.
    monkeypatch.setitem(ceph.CLI_ARGS, "local", ["--conf", str(ceph_lab.conf)])
    info = NodeInfo(node="local", roles=[ceph.OSD_ROLE], hostname=host)
    assert asyncio.run(ceph.ceph_node_facts(conn, info)) == roles
    facts = info.facts["ceph"]
    assert facts["osds"] == len(ceph_lab.osd_ids) and facts["host_osds"] == ceph_lab.osd_ids
    pg_num = ceph_lab.ceph_json("osd", "pool", "get", ceph_lab.pool, "pg_num")["pg_num"]
    assert facts["pools"][ceph_lab.pool] == {"size": 1, "pg_num": pg_num}
    # Without the conf the CLI cannot reach the cluster: the node is still discovered.
    monkeypatch.setitem(ceph.CLI_ARGS, "local", ["--conf", "/nonexistent/ceph.conf"])
    bare = NodeInfo(node="local", roles=[ceph.OSD_ROLE], hostname=host)
    assert asyncio.run(ceph.ceph_node_facts(conn, bare)) == {}
    assert "exited" in bare.facts["ceph"]["error"]

"""The Ceph lab: healthy from JSON, a second lab beside the session's, clean teardown by PID."""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

from click.testing import CliRunner

from loadgen import cephlab

DATA = Path(__file__).parents[1] / "data" / "ceph"
CEPH_SYSTEM_DIRS = (Path("/var/log/ceph"), Path("/var/run/ceph"), Path("/etc/ceph"))


def _listing() -> dict[str, list[str]]:
    return {str(d): sorted(os.listdir(d)) if d.is_dir() else [] for d in CEPH_SYSTEM_DIRS}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_health_problems_on_captured_status() -> None:
    status = json.loads((DATA / "status.json").read_text())
    assert cephlab.health_problems(status, 2) == []
    assert cephlab.health_problems(status, 3) == ["OSDs up 2/in 2, want 3"]
    status["pgmap"]["pgs_by_state"] = [{"state_name": "peering", "count": 33}]
    status["health"] = {"status": "HEALTH_WARN", "checks": {"PG_AVAILABILITY": {}}}
    problems = cephlab.health_problems(status, 2)
    assert problems[0] == "health HEALTH_WARN (PG_AVAILABILITY)"
    assert problems[1].startswith("PGs active+clean 0/33")


def test_cephx_key_layout() -> None:
    raw = base64.b64decode(cephlab.cephx_key())
    kind, _sec, _nsec, length = struct.unpack("<HIIH", raw[:12])
    assert (kind, length, len(raw)) == (1, 16, 28)


def test_session_lab_is_healthy_and_self_contained(ceph_lab: cephlab.CephLab) -> None:
    status = ceph_lab.ceph_json("status")
    assert cephlab.health_problems(status, 2) == []
    assert status["fsid"] == ceph_lab.fsid
    st = cephlab.status(ceph_lab)
    assert st["health"] == "HEALTH_OK"
    assert all(d["running"] for d in st["daemons"].values())
    assert set(st["daemons"]) == {"mon.a", "mgr.x", "osd.0", "osd.1"}
    for path in [ceph_lab.conf, ceph_lab.keyring, *ceph_lab.admin_sockets.values()]:
        assert path.exists() and path.is_relative_to(ceph_lab.cluster_dir)
    images = json.loads(ceph_lab.rbd("ls", "-p", ceph_lab.pool, "--format", "json"))
    assert images == [ceph_lab.image]


def test_cli_second_lab_up_status_down(ceph_lab: cephlab.CephLab, tmp_path: Path) -> None:
    """A 1-OSD lab started beside the session's (no port clash), then torn down by PID."""
    before = _listing()
    lab_dir = tmp_path / "lab2"
    runner = CliRunner()
    res = runner.invoke(cephlab.cephlab_cli, ["up", "--dir", str(lab_dir), "--osds", "1"])
    assert res.exit_code == 0, res.output
    lab = cephlab.load(lab_dir)
    assert lab.mon_addr != ceph_lab.mon_addr
    res = runner.invoke(cephlab.cephlab_cli, ["status", "--dir", str(lab_dir), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["health"] == "HEALTH_OK" and st["num_up_osds"] == 1
    pids = {n: d["pid"] for n, d in st["daemons"].items()}
    assert set(pids) == {"mon.a", "mgr.x", "osd.0"} and all(map(_alive, pids.values()))

    res = runner.invoke(cephlab.cephlab_cli, ["down", "--dir", str(lab_dir)])
    assert res.exit_code == 0, res.output
    assert not any(map(_alive, pids.values())), pids
    assert not lab_dir.exists()
    assert _listing() == before
    # the session's lab was not disturbed
    assert cephlab.health_problems(ceph_lab.ceph_json("status"), 2) == []


def test_up_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep me")
    res = CliRunner().invoke(cephlab.cephlab_cli, ["up", "--dir", str(tmp_path)])
    assert res.exit_code != 0 and "not empty" in res.output
    assert (tmp_path / "precious").read_text() == "keep me"

"""RBD targets for real: fio's rbd engine against the session's Ceph lab, through `loadgen run`.

Ground truth: fio's own JSON (out.json in the run directory), the OSDs' `op_w` counters
read from their admin sockets with `ceph --admin-daemon`, and the `rbd`/`ceph` CLIs.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collector.inventory import inventory_from_dict, load_inventory
from loadgen import rbd
from loadgen.plan import compile_plan, qd_from_osd_count

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = [sys.executable, "-m", "loadgen"]


def _config(lab, tmp_path, suite):
    data = {
        "nodes": [{"uri": "local", "roles": ["testnode"]}],
        "ceph": {"conf": str(lab.conf), "root_node": "local"},
        "plan": {"suites": [suite]},
    }
    path = tmp_path / "rbd-lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _suite(image, **kw):
    base = {
        "name": "rbd",
        "target": f"rbd:rbd/{image}",
        "runtime": 3,
        "ramp_time": 0,
        "rw": ["randwrite", "randread"],
        "bs": "4k",
        "iodepth": 4,
    }
    return {**base, **kw}


def _loadgen(args, influx, tmp_path):
    return subprocess.run(
        [*LOADGEN, *args, "--influx-url", influx.url, "--database", influx.database],
        capture_output=True,
        text=True,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp_path / "state")},
        timeout=300,
    )


def _image_name():
    return f"wally-t-{secrets.token_hex(3)}"


def _images(lab):
    return json.loads(lab.rbd("ls", "--format", "json", lab.pool))


def _op_w(lab):
    """Client write ops every OSD has served, from its own perf counters."""
    total = 0
    for name, asok in lab.admin_sockets.items():
        if name.startswith("osd."):
            out = subprocess.run(
                ["ceph", "--admin-daemon", str(asok), "perf", "dump"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            total += json.loads(out)["osd"]["op_w"]
    return total


def _fio_docs(run_dir, iteration):
    return [
        json.loads(p.read_text()) for p in (run_dir / "iterations" / iteration).glob("*/out.json")
    ]


def test_rbd_plan_runs_end_to_end_and_agrees_with_fio_and_the_osds(ceph_lab, influx, tmp_path):
    image = _image_name()
    # The run creates the image and, with prefill skipped, fio's writes are the only data
    # writes the OSDs see during the run.
    plan = _config(ceph_lab, tmp_path, _suite(image, create_image=True, size="64m", prefill="skip"))
    before = _op_w(ceph_lab)
    r = _loadgen(
        ["run", str(plan), "--runs-dir", str(tmp_path / "runs"), "--json"], influx, tmp_path
    )
    op_w = _op_w(ceph_lab) - before
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    run_dir = Path(doc["run_dir"])
    assert doc["status"] == "done"
    assert [i["name"] for i in doc["iterations"]] == ["rbd-randwrite-4k-qd4", "rbd-randread-4k-qd4"]
    writes = 0
    for it in doc["iterations"]:
        docs = _fio_docs(run_dir, it["name"])
        assert it["status"] == "done" and len(docs) == 1
        op = "write" if "write" in it["name"] else "read"
        fio_iops = sum(j[op]["iops"] for d in docs for j in d["jobs"])
        assert fio_iops > 0
        assert it["iops"] == pytest.approx(fio_iops, rel=0.01)
        if op == "write":
            writes = sum(j["write"]["total_ios"] for d in docs for j in d["jobs"])
        job = (run_dir / "iterations" / it["name"] / "local" / "job.fio").read_text()
        assert f"rbdname={image}" in job and "ioengine=rbd" in job
    # Pool size 1: one OSD write per client write. The run's image create/remove adds a few
    # dozen metadata ops on top of thousands of data writes.
    assert writes > 1000
    assert op_w == pytest.approx(writes, rel=0.03)
    # the image the run created is gone, and run.json holds nothing to clean
    assert image not in _images(ceph_lab)
    state = json.loads((run_dir / "run.json").read_text())
    assert state["nodes"]["local"]["rbd_images"] == []


def test_created_image_is_prefilled_kept_with_keep_files_and_removed_by_cleanup(
    ceph_lab, influx, tmp_path
):
    image = _image_name()
    plan = _config(
        ceph_lab, tmp_path, _suite(image, create_image=True, size="32m", rw=["randread"], runtime=2)
    )
    runs = tmp_path / "runs"
    try:
        r = _loadgen(
            ["run", str(plan), "--runs-dir", str(runs), "--json", "--keep-files"], influx, tmp_path
        )
        assert r.returncode == 0, r.stderr[-3000:]
        run_dir = Path(json.loads(r.stdout)["run_dir"])
        # prefill wrote every byte of the new image
        (du,) = json.loads(ceph_lab.rbd("du", "--format", "json", f"rbd/{image}"))["images"]
        assert du["provisioned_size"] == 32 << 20 and du["used_size"] == du["provisioned_size"]
        left = json.loads((run_dir / "run.json").read_text())["nodes"]["local"]
        assert left["rbd_images"] == [f"rbd/{image}"]
        assert left["prefilled"] == [f"rbd:rbd/{image}"]

        c = subprocess.run(
            [*LOADGEN, "cleanup", str(run_dir)], capture_output=True, text=True, timeout=120
        )
        assert c.returncode == 0, c.stderr[-2000:]
        assert "1 RBD image(s)" in c.stdout
        assert image not in _images(ceph_lab)
        assert not Path(left["workdir"]).exists()
        left = json.loads((run_dir / "run.json").read_text())["nodes"]["local"]
        assert left["rbd_images"] == [] and left["prefilled"] == []
    finally:
        # a failure above must not leave the image and the work dir behind (idempotent)
        for state in runs.glob("*/run.json"):
            subprocess.run(
                [*LOADGEN, "cleanup", str(state.parent)], capture_output=True, timeout=120
            )


def test_missing_image_fails_preflight_by_name_after_ceph_profile_counts_osds(
    ceph_lab, influx, tmp_path
):
    image = _image_name()
    suite = {"profile": "ceph", "target": f"rbd:rbd/{image}", "runtime": 1, "ramp_time": 0}
    plan = _config(ceph_lab, tmp_path, suite)
    runs = tmp_path / "runs"
    r = _loadgen(["run", str(plan), "--runs-dir", str(runs)], influx, tmp_path)
    assert r.returncode != 0
    assert f"RBD image rbd/{image} does not exist" in r.stderr and "create_image" in r.stderr
    (run_dir,) = runs.iterdir()
    assert not list(run_dir.glob("iterations/*/*/out.json"))  # nothing ran
    assert image not in _images(ceph_lab)
    # the QD sweep came from the OSDs the cluster itself reports up
    up = ceph_lab.ceph_json("osd", "stat")["num_up_osds"]
    assert json.loads((run_dir / "run.json").read_text())["osd_count"] == up
    names = [line.split("\t")[0] for line in (run_dir / "plan.txt").read_text().splitlines()]
    qds = [int(n.rsplit("-qd", 1)[1]) for n in names if n.startswith("ceph-randwrite-4k-")]
    assert qds == qd_from_osd_count(up)


def test_ceph_section_gives_each_node_its_conf_and_the_root_node():
    inv = inventory_from_dict(
        {
            "nodes": [
                {"uri": "local", "roles": ["testnode"]},
                {"uri": "root@127.0.0.1:2222", "name": "mon1", "roles": ["ceph-mon"]},
            ],
            "ceph": {"conf": "/etc/lab/ceph.conf", "nodes": {"mon1": {"conf": "/c/mon.conf"}}},
            "plan": {"suites": [{"profile": "ceph", "target": "rbd:rbd/x"}]},
        }
    )
    clients = rbd.ceph_clients(inv)
    assert clients["local"].env() == {"CEPH_CONF": "/etc/lab/ceph.conf"}
    assert clients["mon1"].cli_args() == ["--conf", "/c/mon.conf"]
    assert rbd.root_node(inv) == "mon1"  # no root_node: the first ceph-mon
    assert rbd.wants_osd_count(inv)


def test_example_ceph_plan_sweeps_qd_by_osd_count():
    inv = load_inventory(ROOT / "examples" / "ceph.yaml", check_files=False)
    assert rbd.wants_osd_count(inv) and rbd.root_node(inv) == "local"
    its = list(compile_plan(inv, osd_count=3))
    assert {it.target.text for it in its} == {"rbd:rbd/wally-demo"}
    assert all(it.engine == "rbd" and it.create_image for it in its)
    assert sorted({it.iodepth for it in its}) == qd_from_osd_count(3)

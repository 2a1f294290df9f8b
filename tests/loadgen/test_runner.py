"""`loadgen run` for real: fio on a local and an SSH node, into the real InfluxDB."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from collector import fio, histogram

LOADGEN = [sys.executable, "-m", "loadgen"]


def _plan(suites, nodes):
    return {"nodes": nodes, "plan": {"suites": suites}}


def _suite(**kw):
    base = {
        "name": "t",
        "target": "testfile",
        "size": "32m",
        "engine": "psync",
        "direct": False,
        "runtime": 3,
        "ramp_time": 0,
        "rw": ["randread"],
        "bs": "4k",
        "iodepth": 1,
    }
    return {**base, **kw}


def _write(tmp_path, data, name="lab.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(args, influx, tmp_path, env=None, **kw):
    cmd = [*LOADGEN, *args, "--influx-url", influx.url, "--database", influx.database]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp_path / "state"), **(env or {})},
        timeout=300,
        **kw,
    )


def test_plan_on_local_and_ssh_node_agrees_with_fio(sshd_nodes, influx, tmp_path):
    lab = sshd_nodes.lab_config()
    lab["nodes"] = [lab["nodes"][0], {"uri": "local", "name": "here", "roles": ["testnode"]}]
    plan = _write(
        tmp_path,
        {**lab, "plan": {"suites": [_suite(rw=["randread", "randwrite"], iodepth=[1, 4])]}},
    )
    r = _run(["run", str(plan), "--runs-dir", str(tmp_path / "runs"), "--json"], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    run_dir = Path(doc["run_dir"])
    assert doc["status"] == "done" and len(doc["iterations"]) == 4
    nodes = sorted([sshd_nodes.instances[0].name, "here"])
    for it in doc["iterations"]:
        assert it["status"] == "done" and sorted(it["nodes"]) == nodes
        outs = [fio.read_json(run_dir / "iterations" / it["name"] / n / "out.json") for n in nodes]
        # ground truth: fio's own JSON, summed over nodes
        iops = sum(fio.summary_frame(d)["iops"].sum() for d in outs)
        bw = sum(fio.summary_frame(d)["bw_bytes"].sum() for d in outs)
        assert it["iops"] == pytest.approx(iops, rel=0.01)
        assert it["bw_bytes"] == pytest.approx(bw, rel=0.01)
        bins = sum(fio.json_clat_bins(d, op) for d in outs for op in fio.OPS)
        expected = histogram.fio_percentiles(bins, [50.0, 99.0, 99.9])
        got = [it["clat_ns"][k] for k in ("p50", "p99", "p99.9")]
        np.testing.assert_allclose(got, expected, rtol=0.01, err_msg=it["name"])
        # the points carry the same numbers
        s = influx.query_df(
            "SELECT sum(iops) FROM fio_summary WHERE run = $r AND test = $t",
            {"r": doc["run_id"], "t": it["name"]},
        )
        assert s["sum"].iloc[0] == pytest.approx(iops, rel=1e-9)
    tests = influx.query_df(
        'SELECT "start", "end" FROM wally_test WHERE run = $r GROUP BY "node"', {"r": doc["run_id"]}
    )
    assert sorted(set(tests["node"])) == nodes and len(tests) == 8
    # the collector watched both nodes during the tests
    start, end = int(tests["start"].min()), int(tests["end"].max())
    cpu = influx.query_df(
        "SELECT count(usage_idle) FROM cpu WHERE cpu = 'cpu-total' AND time >= $s AND time <= $e GROUP BY \"node\"",
        {"s": start, "e": end},
    )
    assert sorted(cpu["node"]) == nodes and (cpu["count"] >= (end - start) / 1e9 - 3).all()
    # nothing left on the nodes
    assert not Path(f"/tmp/wally-run-{doc['run_id']}").exists()


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_ctrl_c_leaves_nothing_behind_and_resume_completes(influx, tmp_path):
    plan = _write(
        tmp_path,
        _plan(
            [_suite(runtime=6, iodepth=[1, 2], target="/tmp/wally-ctrlc-test/data")],
            [{"uri": "local", "roles": ["testnode"]}],
        ),
    )
    runs = tmp_path / "runs"
    cmd = [
        *LOADGEN,
        "run",
        str(plan),
        "--runs-dir",
        str(runs),
        "--influx-url",
        influx.url,
        "--database",
        influx.database,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def fio_running():
        states = list(runs.glob("*/run.json"))
        if not states:
            return None
        state = json.loads(states[0].read_text())
        running = [i for i in state["iterations"].values() if i["status"] == "running"]
        pids = state["nodes"].get("local", {}).get("pids", [])
        if running and pids and Path(f"/proc/{pids[-1]}").exists():
            return states[0].parent, pids
        return None

    run_dir, pids = _wait_for(fio_running)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "interrupted"
    for pid in pids:  # no fio left (a reused PID would not be fio)
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or b"fio" not in cmdline.read_bytes()
    assert not Path("/tmp/wally-ctrlc-test").exists()
    assert not Path(f"/tmp/wally-run-{state['run_id']}").exists()

    r = _run(["resume", str(run_dir), "--json"], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert [i["status"] for i in doc["iterations"]] == ["done", "done"]
    assert not Path("/tmp/wally-ctrlc-test").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"profile": "no-such-profile"}, "no-such-profile"),
        ({"bs": "4q"}, "bs"),
        ({"runtime": -5}, "runtime"),
    ],
)
def test_bad_plans_are_refused_before_anything_runs(influx, tmp_path, change, message):
    plan = _write(tmp_path, _plan([_suite(**change)], [{"uri": "local", "roles": ["testnode"]}]))
    r = _run(["run", str(plan), "--runs-dir", str(tmp_path / "runs")], influx, tmp_path)
    assert r.returncode != 0
    assert "lab.yaml" in r.stderr and message in r.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_device_and_missing_fio_are_reported_together(influx, tmp_path):
    # a PATH with every command of this machine except fio: a node without fio
    nofio = tmp_path / "bin"
    nofio.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/usr/sbin"):
        for f in Path(d).iterdir():
            if f.name != "fio" and not (nofio / f.name).exists():
                (nofio / f.name).symlink_to(f)
    plan = _write(
        tmp_path,
        _plan(
            [_suite(target="/dev/wally-no-such-device", size=None)],
            [{"uri": "local", "roles": ["testnode"]}],
        ),
    )
    r = _run(
        ["run", str(plan), "--runs-dir", str(tmp_path / "runs")],
        influx,
        tmp_path,
        env={"PATH": str(nofio)},
    )
    assert r.returncode != 0
    assert "pre-flight failed, nothing was started" in r.stderr
    assert "fio is not installed" in r.stderr
    r = _run(["run", str(plan), "--runs-dir", str(tmp_path / "runs")], influx, tmp_path)
    assert "/dev/wally-no-such-device is not a block device" in r.stderr


def test_a_finished_run_writes_its_report_and_prints_the_dashboard_link(influx, tmp_path):
    plan = _write(
        tmp_path, _plan([_suite(runtime=1, target="t")], [{"uri": "local", "roles": ["testnode"]}])
    )
    r = _run(
        ["run", str(plan), "--runs-dir", str(tmp_path / "runs"), "--json"],
        influx,
        tmp_path,
        env={"WALLY_GRAFANA_URL": "http://grafana.example:3000"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    run_id = json.loads(r.stdout)["run_id"]
    assert "live: http://grafana.example:3000/d/wally-storage/?orgId=1&from=" in r.stderr
    final = [line for line in r.stderr.splitlines() if line.startswith("dashboard: ")]
    assert final and f"var-run={run_id}" in final[0] and "to=now" not in final[0]
    # a fio-only plan gets the storage report, no RPC pages
    run_dir = Path(json.loads(r.stdout)["run_dir"])
    assert f"report: {run_dir / 'report.html'}" in r.stderr
    assert (run_dir / "report.html").is_file() and not (run_dir / "rpc").exists()


def test_an_option_fio_does_not_know_is_caught_at_preflight(influx, tmp_path):
    plan = _write(
        tmp_path,
        _plan([_suite(options={"bogus_opt": "3"})], [{"uri": "local", "roles": ["testnode"]}]),
    )
    r = _run(["run", str(plan), "--runs-dir", str(tmp_path / "runs")], influx, tmp_path)
    assert r.returncode != 0
    assert "pre-flight failed, nothing was started" in r.stderr
    assert "fio rejects the job file" in r.stderr and "bogus_opt" in r.stderr


def test_a_failing_iteration_is_retried_then_marked_failed_and_the_plan_goes_on(influx, tmp_path):
    # verify=crc32c on data prefilled without verify headers: accepted by fio --parse-only
    # and pre-flight, fails only when fio runs.
    bad = _suite(name="bad", runtime=1, options={"verify": "crc32c", "verify_fatal": "1"})
    good = _suite(name="good", runtime=1)
    plan = _write(tmp_path, _plan([bad, good], [{"uri": "local", "roles": ["testnode"]}]))
    r = _run(["run", str(plan), "--runs-dir", str(tmp_path / "runs"), "--json"], influx, tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    statuses = {it["name"]: it["status"] for it in doc["iterations"]}
    assert statuses == {"bad-randread-4k-qd1": "failed", "good-randread-4k-qd1": "done"}
    failed = next(it for it in doc["iterations"] if it["status"] == "failed")
    assert "verify: bad magic header" in failed["errors"]["local"]
    state = json.loads((Path(doc["run_dir"]) / "run.json").read_text())
    assert state["iterations"]["bad-randread-4k-qd1"]["attempts"] == 2
    assert state["status"] == "failed"

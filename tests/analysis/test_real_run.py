"""Ground truth from one real run: fio on a private loop device through `loadgen run`.

The loop device is ours alone, so /proc/diskstats deltas read around the run are the
independent truth for the device side of a ratio; fio's JSON is the truth for latency.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import bottlenecks, ratios, summary
from analysis.windows import RunNotFound, load_tests
from collector import fio, histogram
from collector.influx import InfluxClient, InfluxConfig

LOADGEN = [sys.executable, "-m", "loadgen", "run"]


def _db(url, database):
    return ["--influx-url", url, "--database", database]


def _diskstats(dev: str) -> list[int]:
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if parts[2] == dev:
            return [int(x) for x in parts[3:]]
    raise AssertionError(f"{dev} not in /proc/diskstats")


@pytest.fixture(scope="module")
def loop_device(tmp_path_factory):
    img = tmp_path_factory.mktemp("loop") / "disk.img"
    img.write_bytes(b"")
    os.truncate(img, 256 << 20)
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=True)
    img.unlink()


@pytest.fixture(scope="module")
def real_run(influxd, loop_device, tmp_path_factory):
    """randwrite and randread at QD 4 on the loop device, diskstats read around the run."""
    tmp = tmp_path_factory.mktemp("run")
    client = InfluxClient(InfluxConfig(url=influxd.url, database=f"an_{uuid.uuid4().hex[:10]}"))
    client.create_database()
    suite = {
        "name": "lo",
        "target": loop_device,
        "engine": "libaio",
        "direct": True,
        "runtime": 12,
        "ramp_time": 0,  # fio does not count ramp I/O in its JSON: /proc would
        "prefill": "skip",
        "rw": ["randwrite", "randread"],
        "bs": "4k",
        "iodepth": [4],
    }
    plan = tmp / "lab.yaml"
    plan.write_text(
        yaml.safe_dump(
            {"nodes": [{"uri": "local", "roles": ["testnode"]}], "plan": {"suites": [suite]}}
        )
    )
    dev = Path(loop_device).name
    before = _diskstats(dev)
    r = subprocess.run(
        [*LOADGEN, str(plan), "--json", "--runs-dir", str(tmp), *_db(influxd.url, client.database)],
        capture_output=True,
        text=True,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp / "state")},
        timeout=300,
    )
    after = _diskstats(dev)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    yield client, doc, dev, before, after
    client.execute(f'DROP DATABASE "{client.database}"')


def _fio_json(doc, test):
    return fio.read_json(Path(doc["run_dir"]) / "iterations" / test / "local" / "out.json")


def test_latency_percentiles_equal_fio_json(real_run):
    client, doc, *_ = real_run
    numbers = summary.run_numbers(client, doc["run_id"])
    assert {(n.test.rw, n.op) for n in numbers} == {("randwrite", "write"), ("randread", "read")}
    for n in numbers:
        d = _fio_json(doc, n.test.test)
        levels = list(summary.LAT_LEVELS.values())
        expected = histogram.fio_percentiles(fio.json_clat_bins(d, n.op), levels)
        got = [n.lat_ns[k] for k in summary.LAT_LEVELS]
        np.testing.assert_allclose(got, expected, rtol=0.01, err_msg=n.test.test)
        # the mean from bin midpoints is fio's clat mean to within the bin width
        assert n.lat_ns["mean"] == pytest.approx(d["jobs"][0][n.op]["clat_ns"]["mean"], rel=0.01)
        # throughput: fio's own figure within the noise of a shared 2-core machine
        assert n.iops.mean == pytest.approx(d["jobs"][0][n.op]["iops"], rel=0.25)
        assert n.iops.ci_low <= n.iops.mean <= n.iops.ci_high
        assert n.iops.n >= 5


def test_device_writes_per_client_write_match_proc_diskstats(real_run):
    client, doc, dev, before, after = real_run
    # /proc/diskstats field 5 (index 4) is writes completed; the device is only fio's
    truth = (after[4] - before[4]) / _fio_json(doc, "lo-randwrite-4k-qd4")["jobs"][0]["write"][
        "total_ios"
    ]
    table = ratios.ratio_table(
        client,
        doc["run_id"],
        {"w": f"testnode.{dev}.writes / client.write.ios"},
        strict=True,
        chunks=3,
    )
    row = table[table["test"] == "lo-randwrite-4k-qd4"].iloc[0]
    # sensor sampling jitter on a loaded 2-core machine moves a 12 s window's rate by a few %
    assert row["value"] == pytest.approx(truth, rel=0.1)
    # a steady load costs about the same in every 4 s chunk (1 s samples: edge aliasing)
    assert row["deviation"] < 0.3
    reads = table[table["test"] == "lo-randread-4k-qd4"].iloc[0]
    assert np.isnan(reads["value"]) or reads["value"] == 0  # no client writes: 0/0


def test_bottlenecks_rank_the_test_device(real_run):
    client, doc, dev, *_ = real_run
    tests = load_tests(client, doc["run_id"])
    table = bottlenecks.run_bottlenecks(client, doc["run_id"], tests=tests)
    mine = table[(table["device"] == dev) & (table["resource"] == "disk util")]
    assert set(mine["test"]) == {t.test for t in tests}
    assert (mine["mean"] > 10).all() and (mine["mean"] <= 101).all()
    # the server-side aggregates equal the raw samples' mean and share past the threshold
    th = bottlenecks.Thresholds()
    for t in tests:
        raw = client.query_df(
            'SELECT "io_util" FROM "diskio" WHERE "device" = $d AND time >= $s AND time < $e',
            {"d": dev, "s": t.start_ns, "e": t.end_ns},
        )["io_util"].to_numpy(float)
        row = mine[mine["test"] == t.test].iloc[0]
        assert row["mean"] == pytest.approx(raw.mean(), rel=1e-9)
        assert row["saturated_share"] == pytest.approx((raw >= th.disk_util_pct).mean())
    assert {"cpu", "cpu core", "disk queue"} <= set(table["resource"])
    first = bottlenecks.first_saturated(table, tests)
    assert len(first) == 2 and first["resource"].str.len().gt(0).all()
    checks = bottlenecks.run_checks(client, doc["run_id"], tests=tests)
    ceph = checks[checks["check"] == "ceph flushed"]
    assert (ceph["status"] == "skipped").all() and ceph["detail"].str.contains("no Ceph").all()
    hits = checks[(checks["check"] == "cache hits") & (checks["status"] != "skipped")]
    assert len(hits) == 1  # direct reads of a raw device: every read reached it
    assert hits["value"].iloc[0] < 0.1


def _cli(args, client):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args, *_db(client.url, client.database)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_outputs_and_bad_input(real_run):
    client, doc, *_ = real_run
    r = _cli(["summary", doc["run_id"], "--json"], client)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {t["test"] for t in out["tests"]} == {"lo-randwrite-4k-qd4", "lo-randread-4k-qd4"}
    r = _cli(["ratios", doc["run_id"], "--csv", "--expr", "c=testnode.cpu.busy_cores"], client)
    assert r.returncode == 0 and r.stdout.startswith("test,name,expr,value"), r.stderr
    r = _cli(["bottlenecks", doc["run_id"]], client)
    assert r.returncode == 0 and "closest to saturation" in r.stdout, r.stderr
    r = _cli(["summary", "no-such-run"], client)
    assert r.returncode == 2 and "run 'no-such-run' not found" in r.stderr
    assert doc["run_id"] in r.stderr  # the known runs are listed
    r = _cli(["ratios", doc["run_id"], "--expr", "nosuch.disk.reads / client.ios"], client)
    assert r.returncode == 2 and "unknown role 'nosuch'" in r.stderr
    with pytest.raises(RunNotFound):
        load_tests(client, "no-such-run")

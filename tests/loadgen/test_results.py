"""loadgen.results.ingest_iteration on real fio runs, checked against fio's own JSON.

Two "nodes" are two fio processes started together in two node directories of one
iteration (psync 4k randread and randwrite on files in the page cache, 2 jobs each), with
the runner's fixed options (loadgen.jobfile.FIXED_OPTIONS: epoch-stamped per-job 1 s
bw/iops/clat-histogram logs). A third, single-job run checks the totals against fio's
printed percentiles directly. Ground truth is read from fio's JSON with `json`, not through
the parsers under test: IOPS and bandwidth add up over nodes within 1 %; latency
percentiles merged across nodes are within 1 % of fio's method applied to the SUMMED json+
bins of both nodes; every I/O fio counted is in the stored per-second points exactly once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collector import fio, histogram
from collector.writer import InfluxWriter
from loadgen.jobfile import FIXED_OPTIONS
from loadgen.results import ingest_iteration

QS = {"p50": 50.0, "p99": 99.0, "p99.9": 99.9}
RUNTIME_S = 3
# node dir -> (rw, numjobs); a high, steady rate fills the tail of each histogram
RUNS = {
    "pair/node1": ("randread", 2),
    "pair/node2": ("randwrite", 2),
    "solo/node1": ("randread", 1),
}


def job_file(target: Path, rw: str, numjobs: int) -> str:
    fixed = "\n".join(f"{k}={v}" for k, v in FIXED_OPTIONS)
    return f"""[global]
filename={target}
size=16m
ioengine=psync
rw={rw}
bs=4k
numjobs={numjobs}
rate_iops=10000
runtime={RUNTIME_S}
{fixed}
write_bw_log=fio
write_iops_log=fio
write_hist_log=fio
[{rw}]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """All fio runs at once (by PID; killed if anything fails); returns the root dir."""
    if shutil.which("fio") is None:
        pytest.fail("fio is not installed (apt-get install fio)")
    root = tmp_path_factory.mktemp("iterations")
    procs: list[subprocess.Popen] = []
    targets = []
    try:
        for rel, (rw, numjobs) in RUNS.items():
            node_dir = root / rel
            node_dir.mkdir(parents=True)
            targets.append(node_dir / "target.dat")
            (node_dir / "job.fio").write_text(job_file(targets[-1], rw, numjobs))
            procs.append(
                subprocess.Popen(
                    ["fio", "--output-format=json+", "--output=out.json", "job.fio"],
                    cwd=node_dir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for rel, p in zip(RUNS, procs, strict=True):
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, f"fio in {rel} failed: {err.decode(errors='replace')}"
        yield root
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for t in targets:
            t.unlink(missing_ok=True)


def fio_json(node_dir: Path) -> dict:
    return json.loads((node_dir / "out.json").read_text())


def json_iops_bw(doc: dict) -> tuple[float, float]:
    ops = [j[op] for j in doc["jobs"] for op in fio.OPS if j[op]["total_ios"]]
    return sum(d["iops"] for d in ops), sum(d["bw_bytes"] for d in ops)


def json_bins(doc: dict, op: str) -> np.ndarray:
    """json+ clat bins of one direction summed over jobs (fio's "bins": value ns -> count)."""
    out = np.zeros(histogram.PLAT_NR, dtype=np.int64)
    for job in doc["jobs"]:
        for value, count in job[op]["clat_ns"].get("bins", {}).items():
            out[histogram.value_to_bin(np.array([int(value)]))[0]] += count
    return out


def fio_way(bins: np.ndarray) -> dict[str, float]:
    values = histogram.fio_percentiles(bins, list(QS.values()))
    return dict(zip(QS, values.tolist(), strict=True))


def assert_within_1pct(ours: dict[str, float], truth: dict[str, float]) -> None:
    for k, v in truth.items():
        assert ours[k] == pytest.approx(v, rel=0.01), (k, ours, truth)


def test_two_nodes_agree_with_fio_json_and_land_in_influx(runs: Path, influx) -> None:
    nodes = ["node1", "node2"]
    tags = {"run": "r1", "test": "pair", "bs": "4k", "qd": "1"}
    with InfluxWriter(influx) as writer:
        totals = ingest_iteration(writer, runs / "pair", nodes, tags)
    docs = {n: fio_json(runs / "pair" / n) for n in nodes}

    # IOPS and bandwidth: the sum of fio's own numbers over nodes.
    per_node = {n: json_iops_bw(d) for n, d in docs.items()}
    assert totals.iops == pytest.approx(sum(i for i, _ in per_node.values()), rel=0.01)
    assert totals.bw_bytes == pytest.approx(sum(b for _, b in per_node.values()), rel=0.01)
    for n, (iops, bw) in per_node.items():
        assert totals.per_node[n]["iops"] == pytest.approx(iops, rel=0.01)
        assert totals.per_node[n]["bw_bytes"] == pytest.approx(bw, rel=0.01)

    # Latency: merged over nodes (and directions) like fio would on the summed bins.
    bins = {(n, op): json_bins(docs[n], op) for n in nodes for op in ("read", "write")}
    assert_within_1pct(totals.clat_ns, fio_way(sum(bins.values())))
    assert_within_1pct(totals.ops["read"].clat_ns, fio_way(bins[("node1", "read")]))
    assert_within_1pct(totals.ops["write"].clat_ns, fio_way(bins[("node2", "write")]))
    # The histogram logs themselves carry most of it (fio does not log the last window).
    for n, op in (("node1", "read"), ("node2", "write")):
        logged = sum(
            fio.read_hist_log(p).count.sum() for p in (runs / "pair" / n).glob("*_clat_hist.*")
        )
        assert 0.5 * bins[(n, op)].sum() < logged <= bins[(n, op)].sum()

    # Points in InfluxDB, with their tags.
    where = {"run": "r1"}
    summary = influx.query_df('SELECT * FROM "fio_summary" WHERE "run" = $run', where)
    assert sorted(zip(summary["node"], summary["op"], strict=True)) == [
        ("node1", "read"),
        ("node2", "write"),
    ]
    assert set(summary["test"]) == {"pair"} and set(summary["qd"]) == {"1"}
    for row in summary.itertuples():
        assert row.iops == pytest.approx(per_node[row.node][0], rel=1e-9)
        assert row.bw_bytes == pytest.approx(per_node[row.node][1], rel=1e-9)

    rates = influx.query_df('SELECT * FROM "fio" WHERE "run" = $run', where)
    for n, g in rates.groupby("node"):
        assert set(g["op"]) == {"read" if n == "node1" else "write"}
        assert set(g["bs"]) == {"4k"} and set(g["qd"]) == {"1"} and set(g["test"]) == {"pair"}
        assert len(g) >= RUNTIME_S - 1
        assert g["iops"].mean() == pytest.approx(per_node[n][0], rel=0.1)

    # Every I/O fio counted is in exactly one per-second latency point and histogram.
    lat = influx.query_df('SELECT * FROM "fio_lat" WHERE "run" = $run', where)
    hist = influx.query_df('SELECT * FROM "fio_hist" WHERE "run" = $run', where)
    assert set(hist["le"]) <= {str(1 << k) for k in range(64)}
    for n, op in (("node1", "read"), ("node2", "write")):
        expected = bins[(n, op)].sum()
        sel = (lat["node"] == n) & (lat["op"] == op)
        assert lat.loc[sel, "count"].sum() == expected
        assert (lat.loc[sel, "p50"] <= lat.loc[sel, "p99_9"]).all()
        assert hist.loc[(hist["node"] == n) & (hist["op"] == op), "count"].sum() == expected
    # Rates and latencies are on one grid: a second has one timestamp in both.
    assert len({t % 1_000_000_000 for t in [*lat["time"], *rates["time"]]}) == 1
    assert set(rates["time"]) <= set(lat["time"])


def test_single_job_agrees_with_fio_printed_percentiles(runs: Path, influx) -> None:
    tags = {"run": "r2", "test": "solo", "bs": "4k", "qd": "1"}
    with InfluxWriter(influx) as writer:
        totals = ingest_iteration(writer, runs / "solo", ["node1"], tags)
    doc = fio_json(runs / "solo" / "node1")
    clat = doc["jobs"][0]["read"]["clat_ns"]
    printed = {k: float(clat["percentile"][f"{q:f}"]) for k, q in QS.items()}
    assert_within_1pct(totals.clat_ns, printed)
    assert_within_1pct(totals.ops["read"].clat_ns, printed)
    assert totals.iops == pytest.approx(doc["jobs"][0]["read"]["iops"], rel=0.01)

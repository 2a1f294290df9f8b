"""analysis compare: two real runs of one plan matched test by test, and synthetic runs
whose per-second samples have a known shift (flagged) or are identical (not flagged)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from analysis import compare, summary
from analysis.cli import main
from collector.lineproto import Point, encode_points

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def test_significance_on_known_samples():
    rng = np.random.default_rng(7)
    a = rng.normal(1000, 30, 60)
    p, sig = compare.significance(a, rng.normal(1060, 30, 60))  # a 2-sigma shift
    assert sig and p < 1e-6
    p, sig = compare.significance(a, a.copy())
    assert not sig and p == pytest.approx(1.0)
    p, sig = compare.significance(np.full(10, 5.0), np.full(10, 5.0))
    assert (p, sig) == (1.0, False)
    p, sig = compare.significance(a[:2], a)  # too few to say anything
    assert np.isnan(p) and not sig
    # same distribution, different draws: not significant at 5% for this seed
    assert not compare.significance(a, rng.normal(1000, 30, 60))[1]


def _synthetic_run(run: str, tests: dict[str, np.ndarray], t0: int) -> list[Point]:
    """wally_test records and per-second fio points, as loadgen writes them."""
    points = []
    for i, (test, iops) in enumerate(tests.items()):
        start = t0 + i * 100 * NS
        end = start + len(iops) * NS
        params = {"rw": "randread", "bs": "4k", "iodepth": 4, "numjobs": 1}
        points.append(
            Point(
                "wally_test",
                {"run": run, "test": test, "node": "n1", "kind": "fio", "status": "done"},
                {
                    "start": start,
                    "end": end,
                    "iteration": i + 1,
                    "params": json.dumps(params),
                    "ramp": 0.0,
                },
                start,
            )
        )
        for k, v in enumerate(iops, 1):
            tags = {"run": run, "test": test, "node": "n1", "op": "read", "bs": "4k", "qd": "4"}
            points.append(
                Point("fio", tags, {"iops": float(v), "bw": float(v) * 4.0}, start + k * NS)
            )
    return points


@pytest.fixture
def synthetic(influx):
    rng = np.random.default_rng(11)
    base = {"t-a": rng.normal(1000, 20, 40).round(), "t-b": rng.normal(500, 10, 40).round()}
    shifted = {"t-a": base["t-a"] + 60, "t-b": base["t-b"].copy(), "t-c": base["t-b"].copy()}
    points = _synthetic_run("base", base, T0)
    points += _synthetic_run("shifted", shifted, T0 + 1000 * NS)
    influx.write_body("\n".join(encode_points(points)).encode())
    return influx, base


def test_known_shift_flagged_identical_samples_not(synthetic):
    client, base = synthetic
    table, missing = compare.compare_runs(client, ["base", "shifted"])
    iops = table[table["metric"] == "IOPS"].set_index("test")
    assert set(iops.index) == {"t-a", "t-b"}
    a = iops.loc["t-a"]
    assert a["a"] == pytest.approx(base["t-a"].mean(), rel=0.01)
    assert a["diff"] == pytest.approx(60, rel=0.05)
    assert a["diff_pct"] == pytest.approx(6.0, rel=0.1)
    assert a["significant"] and a["p"] < 1e-6
    b = iops.loc["t-b"]
    assert not b["significant"] and b["p"] == pytest.approx(1.0) and b["diff"] == 0
    mib = table[(table["metric"] == "MiB/s") & (table["test"] == "t-a")].iloc[0]
    assert mib["significant"]
    assert missing.to_dict("records") == [{"test": "t-c", "only_in": "shifted"}]


def test_cli_text_json_and_html(synthetic, tmp_path):
    client, _ = synthetic
    db = ["--influx-url", client.url, "--database", client.database]
    html = tmp_path / "cmp.html"

    def cli(*args):
        return CliRunner().invoke(main, ["compare", *args, *db])

    r = cli("base", "shifted", "--html", str(html))
    assert r.exit_code == 0, r.output
    assert "base (A) vs shifted (B)" in r.stdout and "+6.0%" in r.stdout
    page = html.read_text()
    assert "t-a" in page and 'id="table"' in page and "Plotly.newPlot" in page
    doc = json.loads(cli("base", "shifted", "--json").stdout)
    flagged = {(x["test"], x["metric"]) for x in doc["compare"] if x["significant"]}
    assert ("t-a", "IOPS") in flagged and ("t-b", "IOPS") not in flagged
    r = cli("base", "nope")
    assert r.exit_code == 2 and "run 'nope' not found" in r.stderr
    r = cli("base")
    assert r.exit_code == 2 and "at least two run ids" in r.stderr


def test_two_real_runs_of_one_plan(short_runs):
    a, b = (r.run_id for r in short_runs.runs)
    table, missing = compare.compare_runs(short_runs.client, [a, b])
    assert missing.empty
    tests = {"rep-randread-4k-qd1", "rep-randread-4k-qd4"}
    assert set(table["test"]) == tests
    assert set(table["metric"]) == set(compare.METRICS)
    truth = summary.numbers_frame(summary.run_numbers(short_runs.client, b)).set_index("test")
    iops = table[table["metric"] == "IOPS"].set_index("test")
    for test in tests:
        assert iops.loc[test, "b"] == pytest.approx(truth.loc[test, "iops_mean"])
        assert iops.loc[test, "diff"] == pytest.approx(iops.loc[test, "b"] - iops.loc[test, "a"])

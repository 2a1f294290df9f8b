"""`analysis rpc` on an imported ombt campaign equals the seed notebook's aggregates, and
shows the failures by exception type that a run wrote."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analysis import rpc
from collector import schema
from collector.lineproto import Point
from collector.writer import InfluxWriter
from loadgen.rpc.controller import AgentState, RpcTestResult, RpcTestSpec
from loadgen.rpc.stats import LatencyStats
from tests.collector.test_ombt import DATA, notebook_params, run_cli


def test_ingested_ombt_campaign_gives_the_notebook_table(influx, tmp_path: Path) -> None:
    r = run_cli("collector", ["ingest", "ombt", str(DATA), "--run", "tc1"], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "report"
    r = run_cli("analysis", ["rpc", "tc1", "--out", str(out)], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out / "rpc.csv")
    doc = json.loads((out / "rpc.json").read_text())
    reference = notebook_params()
    assert list(table["test"]) == [p["backup_dir"] for p in reference]
    for row, it, ref in zip(
        table.to_dict(orient="records"), doc["iterations"], reference, strict=True
    ):
        # the notebook's extraction table, column by column
        assert row["clients"] == ref["_ombt_clients"] and row["servers"] == ref["_ombt_servers"]
        assert row["call_type"] == ref["call_type"] and row["driver"] == ref["driver"]
        for side, agg in (("client", ref["_agg_clients"]), ("server", ref["_agg_servers"])):
            verb = "sent" if side == "client" else "received"
            assert row[f"{verb}_ok"] == agg["msgs_ok"] and row[f"{verb}_fail"] == agg["msgs_fail"]
            assert row[f"{side}_rate"] == pytest.approx(agg["rate"], rel=1e-9)
            assert row[f"{side}_lat_mean"] == pytest.approx(agg["latency_avg"], rel=1e-9)
            assert row[f"{side}_lat_stddev"] == pytest.approx(agg["latency_stdev"], rel=1e-9)
            for what in ("ok", "fail"):
                per = ref[f"_ombt_msgs_{verb}_{what}"]
                for stat in ("min", "mean", "max"):
                    assert row[f"per_{side}_{what}_{stat}"] == pytest.approx(per[stat]), (
                        side,
                        what,
                    )
            # the distribution the notebook plots, bucket by bucket
            dist = agg["latency"]["distribution"]
            expected = sorted(
                (i * 10 ** int(k), n)
                for k, counts in dist.items()
                for i, n in enumerate(counts)
                if n
            )
            got = [(b["lower"], b["count"]) for b in it["distribution"][side]]
            assert got == expected
        assert it["params"]["nbr_clients"] == ref["nbr_clients"]
    html = (out / "rpc.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # self-contained
    assert "test_case_1-incremental-it-2" in html


def test_unknown_run_is_a_clear_error(influx, tmp_path: Path) -> None:
    r = run_cli("analysis", ["rpc", "no-such-run", "--out", str(tmp_path / "x")], influx, tmp_path)
    assert r.returncode == 2
    assert "no-such-run" in r.stderr and "no RPC iterations" in r.stderr


def test_failures_by_type_the_controller_writes_show_in_the_table(influx, tmp_path: Path) -> None:
    # what a run's controller writes at the end of an iteration in which calls failed; the
    # odd type name checks that tag escaping survives the round trip
    failures = {
        "rpc-client-0": ["MessagingTimeout"] * 12 + ["odd, name=1"],
        "rpc-client-1": ["MessagingTimeout"] * 2 + ["ConnectionError"] * 3,
        "rpc-server-0": [],
    }
    start = time.time() - 60
    agents = {}
    for name, errors in failures.items():
        stats = LatencyStats()
        for i in range(20):
            stats.record(0.001 * (i + 1))
        for error in errors:
            stats.record_failure(error)
        stats.mark(start, start + 5)
        role = name.rsplit("-", 1)[0]
        agents[name] = AgentState(name, role, "t0", {}, node="n1", stats=stats)
    spec = RpcTestSpec(url="rabbit://unused/", clients=2, run="faulty", test="it0")
    result = RpcTestResult(spec, agents, start, start + 5)
    record = Point(
        schema.WALLY_TEST.name,
        {"run": "faulty", "test": "it0", "node": "n1", "kind": "rpc", "status": "done"},
        {
            "start": int(start * 1e9),
            "end": int((start + 6) * 1e9),
            "iteration": 0,
            "params": json.dumps({"call_type": "rpc-call"}),
        },
        int(start * 1e9),
    )
    with InfluxWriter(influx) as writer:
        writer.write([*result.summary_points(), record])

    out = tmp_path / "report"
    r = run_cli("analysis", ["rpc", "faulty", "--out", str(out)], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = Counter(e for errors in failures.values() for e in errors)
    table = pd.read_csv(out / "rpc.csv", keep_default_na=False)
    (row,) = table.to_dict(orient="records")
    assert row["sent_fail"] == expected.total()
    cell = [part.rsplit(": ", 1) for part in row["sent_fail_by_type"].split("; ")]
    assert {name: int(n) for name, n in cell} == expected
    assert [int(n) for _, n in cell] == sorted(expected.values(), reverse=True)
    assert row["received_fail_by_type"] == ""
    (it,) = json.loads((out / "rpc.json").read_text())["iterations"]
    assert it["sent_fail_by_type"] == expected
    assert it["received_fail_by_type"] == {}
    assert row["sent_fail_by_type"] in (out / "rpc.html").read_text()


def test_rate_and_latency_plots_have_one_line_per_server_count_and_driver() -> None:
    rows = [
        (clients, servers, driver, 100.0 * clients + servers, 2.0 + clients)
        for driver in ("rabbit", "kafka")
        for servers in (1, 2)
        for clients in (4, 1, 2)  # unsorted: the lines must run in client order
    ]
    table = pd.DataFrame(
        rows, columns=["clients", "servers", "driver", "client_rate", "client_lat_mean"]
    )
    table["call_type"] = "rpc-call"
    table["client_lat_p99"] = table["client_lat_mean"] * 2
    figs = dict(rpc.figures([], table))
    fig = figs["rpc-call: rate and latency vs number of clients"]
    lines: dict[str, list[tuple[str, list, list]]] = {}
    for trace in fig.data:
        lines.setdefault(trace.name, []).append((trace.xaxis, list(trace.x), list(trace.y)))
    assert set(lines) == {f"{s} servers, {d}" for s in (1, 2) for d in ("rabbit", "kafka")}
    for name, panels in lines.items():
        servers, driver = int(name.split()[0]), name.split(", ")[1]
        want = table[(table["servers"] == servers) & (table["driver"] == driver)]
        want = want.sort_values("clients")
        # rate, mean latency and p99 panels, each against the number of clients
        assert [p[0] for p in panels] == ["x", "x2", "x3"]
        for (_, x, y), column in zip(
            panels, ("client_rate", "client_lat_mean", "client_lat_p99"), strict=True
        ):
            assert x == [1, 2, 4] and y == list(want[column])
    # no iterations: no distribution lines and no bus panel
    assert not figs["Latency distribution per iteration (client for calls, server otherwise)"].data
    assert "Bus metrics during each iteration (its time window)" not in figs


def test_bus_metrics_count_only_the_bus_nodes(influx) -> None:
    # beam.smp on a bus node and on another node (some other Erlang service), same second
    t = time.time_ns() // 10**9 * 10**9
    points = [
        Point(
            schema.PROCSTAT.name,
            {"node": node, "role": role, "process_name": "beam.smp", "pid": "1"},
            {"cpu_usage": cpu, "memory_rss": 2**20 * cpu},
            t,
        )
        for node, role, cpu in (("mq1", "ceph-mon,rabbitmq", 30.0), ("db1", "database", 70.0))
    ]
    with InfluxWriter(influx) as writer:
        writer.write(points)
    bus = rpc.bus_metrics(influx, t - 10**9, t + 10**9, "rabbitmq")
    assert list(bus["broker_cpu_pct"]["value"]) == [30.0]
    assert list(bus["broker_mem_mb"]["value"]) == [30.0]

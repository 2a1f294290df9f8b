"""RPC campaigns inside `loadgen run`, for real: private RabbitMQ, real InfluxDB.

Two iterations through `loadgen run --json`, then `analysis rpc` on the run: the counts in
its HTML/CSV/JSON equal the agents' counters (run.json) and RabbitMQ's own counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from loadgen.rpc.broker import LocalBroker
from tests.fixtures.rabbitmq import management_get, wait_for

CALLS = 40


def _overview(broker: LocalBroker) -> dict[str, int]:
    stats = management_get(broker, "/api/overview").get("message_stats", {})
    return {k: stats.get(k, 0) for k in ("publish", "deliver_get")}


def _cli(args: list[str], influx, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args, "--influx-url", influx.url, "--database", influx.database],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp_path / "state"), **env},
    )


def test_rpc_campaign_runs_and_its_post_mortem_matches_the_counters(
    rabbitmq: LocalBroker, influx, tmp_path: Path
) -> None:
    lab = {
        "nodes": [{"uri": "local", "name": "bus", "roles": ["rabbitmq"]}],
        "rabbitmq": {"url": rabbitmq.api, "user": rabbitmq.user},
        "rpc": {
            "broker": {
                "url": f"rabbit://127.0.0.1:{rabbitmq.amqp_port}/",
                "user": rabbitmq.user,
                "password_env": "WALLY_TEST_RABBIT_PASSWORD",
            },
            "campaigns": [
                {
                    "name": "t",
                    "clients": [1, 2],
                    "servers": [1, 2],
                    "calls": CALLS,
                    "sweep": "incremental",
                    "filters": ["servers <= clients"],
                }
            ],
        },
    }
    plan = tmp_path / "lab.yaml"
    plan.write_text(yaml.safe_dump(lab, sort_keys=False))
    before = _overview(rabbitmq)
    r = _cli(
        [
            sys.executable,
            "-m",
            "loadgen",
            "run",
            str(plan),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--json",
        ],
        influx,
        tmp_path,
        WALLY_TEST_RABBIT_PASSWORD=rabbitmq.password,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == "done"
    its = doc["iterations"]
    assert [i["name"] for i in its] == ["t-rpc-call-c1-s1", "t-rpc-call-c2-s2"]
    sent = 0
    for it, clients in zip(its, (1, 2), strict=True):
        assert it["status"] == "done" and it["rpc"]["missing"] == {}
        c, s = it["rpc"]["client"], it["rpc"]["server"]
        assert c["msgs_ok"] == clients * CALLS and c["msgs_fail"] == 0
        assert s["msgs_ok"] == c["msgs_ok"]
        sent += c["msgs_ok"]
    # RabbitMQ's own counters: every call publishes a request and a reply
    expected = {"publish": 2 * sent, "deliver_get": 2 * sent}
    got = wait_for(lambda: {k: v - before[k] for k, v in _overview(rabbitmq).items()}, expected)
    assert got == expected
    run_dir = Path(doc["run_dir"])
    state = json.loads((run_dir / "run.json").read_text())
    assert [i["status"] for i in state["iterations"].values()] == ["done", "done"]
    assert any((run_dir / "iterations" / its[0]["name"] / "agents").glob("*.log"))

    out = tmp_path / "report"
    r = _cli(
        [sys.executable, "-m", "analysis", "rpc", doc["run_id"], "--out", str(out)],
        influx,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(out / "rpc.csv")
    report = json.loads((out / "rpc.json").read_text())
    assert list(table["test"]) == [i["name"] for i in its]
    for row, it in zip(table.to_dict(orient="records"), its, strict=True):
        c, s = it["rpc"]["client"], it["rpc"]["server"]
        assert row["sent_ok"] == c["msgs_ok"] and row["received_ok"] == s["msgs_ok"]
        assert row["sent_fail"] == 0 and row["received_fail"] == 0
        assert row["clients"] == row["servers"] == it["rpc"]["agents"] // 2
        assert row["per_client_ok_min"] == row["per_client_ok_max"] == CALLS
        assert row["client_rate"] == c["rate"] and row["client_lat_p99"] == c["lat_p99"]
        assert row["call_type"] == "rpc-call" and row["driver"] == "rabbit"
    assert table["sent_ok"].sum() == sent
    for it in report["iterations"]:
        for side in ("client", "server"):
            assert sum(b["count"] for b in it["distribution"][side]) == it["sent_ok"]
    # the collector watched the bus during each iteration's window
    bus = ["broker_cpu_pct", "broker_mem_mb", "connections", "tcp_established"]
    assert table[bus].notna().all().all(), table[bus]
    assert (table["broker_mem_mb"] > 0).all() and (table["tcp_established"] > 0).all()
    assert (table["tcp_established"] > 0).all()
    html = (out / "rpc.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html

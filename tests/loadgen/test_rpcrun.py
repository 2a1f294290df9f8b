"""RPC campaigns inside `loadgen run`, for real: private RabbitMQ, real InfluxDB.

Two iterations through `loadgen run --json`, then `analysis rpc` on the run: the counts in
its HTML/CSV/JSON equal the agents' counters (run.json) and RabbitMQ's own counters. Ctrl+C
in the middle of an iteration: no agent survives (by the PIDs the run recorded), the
iteration is resumable, `cleanup` and `resume` work as for fio runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loadgen.rpc.broker import LocalBroker, free_port
from tests.fixtures.rabbitmq import overview_counts, wait_for

CALLS = 40


def _broker(broker: LocalBroker) -> dict[str, str]:
    """The plan's `rpc.broker`; the password comes from the environment, as in a lab."""
    return {
        "url": f"rabbit://127.0.0.1:{broker.amqp_port}/",
        "user": broker.user,
        "password_env": "WALLY_TEST_RABBIT_PASSWORD",
    }


def _cli(args: list[str], influx, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args, "--influx-url", influx.url, "--database", influx.database],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp_path / "state"), **env},
    )


def test_rpc_campaign_runs_and_its_post_mortem_matches_the_counters(
    counting_rabbitmq: LocalBroker, influx, tmp_path: Path
) -> None:
    # exact broker-wide counters: a broker of the module's own (see the fixture)
    rabbitmq = counting_rabbitmq
    lab = {
        "nodes": [{"uri": "local", "name": "bus", "roles": ["rabbitmq"]}],
        "rabbitmq": {"url": rabbitmq.api, "user": rabbitmq.user},
        "rpc": {
            "broker": _broker(rabbitmq),
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
    before = overview_counts(rabbitmq)
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
    got = wait_for(
        lambda: {k: v - before[k] for k, v in overview_counts(rabbitmq).items()}, expected
    )
    assert got == expected
    run_dir = Path(doc["run_dir"])
    state = json.loads((run_dir / "run.json").read_text())
    assert [i["status"] for i in state["iterations"].values()] == ["done", "done"]
    assert any((run_dir / "iterations" / its[0]["name"] / "agents").glob("*.log"))
    # the run wrote its RPC post-mortem, and no storage report for a plan without fio
    assert (run_dir / "rpc" / "rpc.html").is_file() and not (run_dir / "report.html").exists()
    assert list(pd.read_csv(run_dir / "rpc" / "rpc.csv")["sent_ok"]) == [CALLS, 2 * CALLS]

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
    # the agents ran on this machine, which the lab knows as node "bus": it watched them too
    agent_pids = set(state["nodes"]["local"]["pids"])
    watched = influx.query_df(
        'SELECT "cpu_usage", "pid" FROM "procstat" WHERE "node" = \'bus\' AND "pattern" =~ /agent/'
    )
    assert agent_pids & set(watched["pid"].astype(int)), (agent_pids, watched)
    html = (out / "rpc.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _ticks(influx, run_id: str) -> int:
    df = influx.query_df('SELECT "msgs_ok" FROM "rpc" WHERE "run" = $run', {"run": run_id})
    return len(df)


def test_ctrl_c_mid_rpc_iteration_stops_agents_and_resume_finishes(
    rabbitmq: LocalBroker, influx, tmp_path: Path
) -> None:
    lab = {
        "nodes": [{"uri": "local", "name": "loadgen", "roles": ["loadgen"]}],
        "rpc": {
            "broker": _broker(rabbitmq),
            "campaigns": [
                {"name": "i", "clients": [1], "servers": [1], "duration": "5s", "pause": 0.01}
            ],
        },
    }
    plan = tmp_path / "lab.yaml"
    plan.write_text(yaml.safe_dump(lab, sort_keys=False))
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "WALLY_STATE_DIR": str(tmp_path / "state"),
        "WALLY_TEST_RABBIT_PASSWORD": rabbitmq.password,
    }
    db = ["--influx-url", influx.url, "--database", influx.database]
    cmd = [sys.executable, "-m", "loadgen", "run", str(plan), "--runs-dir", str(runs), *db]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        run_dir = None
        # mid-iteration: both agents recorded by PID, and their per-second points arriving
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(runs.glob("*/run.json"))
            if found:
                run_dir = found[0].parent
                pids = _state(run_dir)["nodes"].get("local", {}).get("pids", [])
                if len(pids) == 2 and _ticks(influx, run_dir.name) > 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"the RPC iteration never got going: {proc.communicate()[1][-3000:]}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "loadgen resume" in err
    state = _state(run_dir)
    assert state["status"] == "interrupted"
    (it,) = state["iterations"].values()
    assert it["status"] == "interrupted" and it["totals"] == {}
    left = state["nodes"]["local"]
    assert left["workdir"] == f"/tmp/wally-run-{state['run_id']}/local"
    assert len(left["pids"]) == 2
    assert [p for p in left["pids"] if _alive(p, left["workdir"])] == []

    r = subprocess.run(
        [sys.executable, "-m", "loadgen", "cleanup", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "local: stopped 0 process(es)" in r.stdout
    assert _state(run_dir)["nodes"]["local"]["pids"] == []

    r = _cli(
        [sys.executable, "-m", "loadgen", "resume", str(run_dir), "--json"],
        influx,
        tmp_path,
        WALLY_TEST_RABBIT_PASSWORD=rabbitmq.password,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (it,) = json.loads(r.stdout)["iterations"]
    assert it["status"] == "done" and it["rpc"]["missing"] == {}
    c, s = it["rpc"]["client"], it["rpc"]["server"]
    assert c["msgs_ok"] > 0 and c["msgs_fail"] == 0 and s["msgs_ok"] == c["msgs_ok"]
    left = _state(run_dir)["nodes"]["local"]
    assert len(left["pids"]) == 2
    assert [p for p in left["pids"] if _alive(p, left["workdir"])] == []


def _alive(pid: int, tag: str) -> bool:
    """Whether `pid` is still one of the run's agents (its command line names the tag)."""
    try:
        return tag in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize(
    ("broker", "password", "expected"),
    [
        ("dead", "guest", r"does not answer"),
        ("live", "wrong", r"login refused \(wrong user or password\?\)"),
        ("live", None, r"rpc\.broker password: environment variable WALLY_TEST_RABBIT_PASSWORD"),
    ],
    ids=["no-answer", "wrong-password", "password-unset"],
)
def test_bad_broker_fails_pre_flight_before_anything_runs(
    rabbitmq: LocalBroker,
    influx,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    password: str | None,
    expected: str,
) -> None:
    settings = _broker(rabbitmq)
    if broker == "dead":
        settings["url"] = f"rabbit://127.0.0.1:{free_port()}/"
    lab = {
        "nodes": [{"uri": "local", "name": "loadgen", "roles": ["loadgen"]}],
        "rpc": {
            "broker": settings,
            "campaigns": [{"name": "b", "clients": [1], "servers": [1], "calls": CALLS}],
        },
    }
    plan = tmp_path / "lab.yaml"
    plan.write_text(yaml.safe_dump(lab, sort_keys=False))
    runs = tmp_path / "runs"
    env = {"WALLY_TEST_RABBIT_PASSWORD": password} if password is not None else {}
    monkeypatch.delenv("WALLY_TEST_RABBIT_PASSWORD", raising=False)
    cmd = [sys.executable, "-m", "loadgen", "run", str(plan), "--runs-dir", str(runs)]
    r = _cli(cmd, influx, tmp_path, **env)
    assert r.returncode == 1, r.stderr[-3000:]
    err = " ".join(r.stderr.split())  # the console wraps long lines
    assert "pre-flight failed, nothing was started" in err
    safe_url = settings["url"].replace("rabbit://", f"rabbit://{rabbitmq.user}@")
    assert re.search(rf"rpc broker {re.escape(safe_url)}: .*{expected}", err), err
    assert "Traceback" not in r.stderr
    # nothing half-run: no iteration started, no agent recorded or logged, no RPC points
    (run_dir,) = runs.iterdir()
    state = _state(run_dir)
    assert [it["status"] for it in state["iterations"].values()] == ["pending"]
    assert all(not n.get("pids") for n in state["nodes"].values())
    assert not (run_dir / "iterations").exists()
    assert _ticks(influx, run_dir.name) == 0

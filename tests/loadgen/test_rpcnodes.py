"""RPC agents over SSH on rpc-client/rpc-server nodes: real sshd nodes, real RabbitMQ and
InfluxDB, the real runner (without the collector, which other tests cover)."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from collector.engine import PreflightError
from collector.influx import InfluxClient
from collector.inventory import load_inventory
from collector.ssh import ClockSkew
from collector.writer import InfluxWriter
from loadgen.plan import compile_plan
from loadgen.rpc.broker import LocalBroker
from loadgen.rpc.controller import Placed, RpcTestSpec, placement
from loadgen.rpc.nodes import clock_pairs
from loadgen.rundir import RunDir
from loadgen.runner import Runner
from tests.fixtures.sshd import SKEW_S, SshdCluster

CALLS = 50
PASSWORD_ENV = "WALLY_TEST_RABBIT_PASSWORD"


def _lab(
    sshd: SshdCluster, broker: LocalBroker, campaign: dict[str, Any], agents: dict[str, Any]
) -> dict[str, Any]:
    lab = sshd.lab_config(roles=[["rpc-client"], ["rpc-server"], ["spare"]])
    lab["rpc"] = {
        "broker": {
            "url": f"rabbit://127.0.0.1:{broker.amqp_port}/",
            "user": broker.user,
            "password_env": PASSWORD_ENV,
        },
        "agents": agents,
        "campaigns": [campaign],
    }
    return lab


def _run(lab: dict[str, Any], tmp_path: Path, influx: InfluxClient) -> RunDir:
    """`loadgen run` in-process on the lab: the runner's pre-flight, iterations, cleanup."""
    text = yaml.safe_dump(lab, sort_keys=False)
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    inventory = load_inventory(path)
    rundir = RunDir.create(tmp_path / "runs", text, str(path))

    async def go() -> None:
        with InfluxWriter(influx, spool_dir=tmp_path / "spool") as writer:
            runner = Runner(
                inventory,
                compile_plan(inventory),
                influx,
                rundir,
                writer=writer,
                collect=False,
                console=Console(file=io.StringIO()),
            )
            await runner.run()

    asyncio.run(go())
    return rundir


def _alive(pid: int, tag: str) -> bool:
    """Whether `pid` is still one of this run's agents (its command line names the tag)."""
    try:
        return tag in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture
def rabbit_password(rabbitmq: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, rabbitmq.password)


def test_call_and_cast_agents_run_over_ssh_on_their_nodes(
    sshd_nodes: SshdCluster,
    rabbitmq: LocalBroker,
    rabbit_password: None,
    influx: InfluxClient,
    tmp_path: Path,
) -> None:
    campaign = {
        "name": "ssh",
        "test_type": ["rpc-call", "rpc-cast"],
        "clients": [2],
        "servers": [2],
        "calls": CALLS,
    }
    # the nodes' own `python3` (/usr/bin) need not have oslo.messaging: use ours, by path
    lab = _lab(sshd_nodes, rabbitmq, campaign, {"python": sys.executable})
    rundir = _run(lab, tmp_path, influx)
    state = rundir.state
    assert state.status == "done", {n: s.errors for n, s in state.iterations.items()}
    names = ["ssh-rpc-call-c2-s2", "ssh-rpc-cast-c2-s2"]
    assert list(state.iterations) == names
    for name in names:
        rpc = state.iterations[name].totals["rpc"]
        assert rpc["missing"] == {}
        assert rpc["client"]["msgs_ok"] == 2 * CALLS and rpc["client"]["msgs_fail"] == 0
        assert rpc["server"]["msgs_ok"] == 2 * CALLS and rpc["server"]["msgs_fail"] == 0
        # senders and receivers on different nodes: their clocks' difference is recorded
        skew = rpc["clock_skew"]
        assert [(p["sender"], p["receiver"]) for p in skew["pairs"]] == [("node0", "node1")]
        assert skew["max_ms"] >= 0 and skew["limit_ms"] == 1.0

    # every agent reported from its node: clients on node0, servers on node1
    df = influx.query_df(
        'SELECT "msgs_ok", "node", "agent", "side", "test" FROM "rpc" '
        'WHERE "run" = $run AND "agent" != \'all\' AND "test" =~ /summary$/',
        {"run": state.run_id},
    )
    assert len(df) == 2 * len(names) * 2
    for row in df.to_dict(orient="records"):
        assert row["node"] == ("node0" if row["side"] == "client" else "node1"), row
        assert row["msgs_ok"] == CALLS

    # 4 agents per node and iteration, each recorded by PID, and all gone
    for node in ("node0", "node1"):
        left = state.nodes[node]
        assert left.workdir == f"/tmp/wally-run-{state.run_id}/{node}"
        assert len(left.pids) == 2 * len(names)
        assert [p for p in left.pids if _alive(p, left.workdir)] == []
    logs = sorted(p.name for p in (rundir.path / "iterations" / names[0] / "agents").iterdir())
    assert logs == [f"{r}-{i}.log" for r in ("rpc-client", "rpc-server") for i in (0, 1)]


@pytest.mark.parametrize("executor", ["threading", "eventlet"])
def test_node_without_the_agents_python_modules_fails_preflight(
    sshd_nodes: SshdCluster,
    rabbitmq: LocalBroker,
    rabbit_password: None,
    influx: InfluxClient,
    tmp_path: Path,
    executor: str,
) -> None:
    # a real interpreter without oslo.messaging and hdrhistogram, and one that is not there
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bare = str(venv / "bin" / "python")
    agents = {
        "python": sys.executable,
        "node_python": {"node0": "/nonexistent/python3", "node1": bare},
    }
    campaign = {"name": "p", "clients": [1], "servers": [1], "calls": 5, "executor": executor}
    with pytest.raises(PreflightError) as err:
        _run(_lab(sshd_nodes, rabbitmq, campaign, agents), tmp_path, influx)
    problems = err.value.problems
    assert set(problems) == {"rpc node node0", "rpc node node1"}
    assert "/nonexistent/python3" in problems["rpc node node0"]
    assert "exit 127" in problems["rpc node node0"]
    why = problems["rpc node node1"]
    assert bare in why and "oslo_messaging (ModuleNotFoundError" in why
    assert "hdrh (ModuleNotFoundError" in why
    # the eventlet executor's agents need eventlet as well
    green = executor == "eventlet"
    assert ("eventlet (ModuleNotFoundError" in why) == green
    pip = "pip install oslo.messaging hdrhistogram" + (" eventlet)" if green else ")")
    assert pip in why


def test_one_way_latency_across_nodes_whose_clocks_differ_is_refused(
    sshd_nodes: SshdCluster,
    skewed_sshd: SshdCluster,
    rabbitmq: LocalBroker,
    rabbit_password: None,
    influx: InfluxClient,
    tmp_path: Path,
) -> None:
    campaign = {"name": "k", "test_type": ["rpc-cast"], "clients": [1], "servers": [1], "calls": 5}
    lab = _lab(sshd_nodes, rabbitmq, campaign, {"python": sys.executable})
    lab["nodes"][1]["roles"] = ["spare"]
    off = skewed_sshd.instances[0]
    lab["nodes"].append(
        {
            "uri": off.uri,
            "name": "late",
            "roles": ["rpc-server"],
            "key_file": str(skewed_sshd.key_path),
            "known_hosts": str(skewed_sshd.known_hosts),
        }
    )
    with pytest.raises(PreflightError) as err:
        _run(lab, tmp_path, influx)
    # the receiver's sessions run SKEW_S ahead (libfaketime): every cast would look late
    why = err.value.problems["rpc clocks node0/late"]
    ms = re.search(r"differ by ([-+][0-9.]+) ms", why)
    assert ms is not None, why
    assert float(ms.group(1)) == pytest.approx(SKEW_S * 1e3, abs=500)
    assert "max_clock_skew 1 ms" in why


# --- pure logic: placement and clock pairs ------------------------------------------------


def test_agents_are_spread_round_robin_and_a_side_without_nodes_is_local() -> None:
    spec = RpcTestSpec(url="", test_type="rpc-cast", clients=3, servers=2, topics=2)
    placed = placement(spec, ["c1", "c2"], [], "local")
    assert placed == {
        "rpc-server-0": Placed("local", 0, False),
        "rpc-server-1": Placed("local", 1, False),
        "rpc-client-0": Placed("c1", 0, True),
        "rpc-client-1": Placed("c2", 1, True),
        "rpc-client-2": Placed("c1", 0, True),
    }


def test_clock_pairs_are_sender_receiver_nodes_sharing_a_topic() -> None:
    placed = {
        "rpc-server-0": Placed("s1", 0, False),
        "rpc-server-1": Placed("s2", 1, False),
        "rpc-client-0": Placed("c1", 0, True),
        "rpc-client-1": Placed("s2", 1, True),  # same node as its receiver: no pair
    }
    skews = {
        "s1": ClockSkew(0.004, 0.0005),
        "s2": ClockSkew(0.0, 0.0001),
        "c1": ClockSkew(0.001, 0.0005),
    }
    (pair,) = clock_pairs(placed, skews)
    assert (pair.sender, pair.receiver) == ("c1", "s1")
    assert pair.offset == pytest.approx(0.003) and pair.error == pytest.approx(0.001)
    assert pair.bound == pytest.approx(0.004)
    # refused only when certainly above the limit: 3 ms ± 1 ms
    assert pair.too_far(0.0015) and not pair.too_far(0.002)
    text = pair.describe(0.0015)
    assert "c1" in text and "s1" in text and "+3.000 ms" in text and "1.5 ms" in text

"""RPC agents as real processes: open-loop latency without coordinated omission, and an
agent's exit when its controller falls silent without closing the connection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collector.lineproto import Point
from loadgen.rpc.broker import LocalBroker
from loadgen.rpc.controller import Controller, RpcTestSpec

RATE = 50.0
STALL_S = 1.0


def test_open_loop_latency_counts_a_server_stall_from_intended_send_times(
    rabbitmq: LocalBroker,
) -> None:
    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type="rpc-call",
        clients=1,
        servers=1,
        calls=None,
        duration=3.0,
        rate=RATE,
        record_raw=True,
    )
    loading = threading.Event()
    stalled: list[float] = []

    def sink(points: list[Point]) -> None:
        if any(p.tags["side"] == "client" and p.fields.get("msgs_ok") for p in points):
            loading.set()

    ctl = Controller(spec, sink=sink)
    ctl.spawn_local()
    server = ctl.procs["rpc-server-0"].pid

    def stall() -> None:
        """Freeze the server (by its PID) for STALL_S once the client's calls flow."""
        if not loading.wait(60):
            return
        os.kill(server, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            time.sleep(STALL_S)
        finally:
            os.kill(server, signal.SIGCONT)
            stalled.append(time.monotonic() - t0)

    staller = threading.Thread(target=stall)
    staller.start()
    try:
        result = ctl.run()
    finally:
        loading.set()
        staller.join()
    assert result.missing == {}
    assert len(stalled) == 1, "the client's calls never showed in a tick: nothing was stalled"
    stall_s = stalled[0]
    client = result.agents["rpc-client-0"]
    assert client.stats is not None and client.raw is not None
    assert client.stats.msgs_ok == RATE * spec.duration and client.stats.msgs_fail == 0
    # Calls due while the server was frozen waited behind it: measured from their intended
    # send times they are ~RATE x stall latencies spread from ~stall down to ~0. Measured
    # from the actual send (coordinated omission) only the one call in flight would show it.
    assert stall_s - 0.05 <= max(client.raw) <= stall_s + 1.0
    spread = [v for v in client.raw if stall_s / 4 < v < stall_s * 3 / 4]
    assert len(spread) >= RATE * stall_s / 4, sorted(client.raw)[-60:]


def _agent(port: int, name: str, executor: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "loadgen.rpc.agent", "--controller", f"127.0.0.1:{port}"]
    cmd += ["--name", name, "--heartbeat", "0.5", "--silence-timeout", "2"]
    cmd += ["--executor", executor]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(
    ("after_hello", "executor", "exit_code"),
    [
        # connected, never configured
        ("nothing", "threading", 3),
        # a server configured and ready, never started
        ("config", "threading", 4),
        # a client started on a long open-loop run, also with green threads
        ("start", "threading", 4),
        ("start", "eventlet", 4),
    ],
)
def test_agent_exits_when_its_controller_goes_silent(
    rabbitmq: LocalBroker, tmp_path: Path, after_hello: str, executor: str, exit_code: int
) -> None:
    """The controller's socket stays open but says nothing more: the agent must not wait
    for it forever (a hung or stopped loadgen must not leave agents behind)."""
    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type="rpc-cast",
        calls=None,
        duration=600.0,
        rate=20.0,
        executor=executor,
    )
    name = "rpc-server-0" if after_hello == "config" else "rpc-client-0"
    # what the real controller would send this agent (it is closed at once: silent peer)
    template = Controller(spec)
    template.close()
    config = template.agents[name].config
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        log = tmp_path / "agent.log"
        proc = _agent(listener.getsockname()[1], name, executor, log)
        try:
            conn, _ = listener.accept()
            with conn, conn.makefile("r", encoding="utf-8") as rfile:
                hello = json.loads(rfile.readline())
                assert (hello["type"], hello["name"], hello["pid"]) == ("hello", name, proc.pid)
                if after_hello != "nothing":
                    conn.sendall(json.dumps({"type": "config", "config": config}).encode() + b"\n")
                    assert json.loads(rfile.readline())["type"] == "ready"
                if after_hello == "start":
                    start = {"type": "start", "at": time.time()}
                    conn.sendall(json.dumps(start).encode() + b"\n")
                silent = time.monotonic()
                # silence (the agent's heartbeats are not read): the agent exits by itself
                rc = proc.wait(timeout=20)
                took = time.monotonic() - silent
                said = [json.loads(line)["type"] for line in rfile]  # until the agent's EOF
            assert rc == exit_code, log.read_text(errors="replace")
            # silence timeout (2 s), then at most the broker connection's close
            assert took >= 2.0 - 0.25
            # the client ran until the silence, then reported and said goodbye
            if after_hello == "start":
                assert {"tick", "result"} <= set(said) and said[-1] == "bye", said
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

"""RPC iterations inside `loadgen run`: one controller per iteration, results into InfluxDB.

The runner hands RPC iterations (from the plan's `rpc:` section) to `RpcExecutor`. For each
one it starts the agents where the plan places them: senders on the `rpc-client` nodes,
receivers on the `rpc-server` nodes (round-robin), over SSH with the agent's code sent along
with the command (`loadgen.rpc.nodes`); the `local` node, and a side without such nodes, get
local processes. Agents reach the controller (on the loadgen machine's loopback) through
SSH reverse port forwarding, so no port of ours needs to be reachable from the nodes. Every
agent is started through `NodeConnection.start` and its node and PID go into run.json before
the load starts, its output into the run directory (`iterations/NAME/agents/AGENT.log`).

Pre-flight checks each agent node's Python (oslo.messaging, hdrhistogram) and, where one-way
latency is measured between different nodes (rpc-cast, rpc-fanout, notify), the clocks:
a sender/receiver node pair further apart than `rpc.agents.max_clock_skew` is refused. The
pairs' measured skew is kept with the iteration's totals (also for rpc-call, whose server
side latency is one-way) as the uncertainty of those latencies.

While the test runs the agents' per-second `rpc` points (and `rpc_errors`, failures by
exception type) go to the writer; at the end the merged per-iteration summary (`rpc` and
`rpc_errors`, test=NAME/summary), the distribution (`rpc_hist`) and
the `wally_test` record that selects sensor data by the iteration's window. Ctrl+C closes
the controller, which stops every agent, and any agent still running after a grace period
is killed by PID; agents also exit on their own when their controller disappears, so
nothing outlives a killed `loadgen`, and `loadgen cleanup` kills recorded PIDs that remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from collector import schema
from collector.influx import InfluxError
from collector.inventory import LOCAL, Inventory, Node
from collector.lineproto import Point
from collector.ombt import distribution_points
from collector.ssh import ClockSkew, NodeConnection, NodeProcess, SshError, connect, measure_skew
from collector.writer import InfluxWriter
from loadgen.plan import CompiledPlan
from loadgen.rpc.broker import BrokerError, check_url
from loadgen.rpc.controller import Controller, Placed, RpcTestError, RpcTestResult, placement
from loadgen.rpc.nodes import ClockPair, agent_command, check_python, clock_pairs, modules_for
from loadgen.rpcplan import BrokerSettings, RpcIteration
from loadgen.rundir import RUNNING, IterationState, RunDir

# How long a Ctrl+C waits for the controller thread after closing it.
STOP_WAIT_S = 30.0
# How long agents told to stop may take to exit before they are killed by PID (an agent
# gives its broker connection up to 10 s to close).
AGENT_EXIT_S = 15.0
_LOG_TAIL = 400
# How often the agents' per-second points are pushed to InfluxDB during a test.
LIVE_FLUSH_S = 1.0


def agent_node(inventory: Inventory | None, name: str) -> Node:
    """The inventory's node `name`; `local` (agents of a side without nodes) is this machine
    even when the inventory has no node of that name."""
    known = inventory is not None and any(n.name == name for n in inventory)
    if name == LOCAL and not known:
        return Node(LOCAL, ())
    if inventory is None:
        raise KeyError(f"no node named {name!r}")
    return inventory.node(name)


def totals(result: RpcTestResult) -> dict[str, Any]:
    """What run.json and `loadgen run --json` keep of an iteration: merged numbers per side."""
    out: dict[str, Any] = {"agents": len(result.agents), "missing": result.missing}
    for side in ("client", "server"):
        merged = result.merged(side)
        out[side] = {**merged.summary_fields(), "errors": dict(merged.errors)}
    return {"rpc": out}


class RpcExecutor:
    """Runs the RPC iterations of one `loadgen run`. `workdir(node)` is the run's work dir
    on a node: agents name it on their command line so `loadgen cleanup` knows them."""

    def __init__(
        self,
        rundir: RunDir,
        writer: InfluxWriter,
        status: Callable[[str], None] | None = None,
        *,
        inventory: Inventory | None = None,
        workdir: Callable[[str], str] | None = None,
    ) -> None:
        self.rundir = rundir
        self.writer = writer
        self.status = status or (lambda message: None)
        self.inventory = inventory
        self.workdir = workdir or (lambda node: f"/tmp/wally-run-{rundir.state.run_id}/{node}")
        self.conns: dict[str, NodeConnection] = {}
        self._counts: dict[str, int] = {}
        self._procs: dict[str, NodeProcess] = {}
        self._logs: list[asyncio.Task[None]] = []
        self._forwards: list[Callable[[], None]] = []

    async def preflight(self, plan: CompiledPlan) -> dict[str, str]:
        """Log in to every broker the plan uses once, connect to every agent node and check
        its Python, and the clocks of node pairs measuring one-way latency: all problems, by
        `rpc broker URL`, `rpc node NAME` and `rpc clocks SENDER/RECEIVER`."""
        its = [it for it in plan if isinstance(it, RpcIteration)]
        brokers: dict[str, BrokerSettings] = {it.broker.safe_url: it.broker for it in its}
        problems: dict[str, str] = {}
        for safe, broker in brokers.items():
            try:
                await asyncio.to_thread(check_url, broker.resolved_url())
            except (BrokerError, InfluxError, ValueError) as e:  # InfluxError: password unset
                problems[f"rpc broker {safe}"] = str(e)
        bad = await self._connect(its)
        problems.update({f"rpc node {n}": why for n, why in bad.items()})
        if not bad:
            measured: dict[str, ClockSkew] = {}
            for it in its:
                for pair in await self._clocks(it, measured):
                    if it.one_way and pair.too_far(it.agents.max_clock_skew):
                        key = f"rpc clocks {pair.sender}/{pair.receiver}"
                        problems[key] = pair.describe(it.agents.max_clock_skew)
        return problems

    @staticmethod
    def _nodes_of(it: RpcIteration) -> list[str]:
        return sorted({p.node for p in _placed(it).values()})

    async def _connect(self, its: Sequence[RpcIteration]) -> dict[str, str]:
        """Connect to the iterations' agent nodes not yet connected and check that their
        Python imports what those iterations' agents need: what is wrong, by node (local
        nodes run the loadgen's own interpreter: nothing to check)."""
        pythons: dict[str, str] = {}
        executors: dict[str, set[str]] = {}
        for it in its:
            for n in self._nodes_of(it):
                pythons[n] = it.agents.python_on(n)
                executors.setdefault(n, set()).add(it.executor)

        async def one(name: str) -> str | None:
            try:
                node = agent_node(self.inventory, name)
            except KeyError as e:
                return str(e)
            try:
                conn = await connect(node)
            except SshError as e:
                return str(e)
            self.conns[name] = conn
            if node.is_local:
                return None
            return await check_python(conn, pythons[name], modules_for(executors[name]))

        todo = [n for n in sorted(pythons) if n not in self.conns or self.conns[n].closed]
        found = await asyncio.gather(*(one(n) for n in todo))
        return {n: why for n, why in zip(todo, found, strict=True) if why}

    async def _clocks(
        self, it: RpcIteration, measured: dict[str, ClockSkew] | None = None
    ) -> list[ClockPair]:
        """Clock differences of the iteration's sender/receiver node pairs; nodes not in
        `measured` are measured now (and added to it)."""
        placed = _placed(it)
        measured = {} if measured is None else measured
        nodes = sorted({p.node for p in placed.values()})
        if len(nodes) < 2:
            return []

        async def skew(name: str) -> ClockSkew:
            conn = self.conns[name]
            return ClockSkew(0.0, 0.0) if conn.node.is_local else await measure_skew(conn)

        todo = [n for n in nodes if n not in measured]
        measured.update(zip(todo, await asyncio.gather(*(skew(n) for n in todo)), strict=True))
        return clock_pairs(placed, measured)

    async def close(self) -> None:
        """Close the connections to the agent nodes (at the end of the run)."""
        conns, self.conns = list(self.conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    def _sink(self, points: list[Point]) -> None:
        self.writer.write(points)
        for p in points:
            if p.measurement == schema.RPC.name and not p.tags["test"].endswith("/summary"):
                key = "sent" if p.tags["side"] == "client" else "received"
                self._counts[key] = self._counts.get(key, 0) + int(p.fields.get("msgs_ok", 0))
                if p.fields.get("msgs_fail"):
                    self._counts["failed"] = self._counts.get("failed", 0) + p.fields["msgs_fail"]
        self.status(", ".join(f"{v:,} {k}" for k, v in self._counts.items()))

    async def run(
        self, it: RpcIteration, st: IterationState, stop: asyncio.Event
    ) -> dict[str, Any] | None:
        """Run one iteration; its totals, or None if agents went missing or `stop` was set
        (the reasons are in `st.errors`). Roll call, broker, node and clock failures raise."""
        spec = it.spec(it.broker.resolved_url(), self.rundir.state.run_id)
        self._counts = {}
        bad = await self._connect([it])
        if bad:
            raise RpcTestError("; ".join(f"rpc node {n}: {why}" for n, why in bad.items()))
        pairs = await self._clocks(it)
        limit = it.agents.max_clock_skew
        if it.one_way and any(p.too_far(limit) for p in pairs):
            raise RpcTestError("; ".join(p.describe(limit) for p in pairs if p.too_far(limit)))
        st.status = RUNNING
        st.start_ns = time.time_ns()
        self.rundir.save()
        ctl = Controller(
            spec, sink=self._sink, logdir=self.rundir.path / "iterations" / it.name / "agents"
        )
        try:
            await self._start_agents(ctl, it)
            result = await self._follow(ctl, stop)
        finally:
            await asyncio.to_thread(ctl.close)
            await self._stop_agents()
        if result is None:
            return None
        st.end_ns = time.time_ns()
        node = socket.gethostname()
        for side in ("client", "server"):
            tags = {
                "run": spec.run,
                "test": f"{it.name}/summary",
                "node": node,
                "side": side,
                "call_type": it.test_type,
            }
            dist = result.merged(side).ombt_distribution()
            self.writer.write(distribution_points(dist, tags, int(result.end * 1e9)))
        if result.missing:
            st.errors = dict(result.missing)
            return None
        out = totals(result)
        if pairs:
            out["rpc"]["clock_skew"] = {
                "max_ms": max(p.bound for p in pairs) * 1e3,
                "limit_ms": limit * 1e3,
                "pairs": [
                    {
                        "sender": p.sender,
                        "receiver": p.receiver,
                        "offset_ms": p.offset * 1e3,
                        "error_ms": p.error * 1e3,
                    }
                    for p in pairs
                ],
            }
        return out

    async def _follow(self, ctl: Controller, stop: asyncio.Event) -> RpcTestResult | None:
        """The controller's test, or None when `stop` is set first (the agents are told to
        stop; the caller makes sure they are gone). The agents' per-second points are sent
        to InfluxDB every second meanwhile, so live dashboards follow the test."""
        running = asyncio.create_task(asyncio.to_thread(ctl.run))
        stopper = asyncio.create_task(stop.wait())
        flusher = asyncio.create_task(self._flush_every(LIVE_FLUSH_S))
        try:
            done, _ = await asyncio.wait(
                [running, stopper, flusher], return_when=asyncio.FIRST_COMPLETED
            )
            if stopper in done:
                await asyncio.to_thread(ctl.close)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(running, STOP_WAIT_S)
                return None
            if flusher in done:  # InfluxDB rejected points: stop the test, say why
                await asyncio.to_thread(ctl.close)
                flusher.result()
            return running.result()
        finally:
            stopper.cancel()
            flusher.cancel()

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self.writer.flush)

    async def _start_agents(self, ctl: Controller, it: RpcIteration) -> None:
        """Start every agent on its node, each reaching the controller through a port
        forwarded back to it; node and PID of each go into run.json at once."""
        logdir = ctl.ensure_logdir()
        placed = _placed(it)
        ports: dict[str, int] = {}
        for name in sorted({p.node for p in placed.values()}):
            port, close = await self.conns[name].forward_back(ctl.address[1])
            self._forwards.append(close)
            ports[name] = port
            left = self.rundir.state.node(name)
            left.workdir = left.workdir or self.workdir(name)
        self.status(f"starting {len(placed)} agents on {', '.join(sorted(ports))}")

        async def start(agent: str, node: str) -> None:
            conn = self.conns[node]
            python = None if conn.node.is_local else it.agents.python_on(node)
            tag = self.rundir.state.node(node).workdir
            args = ctl.agent_args(agent, ports[node], tag)
            proc = await conn.start(agent_command(args, python))
            self._procs[agent] = proc
            self.rundir.state.node(node).pids.append(proc.pid)
            if node != LOCAL:
                ctl.agents[agent].node = node
            log = logdir / f"{agent}.log"
            self._logs.append(asyncio.create_task(_keep_log(ctl, agent, proc, log)))

        try:
            await asyncio.gather(*(start(a, p.node) for a, p in placed.items()))
        finally:
            self.rundir.save()

    async def _stop_agents(self) -> None:
        """Wait for the agents to exit (they were told to); kill those that do not, by PID."""
        procs, self._procs = self._procs, {}
        logs, self._logs = self._logs, []
        if logs:
            await asyncio.wait(logs, timeout=AGENT_EXIT_S)
        alive = [p for p in procs.values() if p.returncode is None]
        await asyncio.gather(*(p.stop(grace=3.0) for p in alive), return_exceptions=True)
        if logs:
            await asyncio.wait(logs, timeout=5.0)
        for close in self._forwards:
            with contextlib.suppress(Exception):
                close()
        self._forwards = []

    def record(self, it: RpcIteration, st: IterationState) -> list[Point]:
        """The iteration's `wally_test` record (kind=rpc): its window and parameters, with
        the clock skew that one-way latencies are uncertain by when agents spanned nodes."""
        now = time.time_ns()
        params = it.params()
        skew = st.totals.get("rpc", {}).get("clock_skew")
        if skew:
            params["clock_skew_max_ms"] = skew["max_ms"]
        return [
            Point(
                schema.WALLY_TEST.name,
                {
                    "run": self.rundir.state.run_id,
                    "test": it.name,
                    "node": socket.gethostname(),
                    "kind": "rpc",
                    "status": st.status,
                },
                {
                    "start": st.start_ns or now,
                    "end": st.end_ns or now,
                    "iteration": it.index,
                    "params": json.dumps(params, sort_keys=True),
                },
                st.start_ns or now,
            )
        ]


def _placed(it: RpcIteration) -> dict[str, Placed]:
    return placement(it.spec("", ""), it.client_nodes, it.server_nodes, LOCAL)


async def _keep_log(ctl: Controller, agent: str, proc: NodeProcess, path: Path) -> None:
    """Copy the agent's output to its log file; when it ends, tell the controller how (an
    agent that dies before connecting is reported with its last words)."""
    tail = b""
    with path.open("wb") as log, contextlib.suppress(SshError):
        async for chunk in proc.chunks():
            log.write(chunk)
            log.flush()
            tail = (tail + chunk)[-_LOG_TAIL:]
    try:
        rc = await proc.wait()
    except SshError:
        rc = None
    last = tail.decode(errors="replace").strip().splitlines()[-1:]
    ctl.exits[agent] = f"exited with {rc}" + (f" ({last[0]})" if last else "")


def summary_table(rundir: RunDir) -> Table | None:
    """The RPC iterations of a run: messages, rate and latency per side (None if none)."""
    rows = [st for st in rundir.state.iterations.values() if "rpc" in st.totals]
    if not rows:
        return None
    table = Table(title=f"run {rundir.state.run_id}: RPC")
    cols = ("test", "status", "sent ok", "failed", "received", "msg/s", "p50 ms", "p99 ms")
    for col in cols:
        table.add_column(col, justify="left" if col in ("test", "status") else "right")
    for st in rows:
        c, s = st.totals["rpc"]["client"], st.totals["rpc"]["server"]
        table.add_row(
            st.name,
            st.status,
            f"{c['msgs_ok']:,}",
            f"{c['msgs_fail']:,}",
            f"{s['msgs_ok']:,}",
            f"{c['rate']:,.0f}",
            *(f"{c[k]:.3f}" if k in c else "-" for k in ("lat_p50", "lat_p99")),
        )
    return table

"""RPC iterations inside `loadgen run`: one controller per iteration, results into InfluxDB.

The runner hands RPC iterations (from the plan's `rpc:` section) to `RpcExecutor`. For each
one it starts the agents as local processes (tracked by PID by the controller, their logs
kept in the run directory), forwards their per-second `rpc` points to the writer while the
test runs, then writes the merged per-iteration summary (`rpc`, test=NAME/summary) and
distribution (`rpc_hist`), and the `wally_test` record that selects sensor data by the
iteration's window. Ctrl+C closes the controller, which stops every agent; agents also exit
on their own when their controller disappears, so nothing outlives a killed `loadgen`.
Agents run on the loadgen machine only (not yet over SSH on rpc-client/rpc-server nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from rich.table import Table

from collector import schema
from collector.lineproto import Point
from collector.ombt import distribution_points
from collector.writer import InfluxWriter
from loadgen.plan import CompiledPlan
from loadgen.rpc.broker import BrokerError, check_url
from loadgen.rpc.controller import Controller, RpcTestResult
from loadgen.rpcplan import BrokerSettings, RpcIteration
from loadgen.rundir import RUNNING, IterationState, RunDir

# How long a Ctrl+C waits for the controller thread after closing it.
STOP_WAIT_S = 30.0


def totals(result: RpcTestResult) -> dict[str, Any]:
    """What run.json and `loadgen run --json` keep of an iteration: merged numbers per side."""
    out: dict[str, Any] = {"agents": len(result.agents), "missing": result.missing}
    for side in ("client", "server"):
        merged = result.merged(side)
        out[side] = {**merged.summary_fields(), "errors": dict(merged.errors)}
    return {"rpc": out}


class RpcExecutor:
    """Runs the RPC iterations of one `loadgen run`."""

    def __init__(
        self, rundir: RunDir, writer: InfluxWriter, status: Callable[[str], None] | None = None
    ) -> None:
        self.rundir = rundir
        self.writer = writer
        self.status = status or (lambda message: None)
        self._counts: dict[str, int] = {}

    async def preflight(self, plan: CompiledPlan) -> dict[str, str]:
        """Log in to every broker the plan uses once: problems by `rpc broker URL`."""
        brokers: dict[str, BrokerSettings] = {
            it.broker.safe_url: it.broker for it in plan if isinstance(it, RpcIteration)
        }
        problems: dict[str, str] = {}
        for safe, broker in brokers.items():
            try:
                await asyncio.to_thread(check_url, broker.resolved_url())
            except (BrokerError, ValueError) as e:
                problems[f"rpc broker {safe}"] = str(e)
        return problems

    def _sink(self, points: list[Point]) -> None:
        self.writer.write(points)
        for p in points:
            if not p.tags["test"].endswith("/summary"):
                key = "sent" if p.tags["side"] == "client" else "received"
                self._counts[key] = self._counts.get(key, 0) + int(p.fields.get("msgs_ok", 0))
                if p.fields.get("msgs_fail"):
                    self._counts["failed"] = self._counts.get("failed", 0) + p.fields["msgs_fail"]
        self.status(", ".join(f"{v:,} {k}" for k, v in self._counts.items()))

    async def run(
        self, it: RpcIteration, st: IterationState, stop: asyncio.Event
    ) -> dict[str, Any] | None:
        """Run one iteration; its totals, or None if agents went missing or `stop` was set
        (the reasons are in `st.errors`). Roll call and broker failures raise."""
        spec = it.spec(it.broker.resolved_url(), self.rundir.state.run_id)
        logdir = self.rundir.path / "iterations" / it.name / "agents"
        self._counts = {}
        st.status = RUNNING
        st.start_ns = time.time_ns()
        self.rundir.save()
        ctl = Controller(spec, sink=self._sink, logdir=logdir)
        ctl.spawn_local()
        running = asyncio.create_task(asyncio.to_thread(ctl.run))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([running, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            await asyncio.to_thread(ctl.close)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, STOP_WAIT_S)
            return None
        stopper.cancel()
        result = running.result()
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
        return totals(result)

    def record(self, it: RpcIteration, st: IterationState) -> list[Point]:
        """The iteration's `wally_test` record (kind=rpc): its window and parameters."""
        now = time.time_ns()
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
                    "params": json.dumps(it.params(), sort_keys=True),
                },
                st.start_ns or now,
            )
        ]


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

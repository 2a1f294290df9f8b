"""`loadgen run`: a compiled plan run across the test nodes while the collector watches.

Order of work: connect and check every node (fio, targets, space, clock skew) and report all
problems at once before anything starts; start the collector on every node of the lab; for
each iteration start fio on all its nodes at the same moment, show live per-node IOPS and
p99 from fio's interim json+ documents, fetch the outputs, write the points and a test
record per node, and save the state. A failing iteration is retried once, then marked
failed, and the plan goes on (unless fail-fast). Ctrl+C or an error stops fio on every node
by PID, removes what the run created (unless keep-files), keeps what was measured, and
marks the run interrupted; `loadgen resume` continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from rich.console import Console, Group
from rich.table import Table

from collector import schema
from collector.engine import Collector, PreflightError
from collector.influx import InfluxClient
from collector.inventory import Inventory
from collector.lineproto import Point
from collector.sensors import configured_intervals
from collector.ssh import NodeConnection, SshError, connect
from collector.writer import InfluxWriter
from loadgen import fionode, rbd
from loadgen.jobfile import render, target_options
from loadgen.plan import CompiledPlan, Iteration, Target, format_size
from loadgen.results import IterationTotals, ingest_iteration
from loadgen.rpcplan import RpcIteration, watched_nodes
from loadgen.rpcrun import RpcExecutor
from loadgen.rundir import DONE, FAILED, INTERRUPTED, PENDING, RUNNING, IterationState, RunDir

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    pass


@dataclass
class NodeLive:
    status: str = "idle"
    iops: float = 0.0
    p99_ns: float | None = None


@dataclass
class Progress:
    """What the live view shows."""

    total: int
    done: int = 0
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    remaining_s: float = 0.0
    nodes: dict[str, NodeLive] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Fill:
    """How to prefill one node's target: what `prefilled` records it as (file path or
    rbd:POOL/IMAGE), the job, fio's environment, and whether `prefill: auto` wants it (a
    file shorter than the suite's size, an RBD image this run created)."""

    key: str
    job: str
    env: dict[str, str]
    auto: bool


class Runner:
    def __init__(
        self,
        inventory: Inventory,
        plan: CompiledPlan,
        client: InfluxClient,
        rundir: RunDir,
        *,
        writer: InfluxWriter,
        keep_files: bool = False,
        fail_fast: bool = False,
        retries: int = 1,
        collect: bool = True,
        console: Console | None = None,
    ) -> None:
        self.inventory = inventory
        self.plan = plan
        self.client = client
        self.rundir = rundir
        self.writer = writer
        self.keep_files = keep_files
        self.fail_fast = fail_fast
        self.retries = retries
        self.collect = collect
        self.console = console or Console(stderr=True)
        self.conns: dict[str, NodeConnection] = {}
        self.collector: Collector | None = None
        self.progress = Progress(total=len(plan))
        self.running: dict[str, fionode.NodeProcess] = {}
        self.ceph = rbd.ceph_clients(inventory)
        # (node, POOL/IMAGE) -> image size, for RBD images found (not created) by this run.
        self._rbd_sizes: dict[tuple[str, str], int] = {}
        self._stop = asyncio.Event()
        self.rpc = RpcExecutor(
            rundir,
            writer,
            lambda m: setattr(self.progress, "message", m),
            inventory=inventory,
            workdir=self.workdir,
        )
        state = rundir.state
        for it in plan:
            state.iterations.setdefault(it.name, IterationState(it.name, nodes=list(it.nodes)))

    @property
    def test_nodes(self) -> list[str]:
        return sorted({n for it in self.plan for n in it.nodes})

    def workdir(self, node: str) -> str:
        """Per run and node: several nodes may share one machine (and one /tmp)."""
        return f"/tmp/wally-run-{self.rundir.state.run_id}/{node}"

    def stop(self) -> None:
        self._stop.set()

    # --- the whole run ------------------------------------------------------------------

    async def run(self) -> None:
        state = self.rundir.state
        state.status = RUNNING
        state.influx_url, state.database = self.client.url, self.client.database
        self.rundir.save()
        try:
            await self._preflight()
            collecting = asyncio.create_task(self.collector.run()) if self.collector else None
            try:
                for it in self.plan:
                    if state.iterations[it.name].status == DONE:
                        self.progress.done += 1
                        continue
                    if self._stop.is_set():
                        raise RunInterrupted()
                    await self._iteration(it)
                    self.progress.done += 1
            finally:
                if self.collector:
                    self.collector.stop()
                if collecting:
                    await asyncio.gather(collecting, return_exceptions=True)
            state.status = (
                FAILED if any(s.status == FAILED for s in state.iterations.values()) else DONE
            )
        except (RunInterrupted, asyncio.CancelledError):
            state.status = INTERRUPTED
            raise RunInterrupted() from None
        except BaseException:
            state.status = INTERRUPTED
            raise
        finally:
            await self._stop_fio()
            await self._cleanup_nodes()
            for it in state.iterations.values():
                if it.status == RUNNING:
                    it.status = INTERRUPTED
            state.ended_ns = time.time_ns()
            self.rundir.save()
            await asyncio.gather(*(c.close() for c in self.conns.values()), return_exceptions=True)
            await self.rpc.close()

    async def _preflight(self) -> None:
        """Connect, check fio/targets/space on test nodes and clocks on all: all problems at once."""
        problems: dict[str, str] = {}
        nodes = {n.name: n for n in self.inventory}
        results = await asyncio.gather(
            *(connect(nodes[n]) for n in self.test_nodes), return_exceptions=True
        )
        for name, res in zip(self.test_nodes, results, strict=True):
            if isinstance(res, SshError):
                problems[name] = str(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                self.conns[name] = res

        async def check(name: str) -> None:
            its = [it for it in self.plan if name in it.nodes]
            found = await fionode.preflight(self.conns[name], its, self.workdir(name))
            found += await rbd.preflight(self.conns[name], self.ceph[name], its)
            if found:
                problems[name] = "; ".join(found)

        await asyncio.gather(*(check(n) for n in self.conns))
        if self.collect:
            self.collector = Collector(
                self.inventory,
                sink=self.writer.write,
                sensors=configured_intervals(self.inventory),
                nodes=watched_nodes(self.inventory, self.plan),
            )
            try:
                await self.collector.prepare()
            except PreflightError as e:
                for node, msg in e.problems.items():
                    problems[node] = f"{problems[node]}; {msg}" if node in problems else msg
        problems.update(await self.rpc.preflight(self.plan))
        if problems:
            raise PreflightError(problems)
        for name in self.conns:
            self.rundir.state.node(name).workdir = self.workdir(name)
            self.progress.nodes[name] = NodeLive()
        self.rundir.save()

    # --- one iteration ------------------------------------------------------------------

    async def _iteration(self, it: Iteration) -> None:
        st = self.rundir.state.iterations[it.name]
        self.progress.current = it.name
        self.progress.remaining_s = sum(
            i.expected_duration
            for i in self.plan
            if self.rundir.state.iterations[i.name].status != DONE
        )
        for attempt in range(self.retries + 1):
            st.attempts += 1
            st.errors = {}
            try:
                if isinstance(it, RpcIteration):
                    totals = await self.rpc.run(it, st, self._stop)
                    if self._stop.is_set():
                        raise RunInterrupted()
                else:
                    await self._prefill(it)
                    totals = await self._run_once(it, st)
            except RunInterrupted:
                st.status = INTERRUPTED
                raise
            except (SshError, OSError, ValueError, RuntimeError) as e:
                st.errors = {"*": str(e)}
                totals = None
            if totals is not None:
                st.status = DONE
                st.totals = totals if isinstance(totals, dict) else totals.to_dict()
                self._record(it, st)
                self.rundir.save()
                return
            log.warning("%s failed (attempt %d): %s", it.name, attempt + 1, st.errors)
        st.status = FAILED
        self._record(it, st)
        self.rundir.save()
        if self.fail_fast:
            raise RuntimeError(f"{it.name} failed on {', '.join(st.errors)}: {st.errors}")

    async def _run_once(self, it: Iteration, st: IterationState) -> IterationTotals | None:
        jobs = {
            node: render(it, node, f"{self.workdir(node)}/{it.name}", self.workdir(node))
            for node in it.nodes
        }
        for node, job in jobs.items():
            self.rundir.state.node(node).dirs.append(str(PurePosixPath(job.path).parent))
        st.status = RUNNING
        st.start_ns = time.time_ns()
        self.rundir.save()
        procs = await asyncio.gather(
            *(fionode.start_fio(self.conns[n], jobs[n], self._fio_env(it, n)) for n in it.nodes)
        )
        for node, proc in zip(it.nodes, procs, strict=True):
            self.running[node] = proc
            self.rundir.state.node(node).pids.append(proc.pid)
        self.rundir.save()
        watchers = [
            asyncio.create_task(self._watch(node, proc))
            for node, proc in zip(it.nodes, procs, strict=True)
        ]
        stopper = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([*watchers, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            for w in watchers:
                w.cancel()
            raise RunInterrupted()
        results = await asyncio.gather(*watchers, return_exceptions=True)
        stopper.cancel()
        st.end_ns = time.time_ns()
        for node, res in zip(it.nodes, results, strict=True):
            self.running.pop(node, None)
            if isinstance(res, BaseException):
                st.errors[node] = str(res)
        if st.errors:
            return None
        for node, job in jobs.items():
            await fionode.fetch(self.conns[node], job, self.rundir.iteration_dir(it.name, node))
        return ingest_iteration(
            self.writer,
            self.rundir.path / "iterations" / it.name,
            list(it.nodes),
            {
                "run": self.rundir.state.run_id,
                "test": it.name,
                "bs": format_size(it.bs),
                "qd": str(it.iodepth),
            },
        )

    async def _watch(self, node: str, proc: fionode.NodeProcess) -> None:
        """Follow one fio: live numbers from its interim documents, its final JSON kept."""
        live = self.progress.nodes[node]
        live.status = "running"
        prev = None
        stream = fionode.JsonStream()
        async for chunk in proc.chunks():
            for doc in stream.feed(chunk):
                delta = fionode.live_delta(prev, doc)
                live.iops, live.p99_ns = delta.iops, delta.p99_ns
                prev = doc
        rc = await proc.wait(30)
        live.status = "done" if rc == 0 else f"failed rc={rc}"
        if rc != 0 or not stream.docs:
            raise RuntimeError(
                f"fio exited with {rc}: {proc.stderr_tail.strip()[-500:] or 'no output'}"
            )
        local = self.rundir.iteration_dir(self.progress.current, node)
        (local / fionode.STREAM_FILE).write_text(stream.text)
        (local / fionode.OUT_FILE).write_text(json.dumps(stream.docs[-1], indent=1))

    def _fio_env(self, it: Iteration, node: str) -> dict[str, str]:
        """fio's environment on `node`: the cluster's conf for the rbd engine."""
        return self.ceph[node].env() if it.target.kind == "rbd" else {}

    async def _prepare_target(self, it: Iteration, node: str) -> Fill | None:
        """Make the target usable (a file's directory, a missing RBD image the suite asks to
        create), tracked for cleanup; how to prefill it, or None if it cannot be."""
        target = it.target.for_node(node)
        conn, leftovers = self.conns[node], self.rundir.state.node(node)
        if target.kind == "rbd":
            return await self._prepare_image(it, node, target)
        if target.kind != "file":
            return None
        path = target.resolve(self.workdir(node))
        created = await fionode.make_dirs(conn, str(PurePosixPath(path).parent))
        if created:
            leftovers.dirs.append(created)
        if path not in leftovers.files:
            leftovers.files.append(path)
        self.rundir.save()
        if not it.size:
            return None
        job = fionode.prefill_job([("filename", path)], it.size)
        return Fill(path, job, {}, await fionode.file_size(conn, path) < it.size)

    async def _prepare_image(self, it: Iteration, node: str, target: Target) -> Fill:
        spec = rbd.image_spec(target)
        conn, client = self.conns[node], self.ceph[node]
        leftovers = self.rundir.state.node(node)
        created = spec in leftovers.rbd_images
        if not created and (node, spec) not in self._rbd_sizes:
            info = await rbd.image_info(conn, client, spec)
            if info is None:
                if not it.create_image or not it.size:
                    raise RuntimeError(f"RBD image {spec} on {node} is gone (not to be created)")
                self.progress.message = f"creating RBD image {spec} ({format_size(it.size)})"
                await rbd.create_image(conn, client, spec, it.size)
                leftovers.rbd_images.append(spec)
                self.rundir.save()
                created = True
            else:
                self._rbd_sizes[(node, spec)] = int(info["size"])
        size = it.size or self._rbd_sizes[(node, spec)]
        job = fionode.prefill_job(target_options(target, it.rbd_client, ""), size, "rbd")
        return Fill(target.text, job, client.env(), created)

    async def _prefill(self, it: Iteration) -> None:
        """Fill each node's target before it is measured (`prefill: auto|force|skip`): a file
        once when it is shorter than the suite's size, an RBD image once when the run
        created it, on every iteration with `force`."""
        for node in it.nodes:
            fill = await self._prepare_target(it, node)
            if it.prefill == "skip" or fill is None:
                continue
            conn = self.conns[node]
            done = self.rundir.state.node(node).prefilled
            if it.prefill == "auto" and (fill.key in done or not fill.auto):
                continue
            self.progress.message = f"prefilling {fill.key} on {node}"
            job_path = f"{self.workdir(node)}/prefill.fio"
            await fionode.upload(conn, job_path, fill.job)
            proc = await conn.start(
                f"exec {fionode.env_prefix(fill.env)}fio --output-format=terse "
                f"{fionode.quote(job_path)}"
            )
            self.running[node] = proc
            self.rundir.state.node(node).pids.append(proc.pid)
            self.rundir.save()
            waiter = asyncio.create_task(proc.wait())
            stopper = asyncio.create_task(self._stop.wait())
            finished, _ = await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stopper in finished:
                raise RunInterrupted()
            self.running.pop(node, None)
            if waiter.result() != 0:
                raise RuntimeError(
                    f"prefill of {fill.key} on {node} failed: {proc.stderr_tail.strip()[-300:]}"
                )
            if fill.key not in done:
                done.append(fill.key)
        self.progress.message = ""

    def _record(self, it: Iteration, st: IterationState) -> None:
        """One `wally_test` record per node: the window sensor data is selected by."""
        if isinstance(it, RpcIteration):
            self.writer.write(self.rpc.record(it, st))
            return
        params = json.dumps(it.fio_params(), sort_keys=True)
        points = [
            Point(
                schema.WALLY_TEST.name,
                {
                    "run": self.rundir.state.run_id,
                    "test": it.name,
                    "node": node,
                    "kind": "fio",
                    "status": st.status,
                },
                {
                    "start": st.start_ns,
                    "end": st.end_ns or time.time_ns(),
                    "iteration": it.index,
                    "params": params,
                    "ramp": float(it.ramp_time),
                },
                st.start_ns or time.time_ns(),
            )
            for node in it.nodes
        ]
        self.writer.write(points)

    async def _stop_fio(self) -> None:
        procs, self.running = list(self.running.values()), {}
        await asyncio.gather(*(p.stop(grace=3.0) for p in procs), return_exceptions=True)

    async def _cleanup_nodes(self) -> None:
        if self.keep_files:
            return
        for name, conn in self.conns.items():
            with contextlib.suppress(SshError, OSError):
                failed = await fionode.remove_leftovers(
                    conn, self.rundir.state.node(name), self.ceph[name]
                )
                for spec, why in failed.items():
                    self.console.print(
                        f"[yellow]{name}: RBD image {spec} not removed ({why}); "
                        f"`loadgen cleanup {self.rundir.path}` retries[/]"
                    )


# --- the view ---------------------------------------------------------------------------


def live_view(p: Progress, collector_status: Callable[[], Table] | None = None) -> Group:
    elapsed = time.monotonic() - p.started
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]iteration {min(p.done + 1, p.total)}/{p.total}[/] {p.current}",
        f"elapsed {elapsed:.0f} s",
        f"ETA {p.remaining_s:.0f} s",
        p.message,
    )
    nodes = Table(expand=False)
    for col in ("node", "fio", "IOPS", "p99 ms"):
        nodes.add_column(col, justify="left" if col in ("node", "fio") else "right")
    for name, live in sorted(p.nodes.items()):
        p99 = f"{live.p99_ns / 1e6:.3f}" if live.p99_ns else "-"
        nodes.add_row(name, live.status, f"{live.iops:,.0f}", p99)
    parts = [head, nodes]
    if collector_status is not None:
        parts.append(collector_status())
    return Group(*parts)


def plain_progress(p: Progress) -> list[str]:
    nodes = ", ".join(f"{n} {v.iops:,.0f} IOPS" for n, v in sorted(p.nodes.items()))
    return [
        f"iteration {min(p.done + 1, p.total)}/{p.total} {p.current}: {nodes} (ETA {p.remaining_s:.0f} s)"
    ]


def summary_table(rundir: RunDir) -> Table:
    table = Table(title=f"run {rundir.state.run_id}")
    for col in ("test", "nodes", "status", "IOPS", "MiB/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col in ("test", "status") else "right")
    for st in rundir.state.iterations.values():
        if "rpc" in st.totals:  # RPC iterations: loadgen.rpcrun.summary_table
            continue
        t = st.totals or {}
        clat = t.get("clat_ns", {})
        table.add_row(
            st.name,
            str(len(st.nodes)),
            st.status,
            f"{t['iops']:,.0f}" if t else "-",
            f"{t['bw_bytes'] / 2**20:,.1f}" if t else "-",
            *(f"{clat[k] / 1e6:.3f}" if k in clat else "-" for k in ("p50", "p95", "p99")),
        )
    return table


def result_json(rundir: RunDir) -> dict:
    """What `loadgen run --json` prints."""
    state = rundir.state
    return {
        "run_id": state.run_id,
        "run_dir": str(rundir.path),
        "status": state.status,
        "influx_url": state.influx_url,
        "database": state.database,
        "iterations": [
            {
                "name": st.name,
                "nodes": st.nodes,
                "status": st.status,
                "iops": st.totals.get("iops"),
                "bw_bytes": st.totals.get("bw_bytes"),
                "clat_ns": st.totals.get("clat_ns", {}),
                "ops": st.totals.get("ops", {}),
                "errors": st.errors,
                **({"rpc": st.totals["rpc"]} if "rpc" in st.totals else {}),
                "start_ns": st.start_ns,
                "end_ns": st.end_ns,
            }
            for st in state.iterations.values()
        ],
    }


__all__ = ["PENDING", "Runner", "live_view", "plain_progress", "result_json", "summary_table"]

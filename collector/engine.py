"""The collection engine: one streaming reader per node, kept alive, points to a sink.

Each node gets one task. It connects, checks the clock skew, discovers the node once (device
roles for the tags), starts the node-side reader over one channel and turns its frames into
points. When the stream breaks (sshd killed, network cut, reader died) the task records the
gap, reconnects with exponential backoff and resumes; other nodes are not disturbed. Polled
sensors (Ceph admin sockets, RabbitMQ API: `collector.pollers`) run as one more task per
node and poller over the node's current connection. The same engine serves `collector run`
and `loadgen run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from collector import schema
from collector.discovery import NodeInfo, discover
from collector.inventory import Inventory, Node
from collector.lineproto import Point
from collector.pollers import Poller, PollError, pollers_for, split_sensors
from collector.sensors import Context, procstat_for_roles
from collector.sensors.reader import (
    Enabled,
    StreamError,
    StreamState,
    enable,
    frame_points,
    reader_command,
    reads_for,
    split_frames,
)
from collector.ssh import (
    ClockSkewError,
    ConnectionLostError,
    NodeConnection,
    NodeProcess,
    SshError,
    UnreachableError,
    backoff_delays,
    check_skew,
    connect,
    measure_skew,
)

log = logging.getLogger(__name__)

Sink = Callable[[list[Point]], None]

# Nodes connected, clock-checked, discovered or starting their reader at the same time.
PREPARE_CONCURRENCY = 16


def role_tag(roles: Iterable[str]) -> str:
    """All roles of a node in one tag value; analysis resolves roles through `wally_node`."""
    return ",".join(sorted(roles))


class PreflightError(RuntimeError):
    """Problems that make collection meaningless (clock skew, credentials), all nodes at once."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = "\n".join(f"  {node}: {msg}" for node, msg in sorted(self.problems.items()))
        # keyed by node, or by setting (a loadgen run adds e.g. its RPC broker's problems)
        super().__init__(f"{len(self.problems)} problem(s), by node or setting:\n{lines}")


@dataclass
class NodeStatus:
    """What the live view shows per node."""

    node: Node
    connected: bool = False
    samples: int = 0
    points: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str = ""
    last_sample_ns: int = 0
    skew: float | None = None
    info: NodeInfo | None = None
    gap_started: float | None = None
    conn: NodeConnection | None = field(default=None, repr=False)
    proc: NodeProcess | None = field(default=None, repr=False)


class Collector:
    """Collects from every node of an inventory until stopped."""

    def __init__(
        self,
        inventory: Inventory,
        sink: Sink,
        sensors: Mapping[str, float] | None = None,
        tick: float = 1.0,
        roots: Mapping[str, str] | None = None,
        python: str = "python3",
        nodes: Iterable[Node] | None = None,
        pollers: Sequence[Poller] | None = None,
    ) -> None:
        self.inventory = inventory
        self.sink = sink
        self.tick = tick
        self.roots = roots
        self.python = python
        node_sensors, intervals = split_sensors(sensors)
        self.enabled: list[Enabled] = enable(node_sensors, tick)
        # Default: what the config asks for (`sensors:`, `ceph:`, `rabbitmq:` sections).
        self.pollers = list(pollers) if pollers is not None else pollers_for(inventory, intervals)
        chosen = list(nodes) if nodes is not None else list(inventory)
        self.status: dict[str, NodeStatus] = {n.name: NodeStatus(n) for n in chosen}
        self._stop = asyncio.Event()
        self._preparing = asyncio.Semaphore(PREPARE_CONCURRENCY)
        self._tasks: list[asyncio.Task] = []

    # --- before collecting ---------------------------------------------------------------

    async def prepare(self) -> dict[str, NodeInfo]:
        """Connect to every node, check clocks, discover; raise listing every fatal problem.

        A node that is merely unreachable is not fatal: its task keeps trying to reach it.
        """
        results = await asyncio.gather(
            *(self._prepare_node(st) for st in self.status.values()), return_exceptions=True
        )
        problems: dict[str, str] = {}
        for st, res in zip(self.status.values(), results, strict=True):
            if isinstance(res, ClockSkewError | SshError) and not _transient(res):
                problems[st.node.name] = str(res)
            elif isinstance(res, BaseException):
                if not isinstance(res, SshError):
                    raise res
                st.last_error = str(res)
                st.gap_started = time.time()
        if problems:
            await self.close()
            raise PreflightError(problems)
        infos = {name: st.info for name, st in self.status.items() if st.info is not None}
        now = time.time_ns()
        self.sink([p for info in infos.values() for p in info.points(now)])
        return infos

    async def _prepare_node(self, st: NodeStatus) -> None:
        # Handshakes and discovery cost CPU here and on the node: with hundreds of nodes,
        # all at once would only make every one of them slow (and time out).
        async with self._preparing:
            st.conn = await connect(st.node)
            skew = await measure_skew(st.conn)
            st.skew = skew.offset
            check_skew(st.node, skew)
            st.info = await discover(st.conn)

    # --- collecting ----------------------------------------------------------------------

    async def run(self, duration: float | None = None) -> None:
        """Collect until `stop()` or `duration` seconds; always cleans up on the nodes."""
        self._tasks = [asyncio.create_task(self._node_loop(st)) for st in self.status.values()]
        self._tasks += [
            asyncio.create_task(self._poll_loop(st, p))
            for st in self.status.values()
            for p in self.pollers
            if p.applies_to(st.node)
        ]
        try:
            if duration is None:
                await self._stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration)
        finally:
            self._stop.set()
            await self.close()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop every reader (by PID) and close every connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.gather(
            *(self._close_node(st) for st in self.status.values()), return_exceptions=True
        )

    async def _close_node(self, st: NodeStatus) -> None:
        proc, conn = st.proc, st.conn
        st.proc = st.conn = None
        st.connected = False
        if proc is not None:
            with contextlib.suppress(SshError, OSError, TimeoutError):
                await proc.stop(grace=2.0)
        if conn is not None:
            with contextlib.suppress(SshError, OSError):
                await conn.close()

    def context(self, st: NodeStatus) -> Context:
        node = st.node
        tags = {schema.TAG_NODE: node.name, schema.TAG_ROLE: role_tag(node.roles)}
        return Context(
            tags=tags,
            device_roles=st.info.device_roles() if st.info else {},
            procstat=procstat_for_roles(node.roles),
        )

    def command(self, st: NodeStatus) -> str:
        return reader_command(
            reads_for(self.enabled),
            self.tick,
            procstat_for_roles(st.node.roles),
            self.roots,
            python=self.python,
        )

    async def _node_loop(self, st: NodeStatus) -> None:
        delays = backoff_delays(initial=0.5, max_delay=10.0)
        while not self._stop.is_set():
            try:
                await self._stream(st)
                raise ConnectionLostError(st.node.name, f"reader ended: {_tail(st)}")
            except (SshError, StreamError, OSError) as e:
                st.connected = False
                st.errors += 1
                st.last_error = str(e)
                if st.gap_started is None:
                    st.gap_started = time.time()
                log.warning("%s: %s", st.node.name, e)
                await self._close_node(st)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), next(delays))
            else:
                delays = backoff_delays(initial=0.5, max_delay=10.0)

    async def _start_reader(self, st: NodeStatus) -> bytes:
        """(Re)connect if needed, start the reader and return its first output.

        Starting a reader costs the node a Python start and its SSH session a login shell:
        hundreds at once would starve the nodes already streaming (on a test machine
        sharing its cores with the simulated nodes, and on a real node running other
        services), so starts take turns with preparation. Connecting does not: a node that
        does not answer must not hold up the others."""
        if st.conn is None or st.conn.closed:
            st.conn = await connect(st.node)
        async with self._preparing:
            if st.info is None:
                st.info = await discover(st.conn)
                self.sink(st.info.points(time.time_ns()))
            st.proc = await st.conn.start(self.command(st))
            try:
                return await asyncio.wait_for(st.proc.read(), st.node.connect_timeout)
            except TimeoutError:
                raise ConnectionLostError(
                    st.node.name, f"reader sent nothing within {st.node.connect_timeout} s"
                ) from None

    async def _stream(self, st: NodeStatus) -> None:
        chunk = await self._start_reader(st)
        ctx = self.context(st)
        state = StreamState()
        rest = b""
        while chunk:
            frames, rest = split_frames(chunk, rest)
            for frame in frames:
                points, state, errors = frame_points(frame, self.enabled, ctx, state)
                if frame.seq < 0:
                    self._connected(st)
                    continue
                for err in errors:
                    st.errors += 1
                    st.last_error = err
                st.samples += 1
                st.points += len(points)
                st.last_sample_ns = frame.time_ns
                self.sink(points)
            chunk = await st.proc.read()

    async def _poll_loop(self, st: NodeStatus, poller: Poller) -> None:
        """Poll at the poller's interval while the node's stream is up; errors are counted,
        logged when they change, and never stop the node or the other pollers."""
        state, last = None, ""
        due = time.monotonic()
        try:
            while True:
                conn = st.conn
                if st.connected and conn is not None and not conn.closed:
                    try:
                        points, state, errors = await poller.poll(conn, self.context(st), state)
                    except (PollError, SshError, OSError) as e:
                        points, errors = [], [str(e)]
                    except Exception as e:  # a poller bug must not silently stop its polling
                        log.exception("%s: %s poller failed", st.node.name, poller.name)
                        points, errors = [], [f"{poller.name} poller failed: {e!r}"]
                    if points:
                        st.points += len(points)
                        self.sink(points)
                    for err in errors:
                        st.errors += 1
                        st.last_error = err
                        if err != last:
                            log.warning("%s: %s: %s", st.node.name, poller.name, err)
                    last = errors[-1] if errors else ""
                due = max(due + poller.interval, time.monotonic())
                await asyncio.sleep(due - time.monotonic())
        finally:
            await poller.close(state)

    def _connected(self, st: NodeStatus) -> None:
        """The reader said hello: if this ends a gap, make the gap visible in the data."""
        st.connected = True
        if st.gap_started is None:
            return
        gap = time.time() - st.gap_started
        st.gap_started = None
        st.reconnects += 1
        tags = {
            schema.TAG_NODE: st.node.name,
            schema.TAG_ROLE: role_tag(st.node.roles),
            "kind": "reconnect",
        }
        fields = {
            "message": f"sensor stream resumed after: {st.last_error}"[:1000],
            "gap_seconds": gap,
        }
        self.sink([Point(schema.WALLY_EVENT.name, tags, fields, time.time_ns())])


def _transient(e: BaseException) -> bool:
    return isinstance(e, ConnectionLostError | UnreachableError)


def _tail(st: NodeStatus) -> str:
    return (st.proc.stderr_tail.strip()[-300:] if st.proc else "") or "no output"

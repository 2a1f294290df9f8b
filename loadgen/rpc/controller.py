"""Coordinates one RPC test: roll call, synchronised start, results, clean shutdown.

The controller listens on a TCP port on the loopback; agents (local processes here, or
started over SSH by `loadgen.rpcrun`, reaching it through reverse port forwarding) connect
to it. It hands each agent its configuration, waits until every
expected agent is ready, tells them all to start at the same wall-clock instant,
forwards their per-second stats to an optional sink as `rpc` Points (and failures by
exception type as `rpc_errors`), collects final stats, waits for servers to drain
in-flight messages, and stops everyone. An agent that disconnects or falls silent is
reported missing; the others finish.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from collector import schema
from collector.lineproto import Point
from collector.ombt import error_points
from loadgen.rpc.agent import EXECUTORS, Channel
from loadgen.rpc.broker import check_url
from loadgen.rpc.stats import LatencyStats

TEST_TYPES = ("rpc-call", "rpc-cast", "rpc-fanout", "notify")
Sink = Callable[[list[Point]], None]


class RpcTestError(RuntimeError):
    """The test cannot run or was aborted; the message says which agent or input is at fault."""


@dataclass
class RpcTestSpec:
    """What to run. Exactly one of `calls` (per client) and `duration` (seconds) bounds it;
    `rate` (messages/s per client) selects the open-loop model, else closed loop + `pause`."""

    url: str
    test_type: str = "rpc-call"
    clients: int = 1
    servers: int = 1
    topics: int = 1
    calls: int | None = 100
    duration: float | None = None
    length: int = 1024
    executor: str = "threading"
    timeout: float = 10.0
    pause: float = 0.0
    rate: float | None = None
    retry: int | None = None
    run: str = "adhoc"
    test: str = "rpc"
    record_raw: bool = False

    def validate(self) -> None:
        def bad(name: str, expected: str) -> RpcTestError:
            return RpcTestError(f"rpc test {name}={getattr(self, name)!r}: expected {expected}")

        if self.test_type not in TEST_TYPES:
            raise bad("test_type", "one of " + ", ".join(TEST_TYPES))
        for name in ("clients", "servers", "topics"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.topics > self.servers or self.topics > self.clients:
            raise bad(
                "topics", f"at most min(clients, servers) = {min(self.clients, self.servers)}"
            )
        if (self.calls is None) == (self.duration is None):
            raise RpcTestError("rpc test: give exactly one of calls (per client) or duration")
        if self.calls is not None and self.calls < 1:
            raise bad("calls", "an integer >= 1")
        if self.duration is not None and self.duration <= 0:
            raise bad("duration", "seconds > 0")
        if self.rate is not None and self.rate <= 0:
            raise bad("rate", "messages per second > 0 (or None for closed loop)")
        if self.length < 0:
            raise bad("length", "bytes >= 0")
        if self.timeout <= 0:
            raise bad("timeout", "seconds > 0")
        if self.executor not in EXECUTORS:
            raise bad("executor", "one of " + ", ".join(EXECUTORS))

    @property
    def sender_role(self) -> str:
        return "notifier" if self.test_type == "notify" else "rpc-client"

    @property
    def receiver_role(self) -> str:
        return "listener" if self.test_type == "notify" else "rpc-server"


@dataclass
class AgentState:
    name: str
    role: str
    topic: str
    config: dict[str, Any]
    channel: Channel | None = None
    node: str = ""
    pid: int | None = None
    ready: bool = False
    green: bool = False  # the process is eventlet monkey-patched (the eventlet executor)
    stats: LatencyStats | None = None
    raw: list[float] | None = None
    received: int = 0
    missing: str | None = None  # why it is missing, once it is
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def side(self) -> str:
        return "server" if self.role in ("rpc-server", "listener") else "client"


@dataclass
class RpcTestResult:
    spec: RpcTestSpec
    agents: dict[str, AgentState]
    start: float
    end: float

    def side(self, side: str) -> list[AgentState]:
        return [a for a in self.agents.values() if a.side == side]

    def merged(self, side: str) -> LatencyStats:
        return LatencyStats.merged([a.stats for a in self.side(side) if a.stats is not None])

    @property
    def missing(self) -> dict[str, str]:
        return {a.name: a.missing for a in self.agents.values() if a.missing}

    def summary_points(self) -> list[Point]:
        """Per agent and merged (`agent=all`) results and failures by exception type, with
        `test=<test>/summary`."""
        s = self.spec
        t_ns = int(self.end * 1e9)
        out = []
        for side in ("client", "server"):
            rows = [(a.name, a.node, a.stats) for a in self.side(side) if a.stats is not None]
            rows.append(("all", "", self.merged(side)))
            for name, node, stats in rows:
                tags = {
                    "run": s.run,
                    "test": f"{s.test}/summary",
                    "node": node or socket.gethostname(),
                    "agent": name,
                    "side": side,
                    "call_type": s.test_type,
                }
                out.append(Point(schema.RPC.name, tags, stats.summary_fields(), t_ns))
                out += error_points(tags, stats.errors, t_ns)
        return out


def _roster(spec: RpcTestSpec) -> list[tuple[str, str, int, int]]:
    """(name, role, index within the role, topic index) of every agent; agents are spread
    over topics round-robin."""
    out = []
    for role, count in ((spec.receiver_role, spec.servers), (spec.sender_role, spec.clients)):
        out += [(f"{role}-{i}", role, i, i % spec.topics) for i in range(count)]
    return out


def _topology(spec: RpcTestSpec, test_id: str) -> list[tuple[str, str, str]]:
    """(name, role, topic) of every agent."""
    return [(name, role, f"wally-{test_id}-t{t}") for name, role, _, t in _roster(spec)]


class Placed(NamedTuple):
    node: str
    topic: int
    sender: bool


def placement(
    spec: RpcTestSpec, client_nodes: Sequence[str], server_nodes: Sequence[str], local: str
) -> dict[str, Placed]:
    """Where each agent runs: senders round-robin over `client_nodes`, receivers over
    `server_nodes`; `local` takes a side whose list is empty."""
    out = {}
    for name, role, i, topic in _roster(spec):
        sender = role == spec.sender_role
        nodes = client_nodes if sender else server_nodes
        out[name] = Placed(nodes[i % len(nodes)] if nodes else local, topic, sender)
    return out


class Controller:
    """Runs one test with agents that connect to `address`."""

    def __init__(
        self,
        spec: RpcTestSpec,
        sink: Sink | None = None,
        host: str = "127.0.0.1",
        roll_call_timeout: float = 60.0,
        heartbeat: float = 1.0,
        silence_timeout: float = 10.0,
        drain_timeout: float = 5.0,
        logdir: Path | None = None,
    ):
        spec.validate()
        self.spec = spec
        self.sink = sink
        self.roll_call_timeout = roll_call_timeout
        self.heartbeat = heartbeat
        self.silence_timeout = silence_timeout
        self.drain_timeout = drain_timeout
        self.test_id = uuid.uuid4().hex[:8]
        base = {k: v for k, v in asdict(spec).items() if k not in ("run", "test")}
        self.agents: dict[str, AgentState] = {
            name: AgentState(name, role, topic, {**base, "role": role, "topic": topic})
            for name, role, topic in _topology(spec, self.test_id)
        }
        self.events: queue.Queue[tuple[str | None, dict[str, Any] | None]] = queue.Queue()
        self.listener = socket.create_server((host, 0))
        self.address = (host, self.listener.getsockname()[1])
        self.procs: dict[str, subprocess.Popen] = {}
        # Why an agent started elsewhere (over SSH) ended, set by whoever started it.
        self.exits: dict[str, str] = {}
        # Agent logs go to the caller's directory (a run keeps them) or to a temp dir
        # that close() removes.
        self.logdir: Path | None = logdir
        self._own_logdir = logdir is None
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="rpc-accept").start()
        threading.Thread(target=self._pinger, daemon=True, name="rpc-ping").start()

    # --- plumbing ------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(self.silence_timeout)
            threading.Thread(target=self._read, args=(Channel(sock),), daemon=True).start()

    def _read(self, channel: Channel) -> None:
        hello = channel.recv()
        if not hello or hello.get("type") != "hello" or hello.get("name") not in self.agents:
            channel.close()
            return
        name = hello["name"]
        self.events.put((name, {**hello, "_channel": channel}))
        while True:
            msg = channel.recv()
            self.events.put((name, msg))
            if msg is None:
                return

    def _pinger(self) -> None:
        while not self._closed.wait(self.heartbeat):
            for a in list(self.agents.values()):
                if a.channel is not None and a.missing is None:
                    a.channel.send(type="ping")

    def agent_args(self, name: str, port: int | None = None, tag: str = "") -> list[str]:
        """The agent's command-line arguments; `port` is where the controller is reachable
        on the agent's loopback (a forwarded port), by default its own."""
        args = ["--controller", f"{self.address[0]}:{port or self.address[1]}", "--name", name]
        args += ["--heartbeat", str(self.heartbeat), "--silence-timeout", str(self.silence_timeout)]
        args += ["--executor", self.spec.executor]
        return args + (["--tag", tag] if tag else [])

    def ensure_logdir(self) -> Path:
        if self.logdir is None:
            self.logdir = Path(tempfile.mkdtemp(prefix="wally-rpc-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        return self.logdir

    def spawn_local(self) -> None:
        """Start every agent as a local process (tracked by PID), logging to `logdir`."""
        logdir = self.ensure_logdir()
        for name in self.agents:
            with open(logdir / f"{name}.log", "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "loadgen.rpc.agent", *self.agent_args(name)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    def _handle(self, name: str | None, msg: dict[str, Any] | None) -> None:
        if name is None:
            return
        a = self.agents[name]
        a.last_seen = time.monotonic()
        if msg is None:
            if a.missing is None and not (
                a.stats is not None and a.side == "client" and self._stopping
            ):
                a.missing = "disconnected"
            return
        kind = msg.get("type")
        if kind == "hello":
            a.channel, a.pid = msg["_channel"], msg.get("pid")
            a.node = a.node or msg.get("node", "")
            a.green = bool(msg.get("green"))
            a.channel.send(type="config", config=a.config)
        elif kind == "ready":
            a.ready = True
        elif kind == "error":
            a.missing = f"failed: {msg.get('error')}"
        elif kind == "tick":
            a.received = int(msg.get("received", 0))
            if self.sink is not None:
                tags = {
                    "run": self.spec.run,
                    "test": self.spec.test,
                    "node": a.node,
                    "agent": a.name,
                    "side": a.side,
                    "call_type": self.spec.test_type,
                }
                t_ns = int(msg["t"] * 1e9)
                points = [Point(schema.RPC.name, tags, msg["fields"], t_ns)]
                self.sink(points + error_points(tags, msg.get("errors") or {}, t_ns))
        elif kind == "count":
            a.received = int(msg["received"])
        elif kind == "result":
            a.stats = LatencyStats.from_dict(msg["stats"])
            a.raw = msg.get("raw")

    def _pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Handle events until `until()` holds (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                name, msg = self.events.get(timeout=min(left, self.heartbeat))
            except queue.Empty:
                pass
            else:
                self._handle(name, msg)
            self._check_silence()
        return True

    def _handle_queued(self) -> None:
        """Handle every event already received, without waiting: nothing an agent sent
        before the result is built is left out of it or of the sink."""
        while True:
            try:
                name, msg = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(name, msg)

    def _check_silence(self) -> None:
        now = time.monotonic()
        for a in self.agents.values():
            if (
                a.missing is None
                and a.channel is not None
                and now - a.last_seen > self.silence_timeout
            ):
                a.missing = f"silent for {self.silence_timeout:g} s"
            if a.missing is None and a.channel is None:
                ended = self._ended(a.name)
                if ended is not None:
                    a.missing = f"{ended} before connecting"

    def _ended(self, name: str) -> str | None:
        """How the agent's process ended, or None while it runs (or is not ours)."""
        proc = self.procs.get(name)
        if proc is not None:
            return None if proc.poll() is None else f"exited with {proc.returncode}"
        return self.exits.get(name)

    def _live(self, side: str) -> list[AgentState]:
        return [a for a in self.agents.values() if a.side == side and a.missing is None]

    # --- the test ---------------------------------------------------------------------------

    _stopping = False

    def run(self) -> RpcTestResult:
        """Run the test with already started (or `spawn_local`) agents; always shuts down."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> RpcTestResult:
        spec = self.spec
        everyone = list(self.agents.values())
        ok = self._pump(lambda: all(a.ready or a.missing for a in everyone), self.roll_call_timeout)
        failed = {a.name: a.missing for a in everyone if a.missing}
        if failed or not ok:
            late = [a.name for a in everyone if not a.ready and not a.missing]
            detail = "; ".join(f"{n}: {why}" for n, why in failed.items())
            if late:
                detail += (
                    "; " if detail else ""
                ) + f"not ready after {self.roll_call_timeout:g} s: {', '.join(late)}"
            raise RpcTestError(f"roll call failed ({detail})")

        start = time.time() + max(0.5, 0.05 * len(everyone))
        for a in everyone:
            a.channel.send(type="start", at=start)
        budget = spec.duration if spec.duration else spec.calls * (spec.timeout + spec.pause)
        if spec.rate and spec.calls:
            budget = max(budget, spec.calls / spec.rate + spec.timeout)
        self._pump(
            lambda: all(
                a.stats is not None or a.missing for a in self.agents.values() if a.side == "client"
            ),
            budget + self.silence_timeout + (start - time.time()),
        )
        for a in self._live("client"):
            if a.stats is None:
                a.missing = "no result before the test's time budget ran out"
        self._drain()
        self._stopping = True
        for a in self._live("server"):
            a.channel.send(type="stop")
        self._pump(
            lambda: all(
                a.stats is not None or a.missing for a in self.agents.values() if a.side == "server"
            ),
            self.silence_timeout,
        )
        for a in self._live("server"):
            if a.stats is None:
                a.missing = "no result after stop"
        for a in self._live("client"):
            a.channel.send(type="stop")
        self._handle_queued()
        result = RpcTestResult(spec, self.agents, start, time.time())
        if self.sink is not None:
            self.sink(result.summary_points())
        return result

    def expected_received(self) -> int:
        """Messages the servers should see in total, given what the clients got through."""
        sent = 0
        for a in self.agents.values():
            if a.side == "client" and a.stats is not None:
                per = a.stats.msgs_ok
                if self.spec.test_type == "rpc-fanout":
                    per *= sum(1 for s in self._live("server") if s.topic == a.topic)
                sent += per
        return sent

    def _drain(self) -> None:
        """Wait until servers received what clients sent, or stop making progress."""
        target = self.expected_received()
        seen, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < self.drain_timeout:
            for a in self._live("server"):
                a.channel.send(type="count")
            self._pump(lambda: False, 0.2)
            total = sum(a.received for a in self._live("server"))
            if total >= target:
                return
            if total != seen:
                seen, last_change = total, time.monotonic()

    def close(self) -> None:
        """Stop everything this controller started: agents by PID, then the listener."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for a in self.agents.values():
            if a.channel is not None:
                a.channel.send(type="stop")
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for a in self.agents.values():
            if a.channel is not None:
                a.channel.close()
        if self._own_logdir and self.logdir is not None:
            shutil.rmtree(self.logdir, ignore_errors=True)


def run_local(
    spec: RpcTestSpec, sink: Sink | None = None, check_broker: bool = True, **kw: Any
) -> RpcTestResult:
    """Check the broker, start all agents locally, run the test, clean up."""
    spec.validate()
    if check_broker:
        check_url(spec.url)
    ctl = Controller(spec, sink=sink, **kw)
    ctl.spawn_local()
    return ctl.run()

"""One RPC load agent: rpc-server, rpc-client, notification listener or notifier.

Run as `python -m loadgen.rpc.agent --controller HOST:PORT --name NAME` (on a remote node
the same code arrives as source with the command: `loadgen.rpc.nodes`). The agent
connects to the controller over a plain TCP line-JSON channel (not over the bus under
test, so a broker outage cannot cut the coordination), receives its configuration,
connects to the broker through oslo.messaging with the test's executor, reports ready, waits for the synchronised start, sends per-second interval stats, and reports
its final stats. It exits when told to, or when the controller goes silent or away:
agents never outlive their controller, and an idle agent only wakes once per heartbeat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from loadgen.rpc.stats import PERCENTILES, LatencyStats, percentile_field

log = logging.getLogger("loadgen.rpc.agent")

ROLES = ("rpc-server", "rpc-client", "listener", "notifier")
# oslo.messaging's executors. `eventlet` is how most OpenStack services run it: the whole
# process monkey-patched at start (so the agent gets `--executor` on its command line).
EXECUTORS = ("threading", "eventlet")
SERVER_ROLES = ("rpc-server", "listener")
# How long a client waits for late timestamps after being told to stop.
GRACE_EXIT_S = 10.0


class Channel:
    """Line-delimited JSON over a TCP socket, safe to send from several threads."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rfile = sock.makefile("r", encoding="utf-8", newline="\n")
        self._lock = threading.Lock()

    def send(self, **msg: Any) -> bool:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def recv(self) -> dict[str, Any] | None:
        """Next message, or None when the peer closed or went silent past the timeout."""
        try:
            line = self.rfile.readline()
        except (OSError, ValueError):
            return None
        if not line:
            return None
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Recorder:
    """Cumulative and per-interval stats behind one lock (servers record from many threads)."""

    def __init__(self) -> None:
        self.total = LatencyStats()
        self.interval = LatencyStats()
        self.raw: list[float] | None = None
        self._lock = threading.Lock()

    def ok(self, latency_s: float, arrived: float | None = None) -> None:
        """Record a success; servers pass the arrival time to track their active window."""
        with self._lock:
            if arrived is not None:
                self.total.mark(arrived, arrived)
            self.total.record(latency_s)
            self.interval.record(latency_s)
            if self.raw is not None:
                self.raw.append(latency_s)

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self.total.record_failure(exc)
            self.interval.record_failure(exc)

    def swap(self) -> LatencyStats:
        with self._lock:
            out, self.interval = self.interval, LatencyStats()
        return out

    def close_out(self) -> tuple[LatencyStats, dict[str, Any], list[float] | None]:
        """The last interval, the totals and the raw latencies at one instant, so that an
        agent's ticks add up exactly to the result it reports (servers keep receiving)."""
        with self._lock:
            out, self.interval = self.interval, LatencyStats()
            raw = None if self.raw is None else list(self.raw)
            return out, self.total.to_dict(), raw

    def received(self) -> int:
        with self._lock:
            return self.total.msgs_ok


def interval_fields(stats: LatencyStats, seconds: float) -> dict[str, Any]:
    """Per-second fields of the `rpc` measurement from one interval's stats."""
    out: dict[str, Any] = {
        "msgs_ok": stats.msgs_ok,
        "msgs_fail": stats.msgs_fail,
        "rate": stats.count / seconds if seconds > 0 else 0.0,
    }
    if stats.msgs_ok:
        for p in PERCENTILES:
            out[percentile_field(p)] = stats.percentile_ms(p)
        out["lat_mean"] = stats.mean_ms()
        out["lat_max"] = float(stats.max_ms or 0.0)
    return out


class Ticker:
    """Sends the agent's per-second interval stats, then its last partial interval together
    with the result: the `msgs_ok`/`msgs_fail` of an agent's ticks add up exactly to its
    result, and each interval's rate is over its real length (from the start instant)."""

    def __init__(self, channel: Channel, name: str, recorder: Recorder):
        self.channel = channel
        self.name = name
        self.recorder = recorder
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the current interval
        self._done = False

    def begin(self, start_wall: float) -> None:
        """The first interval starts at the load's synchronised start (epoch seconds)."""
        with self._lock:
            self._since = time.monotonic() + (start_wall - time.time())

    def tick(self) -> None:
        """One interval's stats; a heartbeat before the start and after the result."""
        with self._lock:
            if self._done or self._since is None or time.monotonic() < self._since:
                self.channel.send(type="hb", name=self.name)
                return
            self._send_interval(self.recorder.swap())

    def finish(self) -> None:
        """The last partial interval, then the result; no interval is sent after it."""
        with self._lock:
            last, total, raw = self.recorder.close_out()
            if self._since is not None and not self._done:
                self._send_interval(last)
            self._done = True
            self.channel.send(type="result", name=self.name, stats=total, raw=raw)

    def _send_interval(self, stats: LatencyStats) -> None:
        now = time.monotonic()
        assert self._since is not None
        self.channel.send(
            type="tick",
            name=self.name,
            t=time.time(),
            fields=interval_fields(stats, now - self._since),
            errors=dict(stats.errors),
            received=self.recorder.received(),
        )
        self._since = now


# --- oslo.messaging plumbing ---------------------------------------------------------------


def _green() -> bool:
    """Whether eventlet has monkey-patched this process (its executor needs that)."""
    eventlet = sys.modules.get("eventlet")
    return eventlet is not None and eventlet.patcher.is_monkey_patched("thread")


def green_process(name: str) -> bool:
    """Monkey-patch the process for the eventlet executor, before any socket or thread
    exists; False (said on stderr, the agent's log) when eventlet is missing."""
    try:
        import eventlet
    except ImportError as exc:
        print(
            f"agent {name}: executor eventlet needs the eventlet module ({exc}): "
            "pip install eventlet",
            file=sys.stderr,
        )
        return False
    eventlet.monkey_patch()
    return True


def _oslo():
    import oslo_messaging
    from oslo_config import cfg

    return oslo_messaging, cfg


def make_transport(url: str, notification: bool = False):
    """A transport on the process-wide config: oslo.messaging registers some options
    (tracing) only on the global `cfg.CONF`, and each agent is its own process."""
    om, cfg = _oslo()
    cfg.CONF([], project="wally-rpc")
    getter = om.get_notification_transport if notification else om.get_rpc_transport
    return getter(cfg.CONF, url=url)


class ServerEndpoint:
    """Receives calls and casts; latency is arrival minus the sender's wall-clock stamp."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def call(self, ctxt: dict, payload: str, sent: float) -> bool:
        now = time.time()
        self.recorder.ok(now - sent, now)
        return True

    def cast(self, ctxt: dict, payload: str, sent: float) -> None:
        now = time.time()
        self.recorder.ok(now - sent, now)


class ListenerEndpoint:
    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        now = time.time()
        self.recorder.ok(now - payload["sent"], now)


class Agent:
    """Role-independent life cycle; role specifics are in `setup` and `send`."""

    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.cfg = config
        self.role: str = config["role"]
        if self.role not in ROLES:
            raise ValueError(f"agent role {self.role!r}: expected one of {', '.join(ROLES)}")
        self.executor: str = config.get("executor", "threading")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if self.executor == "eventlet" and not _green():
            raise ValueError("executor 'eventlet': start the agent with --executor eventlet")
        self.recorder = Recorder()
        if config.get("record_raw"):
            self.recorder.raw = []
        self.transport = None
        self.server = None
        self.send: Callable[[float], None] | None = None

    def setup(self) -> None:
        om, _ = _oslo()
        c = self.cfg
        topic = c["topic"]
        if self.role == "rpc-server":
            self.transport = make_transport(c["url"])
            target = om.Target(topic=topic, server=self.name)
            self.server = om.get_rpc_server(
                self.transport, target, [ServerEndpoint(self.recorder)], executor=self.executor
            )
            self.server.start()
        elif self.role == "listener":
            self.transport = make_transport(c["url"], notification=True)
            self.server = om.get_notification_listener(
                self.transport,
                [om.Target(topic=topic)],
                [ListenerEndpoint(self.recorder)],
                executor=self.executor,
            )
            self.server.start()
        elif self.role == "rpc-client":
            self.transport = make_transport(c["url"])
            client = om.get_rpc_client(self.transport, om.Target(topic=topic))
            client = client.prepare(
                timeout=c["timeout"], fanout=c["test_type"] == "rpc-fanout", retry=c.get("retry")
            )
            payload = "x" * c["length"]
            if c["test_type"] == "rpc-call":
                self.send = lambda sent: client.call({}, "call", payload=payload, sent=sent)
            else:
                self.send = lambda sent: client.cast({}, "cast", payload=payload, sent=sent)
        else:
            self.transport = make_transport(c["url"], notification=True)
            notifier = om.Notifier(
                self.transport,
                publisher_id=self.name,
                driver="messaging",
                topics=[topic],
                retry=c.get("retry"),
            )
            payload = "x" * c["length"]
            self.send = lambda sent: notifier.info(
                {}, "wally.load", {"payload": payload, "sent": sent}
            )

    def run_load(self, start_wall: float, stop: threading.Event) -> None:
        """Send messages closed-loop (with pause) or open-loop (at a rate, latency measured
        from each message's intended send time so that stalls are not hidden)."""
        assert self.send is not None
        c = self.cfg
        calls: int | None = c.get("calls")
        duration: float | None = c.get("duration")
        rate: float | None = c.get("rate")
        pause: float = c.get("pause") or 0.0
        mono0 = time.monotonic() + (start_wall - time.time())
        wall_of = lambda mono: start_wall + (mono - mono0)  # noqa: E731
        end = mono0 + duration if duration else None
        n = 0
        first = last = None
        while not stop.is_set() and (calls is None or n < calls):
            if rate:
                intended = mono0 + n / rate
                if end is not None and intended >= end:
                    break
                delay = intended - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            else:
                intended = time.monotonic()
                if end is not None and intended >= end:
                    break
            first = first if first is not None else intended
            try:
                self.send(wall_of(intended))
            except Exception as exc:
                self.recorder.fail(exc)
            else:
                self.recorder.ok(time.monotonic() - intended)
            last = time.monotonic()
            n += 1
            if pause and stop.wait(pause):
                break
        if first is not None and last is not None:
            self.recorder.total.mark(wall_of(first), wall_of(last))

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server.wait()
        if self.transport is not None:
            self.transport.cleanup()


def serve(channel: Channel, name: str, heartbeat: float, silence_timeout: float) -> int:
    """The agent's life: config, setup, ready, start, run, report, exit."""
    channel.sock.settimeout(silence_timeout)
    channel.send(
        type="hello",
        name=name,
        pid=os.getpid(),
        node=socket.gethostname(),
        green=_green(),
    )
    msg = channel.recv()
    if msg is None or msg.get("type") != "config":
        return 3
    try:
        agent = Agent(name, msg["config"])
        agent.setup()
    except Exception as exc:
        channel.send(type="error", name=name, error=f"{type(exc).__name__}: {exc}")
        return 2

    started = threading.Event()
    stop = threading.Event()
    gone = threading.Event()
    start_at: list[float] = []

    def reader() -> None:
        while True:
            m = channel.recv()
            if m is None:
                gone.set()
                stop.set()
                started.set()
                return
            kind = m.get("type")
            if kind == "start":
                start_at.append(float(m["at"]))
                started.set()
            elif kind == "stop":
                stop.set()
                started.set()
            elif kind == "count":
                channel.send(type="count", name=name, received=agent.recorder.received())

    ticker = Ticker(channel, name, agent.recorder)

    def ticking() -> None:
        while not gone.wait(heartbeat):
            ticker.tick()

    threading.Thread(target=reader, daemon=True, name="ctl-reader").start()
    channel.send(type="ready", name=name)
    started.wait()
    if start_at:
        ticker.begin(start_at[0])
    threading.Thread(target=ticking, daemon=True, name="ticker").start()
    if start_at and not stop.is_set():
        delay = start_at[0] - time.time()
        if (delay <= 0 or not stop.wait(delay)) and agent.send is not None:
            agent.run_load(start_at[0], stop)
            ticker.finish()
    # clients wait for the controller's stop so ticks and results are not lost; servers
    # keep consuming until then and report after
    stop.wait()
    if agent.send is None and not gone.is_set():
        ticker.finish()
    closer = threading.Thread(target=agent.close, daemon=True)
    closer.start()
    closer.join(GRACE_EXIT_S)
    channel.send(type="bye", name=name)
    return 0 if not gone.is_set() else 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.rpc.agent", description=__doc__)
    p.add_argument("--controller", required=True, help="HOST:PORT of the controller")
    p.add_argument("--name", required=True)
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument(
        "--silence-timeout",
        type=float,
        default=10.0,
        help="exit when the controller is silent this long",
    )
    p.add_argument(
        "--tag",
        default="",
        help="the run's work dir on this node: only named on the command line, so that "
        "`loadgen cleanup` tells this run's agents from a process that reused the PID",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="threading",
        help="oslo.messaging executor; eventlet monkey-patches the process first",
    )
    args = p.parse_args(argv)
    if args.executor == "eventlet" and not green_process(args.name):
        return 3
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s"
    )
    host, _, port = args.controller.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
    except OSError as exc:
        print(
            f"agent {args.name}: cannot reach controller {args.controller}: {exc}", file=sys.stderr
        )
        return 3
    channel = Channel(sock)
    try:
        return serve(channel, args.name, args.heartbeat, args.silence_timeout)
    finally:
        channel.close()


def main_and_exit(argv: list[str] | None = None) -> None:
    """Run `main` and leave at once: oslo.messaging may leave non-daemon threads behind
    after a broker outage, and an agent must never linger."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_and_exit()

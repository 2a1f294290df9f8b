"""Polled sensors: Ceph admin sockets, Ceph cluster stats and the RabbitMQ management API.

The streaming /proc reader covers file-based sensors; these ask a daemon instead. The
engine runs one task per node and applicable poller, over the node's own connection. The
daemon-facing pollers keep ONE small program running on the node and ask it once per
interval over stdin (one line in, one JSON line out), so sampling starts no process per
sample on the node; a new connection (after a reconnect) gets a new program. The parsing is
done by the pure parsers of `collector.sensors.ceph` and `collector.sensors.rabbitmq`.

Config (all optional; intervals come from the `sensors:` section like the node sensors):

    sensors: {ceph: 1, ceph_cluster: 5, rabbitmq: 1}
    ceph:
      socket_dir: /var/run/ceph       # admin sockets on the node
      conf: /etc/ceph/ceph.conf       # on the node; passed as --conf to the `ceph` CLI
      root_node: mon1                 # cluster-level stats from here (default: a ceph-mon)
      nodes: {osd7: {socket_dir: /run/ceph/x}}
    rabbitmq:
      url: http://127.0.0.1:15672     # as seen from the node (may be its loopback)
      user: guest
      password_env: RABBIT_PASSWORD   # or password_file; default password: guest
      nodes: {bus2: {url: http://127.0.0.1:15673}}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector import ceph as ceph_discovery
from collector import schema
from collector.influx import InfluxError, read_secret
from collector.inventory import Inventory, Node, _resolve_path
from collector.lineproto import Point
from collector.sensors import Context
from collector.sensors import ceph as ceph_sensor
from collector.sensors import rabbitmq as rabbitmq_sensor
from collector.ssh import NodeConnection, NodeProcess, SshError

CEPH, CEPH_CLUSTER, RABBITMQ = "ceph", "ceph_cluster", "rabbitmq"
# Sensor name in the `sensors:` section -> default interval (s).
DEFAULT_INTERVALS: dict[str, float] = {CEPH: 1.0, CEPH_CLUSTER: 5.0, RABBITMQ: 1.0}
CEPH_DAEMON_ROLES = (ceph_discovery.OSD_ROLE, ceph_discovery.MON_ROLE)
RABBITMQ_ROLE = "rabbitmq"
DEFAULT_RABBITMQ_URL = "http://127.0.0.1:15672"
_READ_CHUNK = 65536


class PollError(RuntimeError):
    """A poll that produced nothing; the message names the node, the source and why."""


class Poller(Protocol):
    """What the engine needs of a polled sensor."""

    name: str
    interval: float

    def applies_to(self, node: Node) -> bool: ...

    async def poll(
        self, conn: NodeConnection, ctx: Context, state: Any
    ) -> tuple[list[Point], Any, list[str]]:
        """Points, the state for the next poll, and problems worth reporting (once each)."""
        ...

    async def close(self, state: Any) -> None:
        """Stop whatever the poller left running on the node."""
        ...


class NodeHelper:
    """A long-lived request/response program on a node: a line in, one JSON line out.

    Lines are read in chunks (a perf dump of a few OSDs is far beyond asyncio's 64 KiB
    line limit). The program is (re)started on first use and whenever the connection
    changes, and stopped by PID on errors and at `close`.
    """

    def __init__(self, command: str, what: str, hello: str = "") -> None:
        self.command = command
        self.what = what
        self.hello = hello
        self._proc: NodeProcess | None = None
        self._buf = b""

    @property
    def pid(self) -> int | None:
        """The node-side program's PID while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def ask(self, conn: NodeConnection, timeout: float) -> Any:
        if self._proc is not None and self._proc.conn is not conn:
            await self.close()
        if self._proc is None:
            self._proc = await conn.start(self.command)
            self._buf = b""
            if self.hello:
                await self._proc.write(self.hello + "\n")
        proc = self._proc
        try:
            await proc.write(b"\n")
            line = await asyncio.wait_for(self._line(proc), timeout)
        except TimeoutError:
            await self.close()
            raise PollError(
                f"{conn.node.name}: {self.what}: no answer within {timeout} s"
            ) from None
        except SshError:
            await self.close()
            raise
        if not line:
            tail = proc.stderr_tail.strip()[-300:] or "no output"
            await self.close()
            raise PollError(f"{conn.node.name}: {self.what}: helper program ended: {tail}")
        try:
            return json.loads(line)
        except ValueError:
            await self.close()
            raise PollError(
                f"{conn.node.name}: {self.what}: expected a JSON line, got {line[:200]!r}"
            ) from None

    async def _line(self, proc: NodeProcess) -> bytes:
        while b"\n" not in self._buf:
            chunk = await proc.read(_READ_CHUNK)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(SshError, OSError, TimeoutError):
                await proc.stop(grace=2.0)
                # read to EOF so the pipe is closed now, not by the GC after the loop is gone
                await asyncio.wait_for(self._drain(proc), 2.0)

    @staticmethod
    async def _drain(proc: NodeProcess) -> None:
        while await proc.read(_READ_CHUNK):
            pass


async def _close_helper(state: Any) -> None:
    helper = getattr(state, "helper", None)
    if helper is not None:
        await helper.close()


# --- Ceph admin sockets ------------------------------------------------------------------


@dataclass
class CephState:
    helper: NodeHelper
    sensor: ceph_sensor.CephSensorState = field(default_factory=ceph_sensor.CephSensorState)
    # daemon -> the error last reported for it, so a dead daemon is reported once
    reported: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CephDaemonPoller:
    """`ceph`, `ceph_op_stages`, `ceph_ops_in_flight` from every admin socket of a node."""

    interval: float = DEFAULT_INTERVALS[CEPH]
    socket_dir: str = ceph_sensor.DEFAULT_SOCKET_DIR
    socket_dirs: Mapping[str, str] = field(default_factory=dict)  # node name -> its dir
    name: str = CEPH

    def applies_to(self, node: Node) -> bool:
        return any(r in CEPH_DAEMON_ROLES for r in node.roles)

    async def poll(
        self, conn: NodeConnection, ctx: Context, state: CephState | None
    ) -> tuple[list[Point], CephState, list[str]]:
        if state is None:
            d = self.socket_dirs.get(conn.node.name, self.socket_dir)
            state = CephState(NodeHelper(ceph_sensor.node_command(d), f"ceph admin sockets in {d}"))
        doc = await state.helper.ask(conn, timeout=3 * ceph_sensor.ASOK_TIMEOUT_S)
        try:
            col = ceph_sensor.process_node_output(doc, ctx.tags, state.sensor, state.helper.what)
        except ValueError as exc:
            raise PollError(f"{conn.node.name}: {exc}") from None
        state.sensor = col.state
        errors = [
            f"ceph {daemon}: {err}"
            for daemon, err in col.errors.items()
            if daemon not in col.gone and state.reported.get(daemon) != err
        ]
        state.reported = dict(col.errors)
        points = list(col.points)
        for daemon in col.gone:
            why = col.errors.get(daemon, "its admin socket is gone")
            message = f"ceph {daemon} stopped answering: {why}"
            errors.append(message)
            tags = {**ctx.tags, "kind": "daemon_gone"}
            points.append(
                Point(schema.WALLY_EVENT.name, tags, {"message": message[:1000]}, doc["time_ns"])
            )
        return points, state, errors

    async def close(self, state: CephState | None) -> None:
        await _close_helper(state)


# --- Ceph cluster level -------------------------------------------------------------------


@dataclass(frozen=True)
class CephClusterPoller:
    """`ceph_pool_stats`, `ceph_pgmap`, `ceph_pgmap_state` from one root node's `ceph` CLI."""

    root: str
    interval: float = DEFAULT_INTERVALS[CEPH_CLUSTER]
    ceph_args: tuple[str, ...] = ()
    name: str = CEPH_CLUSTER

    def applies_to(self, node: Node) -> bool:
        return node.name == self.root

    async def poll(
        self, conn: NodeConnection, ctx: Context, state: None
    ) -> tuple[list[Point], None, list[str]]:
        try:
            points = await ceph_sensor.collect_cluster(
                conn, ctx.tags, time.time_ns(), self.ceph_args
            )
        except ValueError as exc:
            raise PollError(f"{conn.node.name}: ceph cluster stats: {exc}") from None
        return points, None, []

    async def close(self, state: None) -> None:
        return None


# --- RabbitMQ management API --------------------------------------------------------------

# Runs on the node (python3 standard library only): the first stdin line carries the API
# URL and credentials (never on a command line), then every line asks for one poll.
RABBITMQ_SCRIPT = r"""
import base64, json, sys, time, urllib.error, urllib.parse, urllib.request
cfg = json.loads(sys.stdin.readline())
api, timeout = cfg["api"].rstrip("/"), cfg["timeout"]
cred = ("%s:%s" % (cfg["user"], cfg["password"])).encode()
auth = {"Authorization": "Basic " + base64.b64encode(cred).decode()}
def get(path):
    req = urllib.request.Request(api + path, headers=auth)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8", "replace"))
def poll():
    out, path = {"time_ns": time.time_ns()}, "/api/overview"
    try:
        out["overview"] = get(path)
        path = "/api/nodes"
        out["nodes"] = get(path)
        out["memory"] = {}
        for n in out["nodes"]:
            path = "/api/nodes/%s/memory" % urllib.parse.quote(n["name"], safe="")
            out["memory"][n["name"]] = get(path).get("memory", {})
        path = "/api/queues"
        out["queues"] = get(path)
    except urllib.error.HTTPError as e:
        body = e.read()[:200].decode("utf-8", "replace")
        out["error"] = {"path": path, "status": e.code, "text": body}
    except (OSError, ValueError, KeyError, AttributeError) as e:
        out["error"] = {"path": path, "status": None, "text": "%s: %s" % (type(e).__name__, e)}
    return out
for _ in sys.stdin:
    sys.stdout.write(json.dumps(poll()) + "\n")
    sys.stdout.flush()
"""


def api_error(api: str, error: Mapping[str, Any]) -> str:
    """The node script's error record -> a message saying where and what to check."""
    where = f"RabbitMQ management API {api}{error.get('path', '')}"
    status = error.get("status")
    if status is None:
        return f"{where} does not answer: {error.get('text', '')}"
    if status == 401:
        return f"{where}: login failed (wrong user or password)"
    return f"{where}: HTTP {status} {error.get('text', '')}"


def rabbitmq_points(doc: Mapping[str, Any], api: str, tags: Mapping[str, str]) -> list[Point]:
    """One poll's documents -> `rabbitmq_overview`, `rabbitmq_node`, `rabbitmq_queue`."""
    if "error" in doc:
        raise PollError(api_error(api, doc["error"]))
    try:
        t = int(doc["time_ns"])
        return [
            rabbitmq_sensor.parse_overview(doc["overview"], api, tags, t),
            *rabbitmq_sensor.parse_nodes(doc["nodes"], api, tags, t, doc["memory"]),
            *rabbitmq_sensor.parse_queues(doc["queues"], api, tags, t),
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PollError(f"RabbitMQ management API {api}: unexpected answer: {exc!r}") from None


@dataclass(frozen=True)
class RabbitMQPoller:
    """The management API of the broker on each `rabbitmq` node, asked from that node."""

    interval: float = DEFAULT_INTERVALS[RABBITMQ]
    url: str = DEFAULT_RABBITMQ_URL
    urls: Mapping[str, str] = field(default_factory=dict)  # node name -> its URL
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    name: str = RABBITMQ

    def applies_to(self, node: Node) -> bool:
        return RABBITMQ_ROLE in node.roles

    def api(self, node: str) -> str:
        return self.urls.get(node, self.url).rstrip("/")

    async def poll(
        self, conn: NodeConnection, ctx: Context, state: NodeHelper | None
    ) -> tuple[list[Point], NodeHelper, list[str]]:
        api = self.api(conn.node.name)
        if state is None:
            hello = {
                "api": api,
                "user": self.user,
                "password": self.password,
                "timeout": rabbitmq_sensor.TIMEOUT_S,
            }
            cmd = shlex.join(["python3", "-c", RABBITMQ_SCRIPT])
            state = NodeHelper(cmd, f"RabbitMQ management API {api}", json.dumps(hello))
        doc = await state.ask(conn, timeout=5 * rabbitmq_sensor.TIMEOUT_S)
        return rabbitmq_points(doc, api, ctx.tags), state, []

    async def close(self, state: NodeHelper | None) -> None:
        if state is not None:
            await state.close()


# --- from the lab config ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CephNodeSettings(_Strict):
    socket_dir: str | None = None
    conf: str | None = None


class CephSection(_Strict):
    """The config's `ceph:` section (paths are on the nodes, taken as written)."""

    socket_dir: str = ceph_sensor.DEFAULT_SOCKET_DIR
    conf: str | None = None
    root_node: str | None = None
    nodes: dict[str, CephNodeSettings] = Field(default_factory=dict)


class RabbitMQNodeSettings(_Strict):
    url: str


class RabbitMQSection(_Strict):
    """The config's `rabbitmq:` section; the password comes from an env var or a file."""

    url: str = DEFAULT_RABBITMQ_URL
    user: str = "guest"
    password_env: str | None = None
    password_file: str | None = None
    nodes: dict[str, RabbitMQNodeSettings] = Field(default_factory=dict)

    @field_validator("password_file")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_path(value, info, must_exist=True)

    @model_validator(mode="after")
    def _one_source(self) -> RabbitMQSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self


def _check_nodes(inventory: Inventory, section: str, names: Sequence[str]) -> None:
    known = {n.name for n in inventory}
    for name in names:
        if name not in known:
            raise inventory.error(
                (section, "nodes", name),
                f"no node named {name!r}; expected one of: {', '.join(sorted(known))}",
            )


def _ceph_args(conf: str | None) -> list[str]:
    return ["--conf", conf] if conf else []


def ceph_pollers(inventory: Inventory, intervals: Mapping[str, float]) -> list[Poller]:
    """The admin-socket poller, and the cluster poller if the lab has a root node.

    Also points the Ceph discovery hook of each node at its configured `conf`.
    """
    cfg = inventory.section("ceph", CephSection) or CephSection()
    _check_nodes(inventory, "ceph", list(cfg.nodes))
    for node in inventory:
        own = cfg.nodes.get(node.name)
        ceph_discovery.CLI_ARGS[node.name] = _ceph_args((own and own.conf) or cfg.conf)
    dirs = {name: s.socket_dir for name, s in cfg.nodes.items() if s.socket_dir}
    out: list[Poller] = [
        CephDaemonPoller(intervals.get(CEPH, DEFAULT_INTERVALS[CEPH]), cfg.socket_dir, dirs)
    ]
    if cfg.root_node is not None:
        try:
            root: str | None = inventory.node(cfg.root_node).name
        except KeyError as exc:
            raise inventory.error(("ceph", "root_node"), str(exc.args[0])) from None
    else:
        mons = inventory.nodes_with_role(ceph_discovery.MON_ROLE)
        root = mons[0].name if mons else None
    if root is not None:
        interval = intervals.get(CEPH_CLUSTER, DEFAULT_INTERVALS[CEPH_CLUSTER])
        args = tuple(ceph_discovery.CLI_ARGS[root])
        out.append(CephClusterPoller(root, interval, args))
    return out


def rabbitmq_poller(inventory: Inventory, intervals: Mapping[str, float]) -> RabbitMQPoller:
    cfg = inventory.section("rabbitmq", RabbitMQSection) or RabbitMQSection()
    _check_nodes(inventory, "rabbitmq", list(cfg.nodes))
    try:
        secret = read_secret(cfg.password_env, cfg.password_file, "rabbitmq password")
    except InfluxError as exc:
        key = "password_env" if cfg.password_env else "password_file"
        raise inventory.error(("rabbitmq", key), str(exc)) from None
    return RabbitMQPoller(
        interval=intervals.get(RABBITMQ, DEFAULT_INTERVALS[RABBITMQ]),
        url=cfg.url,
        urls={name: s.url for name, s in cfg.nodes.items()},
        user=cfg.user,
        password="guest" if secret is None else secret,
    )


def pollers_for(inventory: Inventory, intervals: Mapping[str, float] | None = None) -> list[Poller]:
    """Every polled sensor the lab config asks for (each applies to the nodes of its roles)."""
    intervals = intervals or {}
    return [*ceph_pollers(inventory, intervals), rabbitmq_poller(inventory, intervals)]


def split_sensors(
    sensors: Mapping[str, float] | None,
) -> tuple[dict[str, float] | None, dict[str, float]]:
    """`sensors:` -> (node sensors for the /proc reader, poller intervals).

    Listing only pollers leaves no node sensor enabled, as listing only some node sensors
    enables just those.
    """
    if sensors is None:
        return None, {}
    node = {k: v for k, v in sensors.items() if k not in DEFAULT_INTERVALS}
    return node, {k: v for k, v in sensors.items() if k in DEFAULT_INTERVALS}

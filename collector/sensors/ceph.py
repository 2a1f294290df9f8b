"""Ceph daemon sensors: Telegraf's ``ceph`` measurement plus where the OSD's time goes.

``perf dump`` of every OSD and mon admin socket becomes Telegraf ``inputs.ceph`` points:
tags ``type`` (osd | monitor), ``id``, ``collection`` (top-level key of the dump), every
field a float, nested keys joined by ``.`` (``op_w_latency.sum``); strings and lists are
skipped as Telegraf does. Rates and average latencies are derived in analysis.

``dump_historic_ops`` becomes ``ceph_op_stages``: per interval and op type, the durations
of the stages an op passes inside the OSD. Ceph keeps only its ``osd_op_history_size``
*slowest* recent ops (it trims the shortest), so this is a view of the slow tail, not of
every op; ``history_size`` says how big the sample cap was.

One command per node and poll talks to every admin socket directly (a tiny Python
program run on the node), instead of one ``ceph --admin-daemon`` process per socket and
command: each of those costs a Python start of ~0.3 s CPU on the OSD's own host.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collector import schema
from collector.lineproto import Point
from collector.ssh import NodeConnection

log = logging.getLogger(__name__)

DEFAULT_SOCKET_DIR = "/var/run/ceph"
# Ceph daemon type (socket name) -> Telegraf's `type` tag. mgr is not collected by
# Telegraf: its collections carry pointer addresses (objecter-0x7f...) that churn series.
TELEGRAF_TYPES = {"osd": "osd", "mon": "monitor", "mds": "mds", "rgw": "rgw"}
PERF_DUMP = "perf dump"
HISTORIC_OPS = "dump_historic_ops"
OPS_IN_FLIGHT = "dump_ops_in_flight"
# What to ask each daemon type for on every poll.
DEFAULT_COMMANDS: dict[str, tuple[str, ...]] = {
    "osd": (PERF_DUMP, HISTORIC_OPS, OPS_IN_FLIGHT),
    "mon": (PERF_DUMP,),
}
# Stage name -> (start event, end events: the first present one ends the stage).
OP_STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "receive": ("initiated", ("queued_for_pg",)),
    "queue": ("queued_for_pg", ("reached_pg",)),
    "pg": ("reached_pg", ("started",)),
    "execute": ("started", ("op_commit", "sub_op_committed", "done")),
    "reply": ("op_commit", ("done",)),
}
ASOK_TIMEOUT_S = 5.0

_SOCKET_RE = re.compile(r"^(?P<cluster>[^-/]+)-(?P<type>[a-z]+)\.(?P<id>[^/]+?)\.asok$")
_OSD_OP_FLAGS_RE = re.compile(r"\s([a-z_+]+)\s+e\d+\)$")
_MSG_NAME_RE = re.compile(r"^([a-z_]+)\(")

# Runs on the node with the system python3 (every Ceph node has it: the `ceph` CLI is
# Python). Speaks the admin socket protocol: JSON command + NUL, reply = be32 length +
# payload. For every line read on stdin it prints one JSON line: node time and, per socket,
# each command's decoded reply or the error that stopped it. A one-shot poll feeds it one
# line; the engine's poller keeps it running and asks once per interval (no process start
# per sample on the node).
NODE_SCRIPT = r"""
import json, os, socket, struct, sys, time
d, wanted, timeout = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
def recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("admin socket closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf
def ask(path, prefix):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps({"prefix": prefix, "format": "json"}).encode() + b"\0")
        n = struct.unpack(">I", recv(s, 4))[0]
        return json.loads(recv(s, n).decode("utf-8", "replace"))
    finally:
        s.close()
def poll():
    out = {"time_ns": time.time_ns(), "sockets": {}}
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        names, out["error"] = [], "cannot list %s: %s" % (d, e)
    for f in names:
        if not f.endswith(".asok") or "-" not in f:
            continue
        kind = f.split("-", 1)[1].split(".", 1)[0]
        res = {}
        for prefix in wanted.get(kind, []):
            try:
                res[prefix] = {"ok": ask(os.path.join(d, f), prefix)}
            except (OSError, ValueError) as e:
                res[prefix] = {"error": "%s: %s" % (type(e).__name__, e)}
                break
        if res:
            out["sockets"][f] = res
    return out
for _ in sys.stdin:
    sys.stdout.write(json.dumps(poll()) + "\n")
    sys.stdout.flush()
"""


def _decode(data: str | bytes | Mapping | list, what: str) -> Any:
    if isinstance(data, str | bytes):
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}: not JSON ({exc})") from None
    return data


def socket_daemon(filename: str) -> tuple[str, str] | None:
    """`ceph-osd.3.asok` -> ("osd", "3"); None for client sockets and other files."""
    m = _SOCKET_RE.match(filename)
    if m is None or m["type"] not in TELEGRAF_TYPES:
        return None
    return m["type"], m["id"]


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Nested numbers -> {"a.b": float}; strings, lists and nulls are skipped (as Telegraf)."""
    out: dict[str, float] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        value = float(data)
        if math.isfinite(value):
            out[prefix] = value
    return out


def parse_perf_dump(
    dump: str | Mapping,
    daemon_type: str,
    daemon_id: str,
    tags: Mapping[str, str],
    time_ns: int,
    source: str = "perf dump",
) -> list[Point]:
    """One `ceph` point per collection of a `perf dump`, in Telegraf's layout.

    `daemon_type` is Ceph's (osd, mon, ...); the `type` tag gets Telegraf's spelling.
    """
    if daemon_type not in TELEGRAF_TYPES:
        raise ValueError(
            f"{source}: daemon type {daemon_type!r}, expected one of {sorted(TELEGRAF_TYPES)}"
        )
    data = _decode(dump, source)
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{source}: expected a JSON object of collections, got {type(data).__name__}"
        )
    points = []
    for collection, counters in data.items():
        fields = flatten(counters)
        if not fields:
            continue
        ptags = {
            **tags,
            "type": TELEGRAF_TYPES[daemon_type],
            "id": daemon_id,
            "collection": collection,
        }
        points.append(Point(schema.CEPH.name, ptags, fields, time_ns))
    return points


def _ceph_time(text: str) -> float:
    """Ceph's `2026-11-22T06:48:34.204989+0000` -> Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def op_type(description: str) -> str:
    """`write`/`read`/`other` for client osd_ops (from their flags), else the message name."""
    if description.startswith("osd_op("):
        m = _OSD_OP_FLAGS_RE.search(description)
        flags = m.group(1).split("+") if m else []
        if "write" in flags:
            return "write"
        if "read" in flags:
            return "read"
        return "other"
    m = _MSG_NAME_RE.match(description)
    return m.group(1) if m else "other"


def op_stages(op: Mapping[str, Any]) -> dict[str, float]:
    """Seconds spent in each OP_STAGES stage by one op of `dump_historic_ops`.

    Computed from event timestamps (Ceph's per-event `duration` can wrap around), from the
    first occurrence of each event; a stage whose events are missing is left out.
    """
    first: dict[str, float] = {}
    for ev in op.get("type_data", {}).get("events", []):
        first.setdefault(ev["event"], _ceph_time(ev["time"]))
    out = {}
    for stage, (start, ends) in OP_STAGES.items():
        end = next((first[e] for e in ends if e in first), None)
        if start in first and end is not None:
            out[stage] = max(0.0, end - first[start])
    return out


def _op_done(op: Mapping[str, Any]) -> float:
    return _ceph_time(op["initiated_at"]) + float(op["duration"])


@dataclass
class _StageAgg:
    ops: int = 0
    duration_sum: float = 0.0
    duration_max: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, duration: float, stages: Mapping[str, float]) -> None:
        self.ops += 1
        self.duration_sum += duration
        self.duration_max = max(self.duration_max, duration)
        for st, sec in stages.items():
            self.sums[st] = self.sums.get(st, 0.0) + sec
            self.maxs[st] = max(self.maxs.get(st, 0.0), sec)
            self.counts[st] = self.counts.get(st, 0) + 1

    def fields(self, history_size: int) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "ops": self.ops,
            "history_size": history_size,
            "duration_sum": self.duration_sum,
            "duration_max": self.duration_max,
        }
        for st in OP_STAGES:
            if st in self.counts:
                out[f"{st}_sum"] = self.sums[st]
                out[f"{st}_max"] = self.maxs[st]
                out[f"{st}_count"] = self.counts[st]
        return out


def summarise_historic_ops(
    dump: str | Mapping,
    daemon_id: str,
    tags: Mapping[str, str],
    time_ns: int,
    since: float | None = None,
    source: str = HISTORIC_OPS,
) -> tuple[list[Point], float | None]:
    """`ceph_op_stages` points (one per op type) for ops completed after `since`.

    Returns the points and the new watermark (latest completion time seen, Unix s) to pass
    as `since` next time, so an op is counted in exactly one interval. Accepts
    `dump_historic_ops`, `_by_duration` and `dump_historic_slow_ops` output.
    """
    data = _decode(dump, source)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
    ops = data.get("ops", data.get("Ops"))
    if not isinstance(ops, list):
        raise ValueError(f"{source}: no 'ops' list (keys: {sorted(data)})")
    history_size = int(data.get("size", data.get("num to keep", len(ops))))
    aggs: dict[str, _StageAgg] = {}
    watermark = since
    for i, op in enumerate(ops):
        try:
            done = _op_done(op)
            if since is not None and done <= since:
                continue
            stages = op_stages(op)
            kind = op_type(str(op.get("description", "")))
            aggs.setdefault(kind, _StageAgg()).add(float(op["duration"]), stages)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: op #{i} malformed: {exc!r}") from None
        watermark = done if watermark is None else max(watermark, done)
    points = [
        Point(
            schema.CEPH_OP_STAGES.name,
            {**tags, "type": "osd", "id": daemon_id, "op_type": kind},
            agg.fields(history_size),
            time_ns,
        )
        for kind, agg in sorted(aggs.items())
    ]
    return points, watermark


def parse_ops_in_flight(
    dump: str | Mapping,
    daemon_id: str,
    tags: Mapping[str, str],
    time_ns: int,
    source: str = OPS_IN_FLIGHT,
) -> Point:
    """A `ceph_ops_in_flight` point from `dump_ops_in_flight`."""
    data = _decode(dump, source)
    ops = data.get("ops") if isinstance(data, Mapping) else None
    if not isinstance(ops, list):
        raise ValueError(f"{source}: expected an object with an 'ops' list")
    try:
        oldest = max((float(op["age"]) for op in ops), default=0.0)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: op without a numeric 'age': {exc!r}") from None
    return Point(
        schema.CEPH_OPS_IN_FLIGHT.name,
        {**tags, "type": "osd", "id": daemon_id},
        {"num_ops": int(data.get("num_ops", len(ops))), "oldest_age": oldest},
        time_ns,
    )


# --- cluster level, from the root node's `ceph` CLI -------------------------------------

_POOL_RATE_FIELDS = ("client_io_rate", "recovery_rate")


def parse_pool_stats(text: str | list, tags: Mapping[str, str], time_ns: int) -> list[Point]:
    """`ceph osd pool stats -f json` -> `ceph_pool_stats` per pool (absent rates are 0)."""
    data = _decode(text, "ceph osd pool stats")
    if not isinstance(data, list):
        raise ValueError("ceph osd pool stats: expected a JSON list of pools")
    points = []
    for pool in data:
        if not isinstance(pool, Mapping) or "pool_name" not in pool:
            raise ValueError(f"ceph osd pool stats: pool entry without pool_name: {pool!r}")
        fields = dict.fromkeys(schema.CEPH_POOL_STATS.fields, 0.0)
        for section in _POOL_RATE_FIELDS:
            for key, value in flatten(pool.get(section) or {}).items():
                if key in fields:
                    fields[key] = value
        points.append(
            Point(schema.CEPH_POOL_STATS.name, {**tags, "name": pool["pool_name"]}, fields, time_ns)
        )
    return points


# `ceph pg stat` pg_summary key -> ceph_pgmap field (Telegraf's names, from `ceph status`).
_PGMAP_FIELDS = {
    "num_pgs": "num_pgs",
    "num_bytes": "data_bytes",
    "total_used_bytes": "bytes_used",
    "total_avail_bytes": "bytes_avail",
    "total_bytes": "bytes_total",
    "read_bytes_sec": "read_bytes_sec",
    "write_bytes_sec": "write_bytes_sec",
    "io_sec": "op_per_sec",
}


def parse_pg_stat(text: str | Mapping, tags: Mapping[str, str], time_ns: int) -> list[Point]:
    """`ceph pg stat -f json` -> one `ceph_pgmap` point and a `ceph_pgmap_state` per state."""
    data = _decode(text, "ceph pg stat")
    summary = data.get("pg_summary") if isinstance(data, Mapping) else None
    if not isinstance(summary, Mapping):
        raise ValueError("ceph pg stat: expected an object with 'pg_summary'")
    fields = {out: 0.0 for out in _PGMAP_FIELDS.values()}
    for key, out in _PGMAP_FIELDS.items():
        if isinstance(summary.get(key), int | float):
            fields[out] = float(summary[key])
    points = [Point(schema.CEPH_PGMAP.name, dict(tags), fields, time_ns)]
    for st in summary.get("num_pg_by_state", []):
        try:
            points.append(
                Point(
                    schema.CEPH_PGMAP_STATE.name,
                    {**tags, "state": str(st["name"])},
                    {"count": float(st["num"])},
                    time_ns,
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"ceph pg stat: bad num_pg_by_state entry {st!r}") from None
    return points


# --- collection from a node -------------------------------------------------------------


@dataclass
class CephSensorState:
    """What one node's collection remembers between polls."""

    # socket file name -> daemon name ("osd.0") for daemons that answered last time
    alive: dict[str, str] = field(default_factory=dict)
    # OSD id -> completion time (Unix s) of the newest historic op already counted
    historic_since: dict[str, float] = field(default_factory=dict)


@dataclass
class Collection:
    """One poll of a node: points, daemons that went away, and per-daemon errors."""

    points: list[Point]
    gone: list[str]
    errors: dict[str, str]
    state: CephSensorState


def node_command(socket_dir: str, commands: Mapping[str, Iterable[str]] | None = None) -> str:
    """The shell command that queries every admin socket under `socket_dir` at once."""
    wanted = {k: list(v) for k, v in (commands or DEFAULT_COMMANDS).items()}
    return shlex.join(
        ["python3", "-c", NODE_SCRIPT, socket_dir, json.dumps(wanted), str(ASOK_TIMEOUT_S)]
    )


def process_node_output(
    text: str,
    tags: Mapping[str, str],
    state: CephSensorState | None = None,
    source: str = "ceph admin sockets",
) -> Collection:
    """Turn the node script's JSON into points; a daemon that stopped answering is `gone`.

    A killed daemon either leaves a stale socket (connect refused) or none at all; both
    count as gone if it answered last time. The other daemons are collected regardless.
    """
    state = state or CephSensorState()
    doc = _decode(text, source)
    if not isinstance(doc, Mapping) or "sockets" not in doc or "time_ns" not in doc:
        raise ValueError(f"{source}: expected {{'time_ns', 'sockets'}} from the node script")
    if "error" in doc:
        raise ValueError(f"{source}: {doc['error']}")
    time_ns = int(doc["time_ns"])
    points: list[Point] = []
    errors: dict[str, str] = {}
    alive: dict[str, str] = {}
    since = dict(state.historic_since)
    for fname, replies in doc["sockets"].items():
        daemon = socket_daemon(fname)
        if daemon is None:
            continue
        dtype, did = daemon
        name = f"{dtype}.{did}"
        failed = {cmd: r["error"] for cmd, r in replies.items() if "error" in r}
        if failed:
            errors[name] = "; ".join(f"{cmd}: {err}" for cmd, err in failed.items())
        if PERF_DUMP not in replies or "ok" not in replies[PERF_DUMP]:
            continue
        alive[fname] = name
        try:
            points += parse_perf_dump(
                replies[PERF_DUMP]["ok"], dtype, did, tags, time_ns, f"{name} {PERF_DUMP}"
            )
            if "ok" in replies.get(HISTORIC_OPS, {}):
                pts, mark = summarise_historic_ops(
                    replies[HISTORIC_OPS]["ok"], did, tags, time_ns, since.get(did), name
                )
                # The first poll only sets the watermark: ops kept from before collection
                # started belong to no interval of ours.
                if did in since:
                    points += pts
                since[did] = mark if mark is not None else 0.0
            if "ok" in replies.get(OPS_IN_FLIGHT, {}):
                points.append(
                    parse_ops_in_flight(replies[OPS_IN_FLIGHT]["ok"], did, tags, time_ns, name)
                )
        except ValueError as exc:
            errors[name] = str(exc)
    gone = sorted(n for f, n in state.alive.items() if f not in alive)
    for name in gone:
        log.warning("ceph daemon %s on %s stopped answering", name, tags.get(schema.TAG_NODE))
    return Collection(points, gone, errors, CephSensorState(alive, since))


async def collect_node(
    conn: NodeConnection,
    tags: Mapping[str, str],
    state: CephSensorState | None = None,
    socket_dir: str = DEFAULT_SOCKET_DIR,
    commands: Mapping[str, Iterable[str]] | None = None,
    timeout: float = 30.0,
) -> Collection:
    """Poll every Ceph admin socket under `socket_dir` on the node, in one command."""
    res = await conn.run(node_command(socket_dir, commands), input="\n", timeout=timeout)
    if res.rc != 0:
        raise RuntimeError(
            f"{conn.node.name}: ceph admin socket poll exited {res.rc}: {res.err.strip()[-500:]}"
        )
    return process_node_output(res.out, tags, state, f"{conn.node.name}:{socket_dir}")


async def collect_cluster(
    conn: NodeConnection, tags: Mapping[str, str], time_ns: int, ceph_args: Iterable[str] = ()
) -> list[Point]:
    """`ceph_pool_stats`, `ceph_pgmap`, `ceph_pgmap_state` from the root node's `ceph` CLI.

    `ceph_args` are extra CLI arguments such as ("--conf", "/path/ceph.conf").
    """
    base = ["ceph", *ceph_args, "-f", "json"]
    pools = await conn.run([*base, "osd", "pool", "stats"], timeout=30, check=True)
    pgs = await conn.run([*base, "pg", "stat"], timeout=30, check=True)
    return parse_pool_stats(pools.out, tags, time_ns) + parse_pg_stat(pgs.out, tags, time_ns)

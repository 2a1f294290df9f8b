"""One long-lived reader per node, and the collector side that splits its stream.

The node runs ``python3 -c SCRIPT SPEC`` once (over one SSH channel, or locally for the
``local`` node). Every tick it takes the node's clock, reads the files the enabled sensors
need (kept-open descriptors and ``os.pread``: no process per sample, not even per file)
and writes one frame to stdout. It exits when stdin reaches EOF or stdout breaks, i.e. as
soon as the collector goes away, so nothing is left behind on the node.

Big tables are digested on the node so the stream stays small however busy the node is:
``@procs`` (process states from every /proc/PID/stat), ``@sockets`` (socket counts from
/proc/net/{tcp,tcp6,udp,udp6,unix}), ``@users`` (utmp), ``@procstat`` (the /proc/PID files
of processes matched by procstat selectors). The digest functions are shipped to the node
as source (``node_*`` below) and are the same functions the tests run locally.

Stream format (bytes; content lengths make it binary safe)::

    #F <seq> <time_ns> <nfiles>\\n
    <key> <nbytes>\\n<content>      (nfiles times)

Frame ``seq -1`` comes first and carries ``@hello`` (reader pid, CLK_TCK, page size).
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import json
import os
import re
import select
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from collector.lineproto import Point
from collector.sensors import Context, ProcMatch, Sample, Sensor, all_sensors, get

MARKER = "wally-sensor-reader"
# The reader is stdlib only: -I -S skip the environment, user site and site-packages
# (a pyenv or a distribution with many .pth files adds tens of ms of CPU per start).
PYTHON_FLAGS = ("-I", "-S")
DEFAULT_ROOTS = {"proc": "/proc", "sys": "/sys", "run": "/run"}

# --- node side: plain Python 3.6+, stdlib only, shipped as source ------------------------


def node_digest_procs(stat_texts):
    """Process states and threads from /proc/PID/stat texts, as Telegraf's processes input
    counts them: 'S 120\\nR 2\\n...threads 431\\n'."""
    counts = {}
    threads = 0
    for text in stat_texts:
        end = text.rfind(")")
        rest = text[end + 2 :].split(None, 18)  # state .. num_threads, not all 50 fields
        if end < 0 or len(rest) < 18:
            continue
        counts[rest[0][0]] = counts.get(rest[0][0], 0) + 1
        if rest[17].isdigit():
            threads += int(rest[17])
    lines = [f"{k} {counts[k]}\n" for k in sorted(counts)]
    return "".join(lines) + f"threads {threads}\n"


def node_digest_sockets(tables, tcp_states=None):
    """Socket counts from {"net/tcp": text, ...}: 'tcp:0A 3' per TCP state (hex, as in the
    file), 'udp N', 'unix:TYPE N' per unix socket type. tcp_states ({hex: n}, from netlink)
    replaces the tcp tables when given."""
    counts = {"tcp:" + k: n for k, n in (tcp_states or {}).items()}
    for name, text in sorted(tables.items()):
        proto = name.split("/")[-1].rstrip("6")
        for line in text.splitlines()[1:]:
            words = line.split()
            if proto == "unix":
                if len(words) < 7:
                    continue
                key = "unix:" + words[4]
            elif len(words) < 10:
                continue
            elif proto == "tcp":
                key = "tcp:" + words[3]
            else:
                key = proto
            counts[key] = counts.get(key, 0) + 1
    return "".join(f"{k} {counts[k]}\n" for k in sorted(counts))


def node_tcp_states(family=0):
    """{state hex: count} of TCP sockets through netlink sock_diag (what ss uses): a few
    times cheaper for the node than generating /proc/net/tcp. The kernel walks its whole
    TCP hash table for every dump, however few sockets there are, so family 0 (both
    IPv4 and IPv6) asks once, with the older TCPDIAG_GETSOCK request that dumps every
    family; AF_INET or AF_INET6 ask SOCK_DIAG_BY_FAMILY for that family only."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG
    try:
        if family:
            # inet_diag_req_v2: family, protocol, ext, pad, states (all 12 TCP states), sockid
            req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFF) + bytes(48)
            kind = 20  # SOCK_DIAG_BY_FAMILY
        else:
            # inet_diag_req: family, src_len, dst_len, ext, sockid, states, dbs
            req = bytes(52) + struct.pack("=II", 0xFFF, 0)
            kind = 18  # TCPDIAG_GETSOCK
        # nlmsghdr: len, type, NLM_F_REQUEST | NLM_F_DUMP, seq, pid
        sock.send(struct.pack("=IHHII", 16 + len(req), kind, 0x301, 1, 0) + req)
        counts = {}
        while True:
            data = sock.recv(1 << 16)
            off = 0
            while off + 18 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == 3:  # NLMSG_DONE
                    return counts
                if kind == 2 or length < 16:  # NLMSG_ERROR
                    raise OSError("sock_diag dump failed")
                state = f"{data[off + 17]:02X}"
                counts[state] = counts.get(state, 0) + 1
                off += (length + 3) & ~3
            if not data:
                return counts
    finally:
        sock.close()


def node_digest_users(utmp):
    """Logged-in users from utmp bytes (glibc x86-64/aarch64 layout, 384-byte records,
    USER_PROCESS == 7) as Telegraf's system input counts them: 'users N\\nunique M\\n'."""
    names = []
    for off in range(0, len(utmp) - 383, 384):
        if int.from_bytes(utmp[off : off + 4], "little") == 7:
            names.append(utmp[off + 44 : off + 76].split(b"\0")[0])
    return f"users {len(names)}\nunique {len(set(names))}\n"


def node_read(path):
    """Whole file, opened and closed (for /proc/PID files, which come and go). A read
    shorter than asked for is the end of the file (procfs generates these files whole),
    which saves the empty read that would confirm it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            chunks.append(b)
            if len(b) < 65536:
                return b"".join(chunks)
    finally:
        os.close(fd)


def node_pread(fds, path):
    """Whole file through a descriptor kept open across ticks (pread from offset 0
    regenerates /proc and /sys files without open/close); reopened once on error. A
    short read is the end (these files are generated whole)."""
    for attempt in (0, 1):
        fd = fds.get(path)
        try:
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                fds[path] = fd
            chunks = []
            off = 0
            while True:
                b = os.pread(fd, 65536, off)
                chunks.append(b)
                if len(b) < 65536:
                    return b"".join(chunks)
                off += len(b)
        except OSError:
            if fd is not None:
                os.close(fds.pop(path))
            if attempt:
                raise
    return b""


def node_scan(proc, matchers, cmdlines, skip_pid, statfds):
    """One pass over /proc/PID/stat: all stat texts (for @procs) and the (pid, matcher
    index, stat) of processes selected by procstat matchers. Command lines are cached per
    (pid, start time); the reader itself (its command line carries MARKER) never matches.

    The stat files stay open across ticks in statfds (up to 512: sessions often allow
    1024 descriptors), a pread instead of open, read and close; the descriptor of a
    process that is gone fails (ESRCH) and is reopened, so a reused PID reads afresh."""
    found = []
    hits = []
    live = set()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        path = proc + "/" + name + "/stat"
        try:
            found.append((name, node_pread(statfds, path).decode("latin-1")))
        except OSError:
            continue
        if len(statfds) > 512:
            os.close(statfds.pop(path))
    listed = {proc + "/" + name + "/stat" for name, _ in found}
    for path in [p for p in statfds if p not in listed]:  # processes gone
        os.close(statfds.pop(path))
    for name, text in found if matchers else ():
        if int(name) == skip_pid:
            continue
        end = text.rfind(")")
        comm = text[text.find("(") + 1 : end]
        ident = None
        for i, (kind, rx) in enumerate(matchers):
            if kind == "exe" and not rx.search(comm):
                continue
            if ident is None:  # split the line only for candidates
                rest = text[end + 2 :].split(None, 20)
                ident = (name, rest[19] if len(rest) > 19 else "")
                live.add(ident)
            if ident not in cmdlines:
                try:
                    raw = node_read(proc + "/" + name + "/cmdline")
                except OSError:
                    raw = b""
                cmdlines[ident] = raw.replace(b"\0", b" ").strip().decode("latin-1")
            cmd = cmdlines[ident]
            if "wally-sensor-reader" in cmd or (kind == "pattern" and not rx.search(cmd)):
                continue
            hits.append((name, i, text))
    for ident in list(cmdlines):
        if ident not in live:
            del cmdlines[ident]
    return [text for _, text in found], hits


def node_procstat_files(proc, hits):
    """The @procstat listing and each matched process's stat, status, io and fd count."""
    files = []
    for pid, _idx, stat in hits:
        base = proc + "/" + pid
        files.append(("pid/" + pid + "/stat", stat.encode("latin-1")))
        for leaf in ("status", "io"):
            with contextlib.suppress(OSError):
                files.append(("pid/" + pid + "/" + leaf, node_read(base + "/" + leaf)))
        with contextlib.suppress(OSError):
            files.append(("pid/" + pid + "/fds", str(len(os.listdir(base + "/fd"))).encode()))
    listing = "".join(f"{pid} {idx}\n" for pid, idx, _ in hits)
    files.append(("@procstat", listing.encode()))
    return files


def node_collect(key, st):
    """[(key, bytes)] for one due key; st holds roots, open fds and this tick's scan."""
    roots = st["roots"]
    proc = roots["proc"]
    top, _, rest = key.partition("/")
    root = roots.get(top, "/" + top)
    if key in ("@procs", "@procstat"):
        if st["scan"] is None:
            matchers = st["matchers"] if "@procstat" in st["due"] else []
            st["scan"] = node_scan(proc, matchers, st["cmdlines"], st["pid"], st["statfds"])
        if key == "@procs":
            return [(key, node_digest_procs(st["scan"][0]).encode())]
        return node_procstat_files(proc, st["scan"][1])
    if key == "@sockets":
        tcp = None
        names = ["net/udp", "net/udp6", "net/unix"]
        # One dump for both families; per family where the old request is refused; the
        # /proc tables without sock_diag (module missing, seccomp).
        for families in ((0,), (socket.AF_INET, socket.AF_INET6)):
            try:
                tcp = {}
                for family in families:
                    for k, n in node_tcp_states(family).items():
                        tcp[k] = tcp.get(k, 0) + n
                break
            except OSError:
                tcp = None
        if tcp is None:
            names += ["net/tcp", "net/tcp6"]
        tables = {}
        for name in names:
            with contextlib.suppress(OSError):
                tables[name] = node_pread(st["fds"], proc + "/" + name).decode("latin-1")
        return [(key, node_digest_sockets(tables, tcp).encode())]
    if key == "@users":
        try:
            return [(key, node_digest_users(node_pread(st["fds"], roots["run"] + "/utmp")))]
        except OSError:
            return []  # no utmp: Telegraf leaves n_users out too
    if "*" in key:
        # expanded again every 60 ticks: new interfaces show up within a minute
        cached = st["globs"].get(key)
        if cached is None or st["seq"] >= cached[0]:
            cached = (st["seq"] + 60, sorted(glob.glob(root + "/" + rest)))
            st["globs"][key] = cached
        out = []
        for path in cached[1]:
            with contextlib.suppress(OSError):
                out.append((top + path[len(root) :], node_pread(st["fds"], path)))
        return out
    return [(key, node_pread(st["fds"], root + "/" + rest))]


def node_emit(seq, ts, files):
    parts = [b"#F %d %d %d\n" % (seq, ts, len(files))]
    for key, data in files:
        parts.append(b"%s %d\n" % (key.encode(), len(data)))
        parts.append(data)
    buf = b"".join(parts)
    while buf:
        buf = buf[os.write(1, buf) :]


def node_main(spec_json):
    """The reader loop: one frame per tick until stdin closes or stdout breaks."""
    spec = json.loads(spec_json)
    interval = float(spec["interval"])
    reads = [(key, everys) for key, everys in spec["reads"]]
    st = {
        "roots": spec["roots"],
        "matchers": [(kind, re.compile(rx)) for kind, rx in spec["procstat"]],
        "fds": {},
        "statfds": {},
        "cmdlines": {},
        "globs": {},
        "pid": os.getpid(),
    }
    now_ns = getattr(time, "time_ns", None) or (lambda: int(time.time() * 1e9))
    hello = (
        f"pid={st['pid']} clk_tck={os.sysconf('SC_CLK_TCK')} pagesize={os.sysconf('SC_PAGE_SIZE')}"
    )
    start = time.monotonic()
    seq = 0
    try:
        node_emit(-1, now_ns(), [("@hello", hello.encode())])
        while True:
            ts = now_ns()
            st["seq"] = seq
            st["due"] = [key for key, everys in reads if any(seq % e == 0 for e in everys)]
            st["scan"] = None
            files = []
            errors = []
            for key in st["due"]:
                try:
                    files.extend(node_collect(key, st))
                except OSError as e:
                    errors.append(f"{key}: {e}")
            if errors:
                files.append(("@errors", "\n".join(errors).encode()))
            node_emit(seq, ts, files)
            seq += 1
            behind = time.monotonic() - (start + seq * interval)
            if behind > 0:  # a slow tick: skip the slots we missed, keep the grid
                seq += int(behind / interval) + 1
            while True:
                wait = start + seq * interval - time.monotonic()
                if wait <= 0:
                    break
                if select.select([0], [], [], wait)[0] and not os.read(0, 4096):
                    return
    except (BrokenPipeError, KeyboardInterrupt):
        return


NODE_FUNCTIONS = (
    node_digest_procs,
    node_digest_sockets,
    node_tcp_states,
    node_digest_users,
    node_read,
    node_pread,
    node_scan,
    node_procstat_files,
    node_collect,
    node_emit,
    node_main,
)


def reader_script() -> str:
    """The node-side program: the node_* functions above, then a call to node_main."""
    body = "\n\n".join(inspect.getsource(f) for f in NODE_FUNCTIONS)
    return (
        f"# {MARKER}\nimport contextlib, glob, json, os, re, select, socket, struct, sys, time\n\n"
        f"{body}\n\nnode_main(sys.argv[1])\n"
    )


# --- collector side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Enabled:
    """A sensor and how often it runs, in reader ticks (interval 5 s at a 1 s tick: 5)."""

    sensor: Sensor
    every: int = 1


def enable(
    sensors: Mapping[str, float] | Iterable[str] | None = None, tick: float = 1.0
) -> list[Enabled]:
    """Sensors by name with their interval in seconds (default: every node sensor at the
    tick). An interval that is not a multiple of the tick is an error, not a silent skew."""
    if sensors is None:
        sensors = [s.name for s in all_sensors() if s.files]
    if not isinstance(sensors, Mapping):
        sensors = dict.fromkeys(sensors, tick)
    out = []
    for name, interval in sensors.items():
        every = round(interval / tick)
        if every < 1 or abs(every * tick - interval) > 1e-9 * max(1.0, interval):
            raise ValueError(
                f"sensor {name!r}: interval {interval} s is not a whole multiple of the "
                f"reader tick {tick} s"
            )
        out.append(Enabled(get(name), every))
    return out


def reads_for(enabled: Sequence[Enabled]) -> dict[str, list[int]]:
    """Every file key the enabled sensors need, with the tick periods that need it."""
    reads: dict[str, list[int]] = {}
    for e in enabled:
        for key in e.sensor.files:
            periods = reads.setdefault(key, [])
            if e.every not in periods:
                periods.append(e.every)
    return reads


def reader_spec(
    reads: Mapping[str, Sequence[int]],
    interval: float = 1.0,
    procstat: Sequence[ProcMatch] = (),
    roots: Mapping[str, str] | None = None,
) -> str:
    if interval <= 0:
        raise ValueError(f"reader interval must be > 0 s, got {interval}")
    for m in procstat:
        try:
            re.compile(m.regex)
        except re.error as e:
            raise ValueError(f"procstat {m.kind} regex {m.regex!r}: {e}") from None
    spec = {
        "interval": interval,
        "roots": {**DEFAULT_ROOTS, **(roots or {})},
        "reads": [[k, list(v)] for k, v in reads.items()],
        "procstat": [[m.kind, m.regex] for m in procstat],
    }
    return json.dumps(spec, separators=(",", ":"))


def reader_command(
    reads: Mapping[str, Sequence[int]],
    interval: float = 1.0,
    procstat: Sequence[ProcMatch] = (),
    roots: Mapping[str, str] | None = None,
    python: str = "python3",
) -> str:
    """The shell command that runs the reader on a node (give it to one SSH channel and
    keep that channel's stdin open: closing it stops the reader)."""
    spec = reader_spec(reads, interval, procstat, roots)
    flags = " ".join(PYTHON_FLAGS)
    return f"exec {python} {flags} -c {shlex.quote(reader_script())} {shlex.quote(spec)}"


def start_local(
    reads: Mapping[str, Sequence[int]],
    interval: float = 1.0,
    procstat: Sequence[ProcMatch] = (),
    roots: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The reader for the ``local`` node: same program, no SSH. Close its stdin to stop it."""
    spec = reader_spec(reads, interval, procstat, roots)
    return subprocess.Popen(
        [sys.executable, *PYTHON_FLAGS, "-c", reader_script(), spec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


@dataclass(frozen=True)
class Frame:
    seq: int
    time_ns: int
    files: dict[str, str]


class StreamError(ValueError):
    """The reader's stream is not what it writes: names the offset and what was expected."""


def split_frames(data: bytes, rest: bytes = b"") -> tuple[list[Frame], bytes]:
    """Complete frames in ``rest + data`` and the unconsumed tail (feed it back next time).

    Pure: works on chunks of any size, frames split anywhere."""
    buf = rest + data
    frames = []
    pos = 0
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        head = buf[pos:nl].split()
        if len(head) != 4 or head[0] != b"#F":
            raise StreamError(
                f"reader stream at byte {pos}: expected '#F seq time_ns nfiles', got {buf[pos:nl][:80]!r}"
            )
        try:
            seq, ts, n = int(head[1]), int(head[2]), int(head[3])
        except ValueError:
            raise StreamError(f"reader stream at byte {pos}: bad frame header {head!r}") from None
        cur = nl + 1
        files: dict[str, str] = {}
        complete = True
        for _ in range(n):
            fnl = buf.find(b"\n", cur)
            if fnl < 0:
                complete = False
                break
            parts = buf[cur:fnl].rsplit(b" ", 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise StreamError(
                    f"reader stream at byte {cur}: expected 'key nbytes', got {buf[cur:fnl][:80]!r}"
                )
            size = int(parts[1])
            if fnl + 1 + size > len(buf):
                complete = False
                break
            files[parts[0].decode("latin-1")] = buf[fnl + 1 : fnl + 1 + size].decode("latin-1")
            cur = fnl + 1 + size
        if not complete:
            break
        frames.append(Frame(seq, ts, files))
        pos = cur
    return frames, buf[pos:]


@dataclass(frozen=True)
class StreamState:
    """What the collector carries between frames of one node's stream."""

    reader_pid: int = 0
    clk_tck: int = 100
    pagesize: int = 4096
    sensors: dict[str, Any] = field(default_factory=dict)


def _hello(text: str) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (w.split("=") for w in text.split())}
    except ValueError:
        raise StreamError(f"@hello: expected 'pid=N clk_tck=N pagesize=N', got {text!r}") from None


def frame_points(
    frame: Frame, enabled: Sequence[Enabled], ctx: Context, state: StreamState
) -> tuple[list[Point], StreamState, list[str]]:
    """Points of every sensor due at this frame's tick, the new state, and errors (a
    sensor whose input is bad reports here; the others still produce points)."""
    if frame.seq < 0:
        h = _hello(frame.files.get("@hello", ""))
        return (
            [],
            replace(state, reader_pid=h["pid"], clk_tck=h["clk_tck"], pagesize=h["pagesize"]),
            [],
        )
    errors = [f"node: {line}" for line in frame.files.get("@errors", "").splitlines()]
    sample = Sample(frame.time_ns, frame.files, state.clk_tck, state.pagesize)
    sensor_states = dict(state.sensors)
    points: list[Point] = []
    for e in enabled:
        if frame.seq % e.every:
            continue
        name = e.sensor.name
        try:
            pts, sensor_states[name] = e.sensor.parse(sample, ctx, sensor_states.get(name))
        except ValueError as err:
            errors.append(f"{name}: {err}")
            continue
        points.extend(pts)
    return points, replace(state, sensors=sensor_states), errors


__all__ = [
    "MARKER",
    "Enabled",
    "Frame",
    "StreamError",
    "StreamState",
    "enable",
    "frame_points",
    "reader_command",
    "reader_script",
    "reads_for",
    "split_frames",
    "start_local",
]

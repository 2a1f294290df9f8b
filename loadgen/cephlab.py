"""A real single-node Ceph cluster for tests and demos, started from Debian's packages.

Wally's Ceph features (sensors, discovery, RBD load) are tested against a real cluster, so
this module bootstraps one by hand in about 15 s: one mon, one mgr and 1-2 bluestore OSDs
on sparse files, bound to 127.0.0.1, with *everything* (ceph.conf, keyring, admin sockets,
pid and log files, data) under one directory. The daemons run in the foreground as our own
children so their PIDs are known exactly; `down` stops OSDs before the mon, by PID, and
removes the directory. A `lab.json` in the directory lets `status`/`down` find a lab
started by another process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

STATE_FILE = "lab.json"
MON_ID = "a"
MGR_ID = "x"
DEFAULT_POOL = "rbd"
DEFAULT_IMAGE = "wally-test"
DEFAULT_PG_NUM = 32
# Sparse: only what is written takes disk space.
OSD_BLOCK_BYTES = 8 << 30
IMAGE_MB = 1024
CLI_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class CephLabError(RuntimeError):
    """The lab could not be started, queried or stopped; the message says which step."""


@dataclass
class CephLab:
    """Where a running lab lives: everything a client, a sensor or a test needs."""

    cluster_dir: Path
    conf: Path
    keyring: Path
    fsid: str
    mon_addr: str
    pool: str
    image: str
    osd_ids: list[int]
    admin_sockets: dict[str, Path]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.cluster_dir / "run"

    def env(self) -> dict[str, str]:
        """Environment for librados clients (fio's rbd engine reads CEPH_CONF)."""
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    def ceph(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> str:
        """Run `ceph --conf CONF ARGS` and return stdout; raise naming the command on failure."""
        return _run(["ceph", "--conf", str(self.conf), *args], timeout=timeout)

    def ceph_json(self, *args: str, timeout: float = CLI_TIMEOUT_S):
        """Run a `ceph` command with `-f json` and decode its output."""
        out = self.ceph(*args, "-f", "json", timeout=timeout)
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise CephLabError(f"`ceph {' '.join(args)} -f json` printed non-JSON: {exc}") from exc

    def rbd(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> str:
        """Run `rbd --conf CONF ARGS` and return stdout."""
        return _run(["rbd", "--conf", str(self.conf), *args], timeout=timeout)

    def to_json(self) -> dict:
        d = asdict(self)
        d["cluster_dir"] = str(self.cluster_dir)
        d["conf"] = str(self.conf)
        d["keyring"] = str(self.keyring)
        d["admin_sockets"] = {k: str(v) for k, v in self.admin_sockets.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> CephLab:
        return cls(
            cluster_dir=Path(d["cluster_dir"]),
            conf=Path(d["conf"]),
            keyring=Path(d["keyring"]),
            fsid=d["fsid"],
            mon_addr=d["mon_addr"],
            pool=d["pool"],
            image=d["image"],
            osd_ids=[int(i) for i in d["osd_ids"]],
            admin_sockets={k: Path(v) for k, v in d["admin_sockets"].items()},
            pids={k: int(v) for k, v in d["pids"].items()},
        )

    def save(self) -> None:
        tmp = self.cluster_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(self.cluster_dir / STATE_FILE)


def _run(cmd: Sequence[str], timeout: float = CLI_TIMEOUT_S, env: dict | None = None) -> str:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise CephLabError(
            f"{cmd[0]} not found: install the Debian packages ceph-mon ceph-osd ceph-mgr "
            "ceph-common (scripts/apt-packages.txt)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CephLabError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise CephLabError(
            f"`{' '.join(cmd)}` exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


def cephx_key() -> str:
    """A fresh cephx secret in Ceph's keyring encoding (what `ceph-authtool --gen-key` makes).

    Layout: le16 type (1 = AES), le32 seconds, le32 nanoseconds, le16 length, 16 bytes.
    Generated here to save a process start per key.
    """
    now = time.time()
    header = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16)
    return base64.b64encode(header + os.urandom(16)).decode()


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1, so two labs never share mon ports."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render_conf(d: Path, fsid: str, mon_addr: str) -> str:
    """ceph.conf for a one-node, size-1 lab whose every file lives under `d`.

    The settings that matter (see REFERENCE.md): size-1 pools allowed and not warned
    about, autoscaler off, CRUSH failure domain = OSD, no insecure global_id warning, low
    mon free-space thresholds (the disk may be quite full), small bluestore caches.
    Daemon-only paths (admin socket, log) go in daemon sections: the `ceph` CLI and fio
    are clients and must not fight over one socket name.
    """
    return f"""[global]
fsid = {fsid}
mon host = {mon_addr}
mon initial members = {MON_ID}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/keyring
run dir = {d}/run
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
mon cluster log file = {d}/log/$cluster.$channel.log

[client]
# No librbd cache: every client write reaches an OSD as one op, so OSD counters can be
# checked against fio's IO counts exactly.
rbd cache = false
admin socket =
log file =

[mon]
mon data = {d}/mon/$cluster-$id
admin socket = {d}/run/$cluster-$name.asok
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log

[mgr]
mgr data = {d}/mgr/$cluster-$id
admin socket = {d}/run/$cluster-$name.asok
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log

[osd]
osd data = {d}/osd/$cluster-$id
admin socket = {d}/run/$cluster-$name.asok
pid file = {d}/run/$cluster-$name.pid
log file = {d}/log/$cluster-$name.log
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_BLOCK_BYTES}
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 1
"""


def render_keyring(osd_ids: Sequence[int]) -> str:
    """One keyring holding every entity; `ceph-mon --mkfs` imports it with its caps."""
    entries = [
        ("mon.", {"mon": "allow *"}),
        ("client.admin", {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"}),
        (f"mgr.{MGR_ID}", {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"}),
    ] + [
        (
            f"osd.{i}",
            {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
        )
        for i in osd_ids
    ]
    lines = []
    for name, caps in entries:
        lines.append(f"[{name}]")
        lines.append(f"\tkey = {cephx_key()}")
        lines.extend(f'\tcaps {svc} = "{cap}"' for svc, cap in caps.items())
    return "\n".join(lines) + "\n"


def _spawn(lab: CephLab, name: str, cmd: list[str]) -> subprocess.Popen:
    """Start a daemon in the foreground (`-f`) as our child so its PID is exact."""
    log = lab.cluster_dir / "log" / f"{name}.stdout"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab.pids[name] = proc.pid
    lab.save()
    return proc


def _daemon_cmd(lab: CephLab, binary: str, ident: str) -> list[str]:
    return [binary, "-f", "--cluster", "ceph", "--conf", str(lab.conf), "-i", ident]


def health_problems(status: dict, n_osds: int) -> list[str]:
    """Why a `ceph status -f json` document is not yet 'healthy' (empty list = healthy).

    Healthy means HEALTH_OK, all `n_osds` up and in, and every PG active+clean.
    """
    problems = []
    health = status.get("health", {})
    if health.get("status") != "HEALTH_OK":
        checks = ", ".join(sorted(health.get("checks", {}))) or "no checks listed"
        problems.append(f"health {health.get('status')} ({checks})")
    osdmap = status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)  # pre-Octopus nesting
    if osdmap.get("num_up_osds") != n_osds or osdmap.get("num_in_osds") != n_osds:
        problems.append(
            f"OSDs up {osdmap.get('num_up_osds')}/in {osdmap.get('num_in_osds')}, want {n_osds}"
        )
    pgmap = status.get("pgmap", {})
    num_pgs = pgmap.get("num_pgs", 0)
    clean = sum(
        s.get("count", 0)
        for s in pgmap.get("pgs_by_state", [])
        if s.get("state_name") == "active+clean"
    )
    if num_pgs == 0 or clean != num_pgs:
        states = {s.get("state_name"): s.get("count") for s in pgmap.get("pgs_by_state", [])}
        problems.append(f"PGs active+clean {clean}/{num_pgs} {states}")
    return problems


def wait_healthy(lab: CephLab, timeout: float = 90.0, procs: dict | None = None) -> dict:
    """Poll `ceph status -f json` until healthy; return the final status document."""
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not polled yet"]
    while time.monotonic() < deadline:
        for name, proc in (procs or {}).items():
            if proc.poll() is not None:
                raise CephLabError(
                    f"{name} exited with {proc.returncode} while waiting for health; "
                    f"see {lab.cluster_dir / 'log'}"
                )
        status = lab.ceph_json("status", timeout=max(5.0, deadline - time.monotonic()))
        problems = health_problems(status, len(lab.osd_ids))
        if not problems:
            return status
        time.sleep(0.5)
    raise CephLabError(f"cluster not healthy after {timeout:.0f} s: {'; '.join(problems)}")


def up(
    cluster_dir: Path,
    n_osds: int = 2,
    pool: str = DEFAULT_POOL,
    image: str = DEFAULT_IMAGE,
    pg_num: int = DEFAULT_PG_NUM,
    timeout: float = 120.0,
) -> CephLab:
    """Bootstrap a lab in `cluster_dir` (must be absent or empty) and wait until healthy.

    On any failure, including Ctrl+C, whatever was started is stopped and the directory
    removed before the error propagates.
    """
    if n_osds not in (1, 2, 3):
        raise CephLabError(f"n_osds must be 1, 2 or 3, got {n_osds}")
    cluster_dir = Path(cluster_dir).absolute()
    if cluster_dir.exists() and any(cluster_dir.iterdir()):
        raise CephLabError(f"cluster dir {cluster_dir} is not empty: refusing to reuse it")
    for sub in ("run", "log", "crash", f"mon/ceph-{MON_ID}", f"mgr/ceph-{MGR_ID}"):
        (cluster_dir / sub).mkdir(parents=True, exist_ok=True)
    v2, v1 = free_ports(2)
    osd_ids = list(range(n_osds))
    run = cluster_dir / "run"
    lab = CephLab(
        cluster_dir=cluster_dir,
        conf=cluster_dir / "ceph.conf",
        keyring=cluster_dir / "keyring",
        fsid=str(uuid.uuid4()),
        mon_addr=f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]",
        pool=pool,
        image=image,
        osd_ids=osd_ids,
        admin_sockets={
            f"mon.{MON_ID}": run / f"ceph-mon.{MON_ID}.asok",
            f"mgr.{MGR_ID}": run / f"ceph-mgr.{MGR_ID}.asok",
            **{f"osd.{i}": run / f"ceph-osd.{i}.asok" for i in osd_ids},
        },
    )
    lab.save()
    try:
        _bootstrap(lab, pg_num, timeout)
    except BaseException:
        down(lab)
        raise
    return lab


def _bootstrap(lab: CephLab, pg_num: int, timeout: float) -> None:
    d = lab.cluster_dir
    lab.conf.write_text(render_conf(d, lab.fsid, lab.mon_addr))
    lab.keyring.write_text(render_keyring(lab.osd_ids))
    lab.keyring.chmod(0o600)
    monmap = d / "monmap"
    _run(
        ["monmaptool", "--create", "--fsid", lab.fsid, "--addv", MON_ID, lab.mon_addr, str(monmap)]
    )
    _run(
        [
            *_daemon_cmd(lab, "ceph-mon", MON_ID),
            "--mkfs",
            "--monmap",
            str(monmap),
            "--keyring",
            str(lab.keyring),
        ]
    )
    monmap.unlink()
    procs = {f"mon.{MON_ID}": _spawn(lab, f"mon.{MON_ID}", _daemon_cmd(lab, "ceph-mon", MON_ID))}
    procs[f"mgr.{MGR_ID}"] = _spawn(lab, f"mgr.{MGR_ID}", _daemon_cmd(lab, "ceph-mgr", MGR_ID))
    uuids = {i: str(uuid.uuid4()) for i in lab.osd_ids}
    for i in lab.osd_ids:
        (d / "osd" / f"ceph-{i}").mkdir(parents=True)
        lab.ceph("osd", "new", uuids[i], str(i))
    mkfs = {
        i: subprocess.Popen(
            [*_daemon_cmd(lab, "ceph-osd", str(i)), "--mkfs", "--osd-uuid", uuids[i]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for i in lab.osd_ids
    }
    for i, proc in mkfs.items():
        out, _ = proc.communicate(timeout=CLI_TIMEOUT_S)
        if proc.returncode != 0:
            raise CephLabError(
                f"ceph-osd --mkfs for osd.{i} exited {proc.returncode}: {out[-2000:]}"
            )
        procs[f"osd.{i}"] = _spawn(lab, f"osd.{i}", _daemon_cmd(lab, "ceph-osd", str(i)))
    lab.ceph("osd", "pool", "create", lab.pool, str(pg_num), str(pg_num))
    lab.rbd("pool", "init", lab.pool)
    lab.rbd("create", "--size", str(IMAGE_MB), f"{lab.pool}/{lab.image}")
    wait_healthy(lab, timeout=timeout, procs=procs)


def _is_ours(pid: int, conf: Path) -> bool:
    """True if `pid` is alive and is a daemon of this lab (its command line names our conf).

    Checking the command line guards against a recycled PID: we never signal a process
    that is not ours.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    return str(conf).encode() in cmdline


def _stop(pids: dict[str, int], conf: Path, timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """SIGTERM the given daemons, wait, SIGKILL stragglers; return the names killed hard."""
    live = {n: p for n, p in pids.items() if _is_ours(p, conf)}
    for pid in live.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = {n: p for n, p in live.items() if _is_ours(p, conf)}
        if live:
            time.sleep(0.05)
    for pid in live.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while any(_is_ours(p, conf) for p in live.values()):
        time.sleep(0.05)
    return sorted(live)


def stop_daemon(lab: CephLab, name: str, sig: int = signal.SIGTERM) -> None:
    """Stop one daemon (e.g. `osd.1`) by its tracked PID; SIGKILL simulates a crash."""
    pid = lab.pids.get(name)
    if pid is None:
        raise CephLabError(
            f"no daemon {name!r} in lab {lab.cluster_dir}; known: {sorted(lab.pids)}"
        )
    if sig == signal.SIGTERM:
        _stop({name: pid}, lab.conf)
        return
    if _is_ours(pid, lab.conf):
        os.kill(pid, sig)
        while _is_ours(pid, lab.conf):
            time.sleep(0.05)


def start_daemon(lab: CephLab, name: str, timeout: float = 30.0) -> int:
    """(Re)start a stopped daemon (e.g. `osd.1` after a fault test); its PID once its admin
    socket answers."""
    kind, _, ident = name.partition(".")
    if name not in lab.pids or kind not in ("mon", "mgr", "osd"):
        raise CephLabError(
            f"no daemon {name!r} in lab {lab.cluster_dir}; known: {sorted(lab.pids)}"
        )
    if _is_ours(lab.pids[name], lab.conf):
        raise CephLabError(f"{name} is still running as PID {lab.pids[name]}")
    proc = _spawn(lab, name, _daemon_cmd(lab, f"ceph-{kind}", ident))
    asok = str(lab.admin_sockets[name])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CephLabError(
                f"{name} exited with {proc.returncode}; see {lab.cluster_dir / 'log'}"
            )
        with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
            s.connect(asok)
            return proc.pid
        time.sleep(0.1)
    raise CephLabError(f"{name} restarted but its admin socket {asok} is silent after {timeout} s")


def down(lab: CephLab | Path) -> None:
    """Stop the lab's daemons (OSDs, then mgr, then mon) by PID and remove its directory."""
    if not isinstance(lab, CephLab):
        lab = load(Path(lab))
    order = [
        {n: p for n, p in lab.pids.items() if n.startswith("osd.")},
        {n: p for n, p in lab.pids.items() if n.startswith("mgr.")},
        {n: p for n, p in lab.pids.items() if n.startswith("mon.")},
    ]
    for group in order:
        _stop(group, lab.conf)
    if (lab.cluster_dir / STATE_FILE).exists():
        shutil.rmtree(lab.cluster_dir)


def fio_write(lab: CephLab, seconds: int, iodepth: int = 16, timeout: float = 120.0) -> dict:
    """4k random writes to the lab's image with fio's rbd engine; fio's JSON `write` section.

    The ground truth the Ceph sensor tests and benchmarks compare against.
    """
    cmd = [
        "fio", "--name=w", "--ioengine=rbd", "--clientname=admin", f"--pool={lab.pool}",
        f"--rbdname={lab.image}", "--rw=randwrite", "--bs=4k", f"--iodepth={iodepth}",
        f"--runtime={seconds}", "--time_based", "--output-format=json",
    ]  # fmt: skip
    out = _run(cmd, timeout=timeout, env=lab.env())
    try:
        return json.loads(out)["jobs"][0]["write"]
    except (json.JSONDecodeError, KeyError, IndexError) as exc:
        raise CephLabError(f"fio printed no usable JSON ({exc!r}): {out[:300]!r}") from exc


def load(cluster_dir: Path) -> CephLab:
    """The lab recorded in `cluster_dir/lab.json` (written by `up`)."""
    state = Path(cluster_dir).absolute() / STATE_FILE
    try:
        return CephLab.from_json(json.loads(state.read_text()))
    except FileNotFoundError:
        raise CephLabError(f"no Ceph lab in {cluster_dir}: {state} does not exist") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CephLabError(f"{state} is not a lab state file: {exc}") from exc


def status(lab: CephLab) -> dict:
    """What is up: each daemon's PID and liveness, plus health/OSD/PG counts from the mon."""
    daemons = {n: {"pid": p, "running": _is_ours(p, lab.conf)} for n, p in lab.pids.items()}
    out: dict = {
        "cluster_dir": str(lab.cluster_dir),
        "conf": str(lab.conf),
        "mon_addr": lab.mon_addr,
        "pool": lab.pool,
        "image": lab.image,
        "daemons": daemons,
    }
    if daemons.get(f"mon.{MON_ID}", {}).get("running"):
        try:
            st = lab.ceph_json("status", "--connect-timeout", "5", timeout=10)
        except CephLabError as exc:
            out["error"] = str(exc)
        else:
            osdmap = st.get("osdmap", {})
            out["health"] = st.get("health", {}).get("status")
            out["num_up_osds"] = osdmap.get("num_up_osds")
            out["num_osds"] = osdmap.get("num_osds")
            out["pgs_by_state"] = {
                s["state_name"]: s["count"] for s in st.get("pgmap", {}).get("pgs_by_state", [])
            }
    return out


@click.group("ceph-lab")
def cephlab_cli() -> None:
    """Start, inspect and stop a single-node Ceph cluster under one directory.

    \b
    Example:
      loadgen ceph-lab up --dir /tmp/lab && loadgen ceph-lab status --dir /tmp/lab --json
    """


_DIR_OPT = click.option(
    "--dir",
    "cluster_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".wally/ceph-lab"),
    show_default=True,
    help="Directory holding everything of the lab.",
)


@cephlab_cli.command("up")
@_DIR_OPT
@click.option("--osds", type=click.IntRange(1, 3), default=2, show_default=True)
@click.option("--pool", default=DEFAULT_POOL, show_default=True)
@click.option("--image", default=DEFAULT_IMAGE, show_default=True)
def _up_cmd(cluster_dir: Path, osds: int, pool: str, image: str) -> None:
    """Bootstrap the lab and wait for HEALTH_OK with all PGs active+clean.

    \b
    Example:
      loadgen ceph-lab up --dir /tmp/lab --osds 2
    """
    t0 = time.monotonic()
    try:
        lab = up(cluster_dir, n_osds=osds, pool=pool, image=image)
    except CephLabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ceph lab healthy in {time.monotonic() - t0:.1f} s")
    click.echo(f"  conf:  {lab.conf}")
    click.echo(f"  image: {lab.pool}/{lab.image}")
    click.echo(f"  pids:  {', '.join(f'{n}={p}' for n, p in lab.pids.items())}")
    click.echo(f"  use:   ceph --conf {lab.conf} status")


@cephlab_cli.command("down")
@_DIR_OPT
def _down_cmd(cluster_dir: Path) -> None:
    """Stop the lab's daemons by PID (OSDs first) and remove its directory.

    \b
    Example:
      loadgen ceph-lab down --dir /tmp/lab
    """
    try:
        down(load(cluster_dir))
    except CephLabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ceph lab in {cluster_dir} stopped and removed")


@cephlab_cli.command("status")
@_DIR_OPT
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def _status_cmd(cluster_dir: Path, as_json: bool) -> None:
    """Show which daemons run and the cluster's health.

    \b
    Example:
      loadgen ceph-lab status --dir /tmp/lab --json
    """
    try:
        st = status(load(cluster_dir))
    except CephLabError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"lab {st['cluster_dir']}  mon {st['mon_addr']}")
    for name, d in st["daemons"].items():
        click.echo(f"  {name:8} pid {d['pid']:>7}  {'running' if d['running'] else 'stopped'}")
    if "health" in st:
        click.echo(f"  health {st['health']}  OSDs up {st['num_up_osds']}/{st['num_osds']}")
        click.echo(f"  PGs {st['pgs_by_state']}")
    elif "error" in st:
        click.echo(f"  mon not answering: {st['error']}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: `python -m loadgen.cephlab up|down|status`."""
    cephlab_cli.main(args=list(argv) if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()

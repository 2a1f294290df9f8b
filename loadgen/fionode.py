"""fio on one node: pre-flight checks, prefill, a tracked fio process, fetching its outputs.

Everything started here is started through `NodeConnection.start`, which records the
remote PID; every path created is returned to the caller to be tracked in `run.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from collector import fio as fioparse
from collector import histogram
from collector.ssh import NodeConnection, NodeProcess, quote
from loadgen import rbd
from loadgen.jobfile import JOB_FILE, JobFile, render
from loadgen.plan import Iteration, format_size
from loadgen.rundir import NodeLeftovers

FIO_MIN = (3, 1)
STREAM_FILE = "fio-stream.json"
OUT_FILE = "out.json"


async def preflight(conn: NodeConnection, iterations: list[Iteration], workdir: str) -> list[str]:
    """Every reason this node cannot run its iterations; empty when it can."""
    node = conn.node.name
    problems: list[str] = []
    res = await conn.run("fio --version")
    m = re.match(r"fio-(\d+)\.(\d+)", res.out.strip())
    if res.rc != 0 or not m:
        return [
            f"fio is not installed (`fio --version` said {(res.out + res.err).strip()[:100]!r}): apt-get install fio"
        ]
    if tuple(int(x) for x in m.groups()) < FIO_MIN:
        problems.append(
            f"fio {res.out.strip()} is too old: need fio-{FIO_MIN[0]}.{FIO_MIN[1]} or newer"
        )
    for it in iterations:
        job = render(it, node, f"{workdir}/{it.name}", workdir)
        res = await conn.run("fio --parse-only -", input=job.text)
        if res.rc != 0:
            said = " ".join((res.out + res.err).split())[:300]
            problems.append(f"{it.name}: fio rejects the job file: {said}")
    checked: set[str] = set()
    for it in iterations:
        target = it.target.for_node(node)
        if target.text in checked:
            continue
        checked.add(target.text)
        if target.kind == "block":
            if (await conn.run(f"test -b {quote(target.text)}")).rc != 0:
                problems.append(
                    f"{it.name}: target {target.text} is not a block device on this node"
                )
            continue
        if target.kind == "rbd":
            continue  # checked by the Ceph pre-flight (image exists / can be created)
        path = PurePosixPath(target.resolve(workdir))
        parent = str(path.parent)
        # Nothing is created before the run starts: check the nearest existing ancestor.
        res = await conn.run(
            f'p={quote(parent)}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; '
            'test -w "$p" && df -P -B1 "$p" | tail -n 1'
        )
        if res.rc != 0:
            problems.append(
                f"{it.name}: cannot write to {parent} (or create it): {res.err.strip()[:200]}"
            )
            continue
        free = int(res.out.split()[3])
        have = await file_size(conn, str(path))
        need = (it.size or 0) - have
        if need > free:
            problems.append(
                f"{it.name}: {path} needs {format_size(need)} more but {parent} has {format_size(free)} free"
            )
    return problems


async def make_dirs(conn: NodeConnection, path: str) -> str | None:
    """mkdir -p; the top-most directory it created (to remove at cleanup), if any."""
    res = await conn.run(f"mkdir -pv {quote(path)}")
    if res.rc != 0:
        raise OSError(f"{conn.node.name}: cannot create {path}: {res.err.strip()}")
    created = re.findall(r"created directory '(.*)'", res.out)
    return created[0] if created else None


async def file_size(conn: NodeConnection, path: str) -> int:
    res = await conn.run(f"stat -c %s {quote(path)}")
    return int(res.out) if res.rc == 0 and res.out.strip().isdigit() else 0


def prefill_job(target: Sequence[tuple[str, str]], size: int, engine: str = "libaio") -> str:
    """One sequential pass writing every byte of the target (`filename=` of a file, or
    `pool=`/`rbdname=`/`clientname=` of an RBD image): later reads hit real data."""
    return "\n".join(
        [
            "[prefill]",
            *(f"{k}={v}" for k, v in target),
            f"size={size}",
            "rw=write",
            "bs=1m",
            "iodepth=8",
            f"ioengine={engine}",
            "direct=1",
            "end_fsync=1",
            "",
        ]
    )


def env_prefix(env: Mapping[str, str] | None) -> str:
    """`env K=V ` in front of a command; with `exec`, the PID stays the command's own."""
    if not env:
        return ""
    return "env " + " ".join(f"{k}={quote(v)}" for k, v in env.items()) + " "


def fio_command(job_path: str, env: Mapping[str, str] | None = None) -> str:
    """fio with json+ on stdout and an interim document every second (live view)."""
    return f"exec {env_prefix(env)}fio --output-format=json+ --status-interval=1 {quote(job_path)}"


async def upload(conn: NodeConnection, path: str, text: str) -> None:
    res = await conn.run(
        f"mkdir -p {quote(str(PurePosixPath(path).parent))} && cat > {quote(path)}", input=text
    )
    if res.rc != 0:
        raise OSError(f"{conn.node.name}: cannot write {path}: {res.err.strip()}")


async def start_fio(
    conn: NodeConnection, job: JobFile, env: Mapping[str, str] | None = None
) -> NodeProcess:
    """Upload the job file and start fio in its directory (`env`: e.g. CEPH_CONF for rbd)."""
    await upload(conn, job.path, job.text)
    return await conn.start(
        f"cd {quote(str(PurePosixPath(job.path).parent))} && {fio_command(job.path, env)}"
    )


@dataclass
class Live:
    """One second of a running fio, from the difference of two interim documents."""

    iops: float
    p99_ns: float | None


class JsonStream:
    """Splits fio's stdout into its JSON documents (interim ones, then the final one)."""

    def __init__(self) -> None:
        self.text = ""
        self.docs: list[dict] = []
        self._pos = 0
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[dict]:
        self.text += chunk.decode(errors="replace")
        new = []
        while True:
            start = self.text.find("{", self._pos)
            if start < 0:
                break
            try:
                doc, end = self._decoder.raw_decode(self.text, start)
            except ValueError:
                break  # incomplete: wait for more
            self._pos = end
            if isinstance(doc, dict) and "jobs" in doc:
                self.docs.append(doc)
                new.append(doc)
        return new


def live_delta(prev: dict | None, cur: dict) -> Live:
    """IOPS and p99 over the interval between two cumulative fio documents."""
    ios = _total_ios(cur) - (_total_ios(prev) if prev else 0)
    dt_ms = _elapsed_ms(cur) - (_elapsed_ms(prev) if prev else 0)
    bins = _bins(cur) - (_bins(prev) if prev else 0)
    p99 = float(histogram.fio_percentiles(bins, [99.0])[0]) if bins.sum() > 0 else None
    return Live(iops=1000.0 * ios / dt_ms if dt_ms > 0 else 0.0, p99_ns=p99)


def _total_ios(doc: dict) -> int:
    return sum(j[op]["total_ios"] for j in doc["jobs"] for op in fioparse.OPS if op in j)


def _elapsed_ms(doc: dict) -> int:
    return max(int(j.get("job_runtime", j.get("elapsed", 0) * 1000)) for j in doc["jobs"])


def _bins(doc: dict) -> np.ndarray:
    return sum(
        (fioparse.json_clat_bins(doc, op) for op in fioparse.OPS),
        np.zeros(histogram.PLAT_NR, np.int64),
    )


async def fetch(conn: NodeConnection, job: JobFile, local: Path) -> list[str]:
    """Copy the iteration's job file and logs from the node; return the remote paths."""
    remote_dir = str(PurePosixPath(job.path).parent)
    res = await conn.run(f"cd {quote(remote_dir)} && ls -1")
    names = [n for n in res.out.split() if n == JOB_FILE or n.endswith(".log")]
    for name in names:
        await conn.get(f"{remote_dir}/{name}", local / name)
    return [f"{remote_dir}/{n}" for n in names]


async def remove_leftovers(
    conn: NodeConnection, left: NodeLeftovers, ceph: rbd.CephClient | None = None
) -> dict[str, str]:
    """Remove what a run created on the node: RBD images, files, then directories, then its
    work dir and the work dir's parent if no other node of the run (on the same host) still
    uses it. Returns the images that could not be removed (they stay recorded), with why."""
    failed = await rbd.remove_images(conn, ceph or rbd.CephClient(), left.rbd_images)
    removed = {*left.files, *(f"rbd:{s}" for s in left.rbd_images if s not in failed)}
    left.prefilled = [p for p in left.prefilled if p not in removed]
    left.rbd_images = list(failed)
    if left.files:
        await conn.run("rm -f -- " + " ".join(quote(p) for p in left.files))
    dirs = [*left.dirs, left.workdir] if left.workdir else list(left.dirs)
    for d in sorted(dirs, key=len, reverse=True):
        await conn.run(f"rm -rf -- {quote(d)}")
    if left.workdir:
        await conn.run(
            f"rmdir --ignore-fail-on-non-empty -- {quote(str(PurePosixPath(left.workdir).parent))}"
        )
    left.files, left.dirs = [], []
    return failed


async def kill_run_pids(conn: NodeConnection, pids: list[int], workdir: str) -> int:
    """Kill the processes this run started that still run: a PID counts only while its
    command line still names the run's work dir (a reused PID is never signalled)."""
    killed = 0
    for pid in pids:
        res = await conn.run(f"tr '\\0' ' ' < /proc/{int(pid)}/cmdline")
        if res.rc == 0 and workdir and workdir in res.out:
            await conn.run(f"kill -KILL {int(pid)}")
            killed += 1
    return killed

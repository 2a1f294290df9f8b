"""How many SSH nodes one collector process keeps at 1 s, and its CPU per node-sample.

Nodes are SSH connections to sshd instances on loopback (node i -> instance i % 10), each
running the real node-side reader, collected by one `Collector` into a real influxd.

All simulated nodes share this machine, but a real node has its own /proc: the readers
read it through the reader's configurable proc root, where the machine-wide files (stat,
meminfo, diskstats, net/dev, ...) are links to the live /proc and the process and socket
tables are a snapshot taken before the nodes start (about 150 processes). Without it every
reader would scan the hundreds of sshd and reader processes and sockets of all the other
simulated nodes, a cost that grows with the square of the node count and that no real
cluster has. A step holds when, over the measured window, every node delivered every
sample with no gap between samples above 1.5 s, no sample processed later than 1.5 s after
the node read it and none older than that at the end. Start-up (connecting, then every
reader starting) is not in the window; its length and CPU are reported. The ratio is the
largest node count held ÷ 200. Steps go up from the target (200, 300); when a step is lost
before any held, the next one is half of it, down to 25 nodes (each step starts every node
afresh, so starting at the target keeps the run short).

CPU seconds per process category (collector, influxd, the nodes' sshd sessions, readers,
short-lived node commands, the rest of the machine) are printed for each phase.

    python bench/fanout.py [--steps 200,300] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.engine import Collector
from collector.influx import InfluxClient, InfluxConfig
from collector.influxd import EmbeddedInfluxd
from collector.inventory import inventory_from_dict
from collector.writer import InfluxWriter
from tests.fixtures.sshd import SshdCluster

LIMIT_S = 1.5
SSHD_INSTANCES = 10
TARGET_NODES = 200
MIN_STEP = 25
TCK = os.sysconf("SC_CLK_TCK")
CATEGORIES = ("collector", "influxd", "sshd", "readers", "node ended", "node other", "rest")


def _proc_table() -> dict[int, tuple[int, str, int, int]]:
    """pid -> (ppid, comm, own CPU ticks, CPU ticks of its reaped children)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        f = text[text.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(f[1]), comm, int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
    return table


def _busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (all cores), from /proc/stat."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4]  # all but idle and iowait


def _node_category(comm: str) -> str:
    """sshd sessions (`sshd-session` in newer OpenSSH), readers, or anything else."""
    if comm.startswith("sshd"):
        return "sshd"
    return "readers" if comm.startswith("python") else "node other"


class CpuMeter:
    """CPU seconds by process category between two snapshots, from /proc/PID/stat.

    Simulated nodes are the process trees of the sshd instances: `sshd` processes are the
    SSH sessions, `python*` the readers, anything else still running is "node other", and
    "node ended" is the CPU of tree processes that exited in the window (clock-skew loops,
    discovery commands), found in their parents' reaped-children times. "rest" is the
    machine's busy time minus all of that: the kernel's own threads and other users."""

    def __init__(self, influxd_pid: int, sshd_pids: list[int]) -> None:
        self.influxd_pid = influxd_pid
        self.sshd_pids = sshd_pids

    def snapshot(self) -> tuple[int, dict[int, tuple[str, int]], dict[str, int]]:
        busy = _busy_ticks()
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in table.items():
            children.setdefault(ppid, []).append(pid)
        live: dict[int, tuple[str, int]] = {}
        reaped = {"collector": 0, "influxd": 0, "node": 0}

        roots = {os.getpid(), self.influxd_pid, *self.sshd_pids}

        def walk(root: int, category: str | None) -> None:
            todo = [root]
            while todo:
                pid = todo.pop()
                if pid not in table or (pid in roots and pid != root):
                    continue
                _, comm, own, dead = table[pid]
                live[pid] = (category or _node_category(comm), own)
                reaped["node" if category is None else category] += dead
                todo.extend(children.get(pid, ()))

        walk(os.getpid(), "collector")
        walk(self.influxd_pid, "influxd")
        for pid in self.sshd_pids:
            walk(pid, None)
        return busy, live, reaped

    @staticmethod
    def delta(a, b) -> dict[str, float]:
        """CPU seconds per category from snapshot a to snapshot b."""
        (busy0, live0, reaped0), (busy1, live1, reaped1) = a, b
        out = dict.fromkeys(CATEGORIES, 0)
        for pid, (cat, own) in live1.items():
            prev = live0.get(pid)
            out[cat] += own - (prev[1] if prev else 0)
        gone = {cat: 0 for cat in ("collector", "influxd", "node")}
        for pid, (cat, own) in live0.items():
            if pid not in live1:
                gone["node" if cat in ("sshd", "readers", "node other") else cat] += own
        for cat in gone:
            ended = reaped1[cat] - reaped0[cat] - gone[cat]
            out["node ended" if cat == "node" else cat] += ended
        out["rest"] = busy1 - busy0 - sum(out.values())
        return {k: v / TCK for k, v in out.items()}


def cpu_line(label: str, seconds: float, cpu: dict[str, float]) -> str:
    parts = "  ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    return f"    {label:<8} {seconds:6.1f} s wall, CPU s: {parts}"


class Watch:
    """A sink wrapper measuring per-node sample gaps and processing delay."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.measuring = False
        self.last: dict[str, int] = {}
        self.worst_gap = 0.0
        self.worst_delay = 0.0
        self.samples = 0
        self.per_node: dict[str, int] = defaultdict(int)

    def __call__(self, points) -> None:
        self.inner(points)
        # One sink call per frame; `mem` is in every frame (cpu skips the first).
        if not any(p.measurement == "mem" for p in points):
            return
        node = points[0].tags["node"]
        t = max(p.time_ns for p in points)
        now = time.time_ns()
        prev = self.last.get(node)
        self.last[node] = t
        if not self.measuring:
            return
        self.samples += 1
        self.per_node[node] += 1
        self.worst_delay = max(self.worst_delay, (now - t) / 1e9)
        if prev is not None:
            self.worst_gap = max(self.worst_gap, (t - prev) / 1e9)


# Machine-wide counters: the same size whatever the node count, and they must move (the
# cpu sensor skips CPUs whose counters did not, which would spare the collector work).
LIVE_FILES = (
    "stat",
    "diskstats",
    "meminfo",
    "loadavg",
    "vmstat",
    "uptime",
    "net/dev",
    "sys/kernel/random/entropy_avail",
)
# Tables that grow with the simulated nodes' own sockets: copied.
SNAPSHOT_FILES = ("net/udp", "net/udp6", "net/unix", "net/tcp", "net/tcp6")


def snapshot_proc(dest: Path, max_processes: int = 150) -> Path:
    """The /proc files the sensors read, as one typical node would show them: live
    machine-wide counters (links to /proc), copies of the socket tables and of the stat
    files of the first `max_processes` processes."""
    for name in (*LIVE_FILES, *SNAPSHOT_FILES):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in LIVE_FILES:
            target.symlink_to(Path("/proc", name))
        else:
            target.write_bytes(Path("/proc", name).read_bytes())
    pids = sorted(
        (p for p in Path("/proc").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    for pid in pids[:max_processes]:
        try:
            stat = (pid / "stat").read_bytes()
        except OSError:
            continue
        (dest / pid.name).mkdir()
        (dest / pid.name / "stat").write_bytes(stat)
    return dest


async def step(
    cluster: SshdCluster,
    n: int,
    seconds: float,
    client: InfluxClient,
    work: Path,
    proc_root: Path,
    meter: CpuMeter,
) -> dict:
    data = cluster.lab_config(connect_timeout=60)
    data["nodes"] = [
        {
            "uri": cluster.instances[i % SSHD_INSTANCES].uri,
            "name": f"n{i:04d}",
            "roles": ["testnode"],
        }
        for i in range(n)
    ]
    inventory = inventory_from_dict(data, source="fanout", base_dir=str(work))
    phases = []
    with InfluxWriter(client, spool_dir=work / "spool") as writer:
        watch = Watch(writer.write)
        # sys.executable: here python3 on PATH is a pyenv shim (a shell script per start)
        col = Collector(
            inventory, sink=watch, pollers=(), roots={"proc": str(proc_root)}, python=sys.executable
        )
        t0, m0 = time.monotonic(), meter.snapshot()
        await col.prepare()
        t1, m1 = time.monotonic(), meter.snapshot()
        phases.append(("prepare", t1 - t0, meter.delta(m0, m1)))
        run = asyncio.create_task(col.run())
        # Start-up: every reader has to start and say hello, which takes a while at a few
        # hundred nodes. Measure the steady state once every node has sent two samples (a
        # node that never does counts as lost).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and sum(s.samples >= 2 for s in col.status.values()) < n:
            await asyncio.sleep(0.5)
        t2, m2 = time.monotonic(), meter.snapshot()
        phases.append(("start-up", t2 - t1, meter.delta(m1, m2)))
        watch.measuring = True
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        watch.measuring = False
        t3, m3 = time.monotonic(), meter.snapshot()
        phases.append(("steady", t3 - t2, meter.delta(m2, m3)))
        # A node whose stream stalled near the end shows no late gap: check how old its
        # last sample is.
        end_ns = time.time_ns()
        stale = max((end_ns - t) / 1e9 for t in watch.last.values()) if watch.last else seconds
        col.stop()
        await run
    # Every node delivers every sample of the window (one slot of slack at each edge).
    missing = [
        name for name in (f"n{i:04d}" for i in range(n)) if watch.per_node[name] < int(seconds) - 1
    ]
    held = not missing and max(watch.worst_gap, watch.worst_delay, stale) <= LIMIT_S
    return {
        "nodes": n,
        "held": held,
        "connect_s": t1 - t0,
        "startup_s": t2 - t1,
        "worst_gap": watch.worst_gap,
        "worst_delay": watch.worst_delay,
        "stale": stale,
        "missing": len(missing),
        "cpu_ms_per_sample": 1000 * cpu / max(watch.samples, 1),
        "cpu_share": cpu / seconds,
        "phases": phases,
    }


async def main_async(steps: list[int], seconds: float) -> int:
    best = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = EmbeddedInfluxd(work / "state")
        client = InfluxClient(InfluxConfig(url=server.start(), database="fanout"))
        client.create_database()
        try:
            proc_root = snapshot_proc(work / "proc")
            with SshdCluster(work / "sshd", count=SSHD_INSTANCES) as cluster:
                meter = CpuMeter(
                    int(server.info()["pid"]), [inst.proc.pid for inst in cluster.instances]
                )
                todo = list(steps)
                while todo:
                    n = todo.pop(0)
                    r = await step(cluster, n, seconds, client, work, proc_root, meter)
                    print(
                        f"{n:4d} nodes: {'held' if r['held'] else 'LOST'}  connect {r['connect_s']:.1f} s  "
                        f"all streaming after {r['startup_s']:.1f} s  "
                        f"worst gap {r['worst_gap']:.2f} s  worst delay {r['worst_delay']:.2f} s  "
                        f"last sample age {r['stale']:.2f} s  "
                        f"nodes short of samples {r['missing']}  collector CPU {r['cpu_ms_per_sample']:.2f} ms "
                        f"per node-sample ({100 * r['cpu_share']:.0f}% of a core)",
                        flush=True,
                    )
                    for label, wall, cpu in r["phases"]:
                        print(cpu_line(label, wall, cpu), flush=True)
                    if r["held"]:
                        best = n
                    elif best == 0 and n // 2 >= MIN_STEP:
                        todo = [n // 2]  # nothing held yet: halve until something does
                    else:
                        break
        finally:
            server.destroy()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="200,300")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    best = asyncio.run(main_async([int(s) for s in args.steps.split(",")], args.seconds))
    print(f"nodes held at 1 s: {best}")
    print(f"ratio={best / TARGET_NODES:.2f} target=>=1")


if __name__ == "__main__":
    main()

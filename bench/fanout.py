"""How many SSH nodes one collector process keeps at 1 s, and its CPU per node-sample.

Nodes are SSH connections to sshd instances on loopback (node i -> instance i % 10), each
running the real node-side reader, collected by one `Collector` into a real influxd.

All simulated nodes share this machine, but a real node has its own /proc: the readers
read a snapshot of this machine's /proc taken before the nodes start (about 150 processes,
the system files the sensors need), through the reader's configurable proc root. Without
it every reader would scan the hundreds of sshd and reader processes of all the other
simulated nodes, a cost that grows with the square of the node count and that no real
cluster has. A step
holds when, over the measured window, every node delivered every sample with no gap between
samples above 1.5 s and no sample processed later than 1.5 s after the node read it.
The ratio is the largest node count held ÷ 200.

    python bench/fanout.py [--steps 50,100,200,300] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
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
        # One sink call per frame; `mem` is in every frame (cpu needs changing counters, and
        # the snapshot /proc does not change).
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


PROC_FILES = (
    "stat",
    "diskstats",
    "meminfo",
    "loadavg",
    "vmstat",
    "uptime",
    "net/dev",
    "net/udp",
    "net/udp6",
    "net/unix",
    "net/tcp",
    "net/tcp6",
    "sys/kernel/random/entropy_avail",
)


def snapshot_proc(dest: Path, max_processes: int = 150) -> Path:
    """A copy of the /proc files the sensors read, as one typical node would show them."""
    for name in PROC_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
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
    cluster: SshdCluster, n: int, seconds: float, client: InfluxClient, work: Path, proc_root: Path
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
    with InfluxWriter(client, spool_dir=work / "spool") as writer:
        watch = Watch(writer.write)
        # sys.executable: here python3 on PATH is a pyenv shim (a shell script per start)
        col = Collector(
            inventory, sink=watch, pollers=(), roots={"proc": str(proc_root)}, python=sys.executable
        )
        t0 = time.monotonic()
        await col.prepare()
        connect_s = time.monotonic() - t0
        run = asyncio.create_task(col.run())
        # Warm-up: starting a reader costs ~0.1 s of CPU per node, so at a few hundred nodes
        # the last one streams after tens of seconds. Measure the steady state once every
        # node has sent two samples (a node that never does counts as lost).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and sum(s.samples >= 2 for s in col.status.values()) < n:
            await asyncio.sleep(0.5)
        startup_s = time.monotonic() - t0 - connect_s
        watch.measuring = True
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        watch.measuring = False
        col.stop()
        await run
    missing = [
        name for name in (f"n{i:04d}" for i in range(n)) if watch.per_node[name] < seconds - 2
    ]
    held = not missing and watch.worst_gap <= LIMIT_S and watch.worst_delay <= LIMIT_S
    return {
        "nodes": n,
        "held": held,
        "connect_s": connect_s,
        "startup_s": startup_s,
        "worst_gap": watch.worst_gap,
        "worst_delay": watch.worst_delay,
        "missing": len(missing),
        "cpu_ms_per_sample": 1000 * cpu / max(watch.samples, 1),
        "cpu_share": cpu / seconds,
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
                for n in steps:
                    r = await step(cluster, n, seconds, client, work, proc_root)
                    print(
                        f"{n:4d} nodes: {'held' if r['held'] else 'LOST'}  connect {r['connect_s']:.1f} s  "
                        f"all streaming after {r['startup_s']:.1f} s  "
                        f"worst gap {r['worst_gap']:.2f} s  worst delay {r['worst_delay']:.2f} s  "
                        f"nodes short of samples {r['missing']}  collector CPU {r['cpu_ms_per_sample']:.2f} ms "
                        f"per node-sample ({100 * r['cpu_share']:.0f}% of a core)",
                        flush=True,
                    )
                    if not r["held"]:
                        break
                    best = n
        finally:
            server.destroy()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="50,100,200,300")
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    best = asyncio.run(main_async([int(s) for s in args.steps.split(",")], args.seconds))
    print(f"nodes held at 1 s: {best}")
    print(f"ratio={best / TARGET_NODES:.2f} target=>=1")


if __name__ == "__main__":
    main()

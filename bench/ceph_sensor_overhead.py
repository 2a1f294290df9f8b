"""Does polling the ceph sensor (perf dump + dump_historic_ops + ops in flight) slow the OSD?

Starts a private 1-OSD lab, then runs fio 4k randwrite QD16 over RBD in alternating
rounds without and with the sensor polling every admin socket once a second (the same
`CephDaemonPoller` the collection engine runs, with its long-lived node-side helper). Alternating A/B rounds spreads the machine's noise
over both sides; the ratio is the median of the per-round with/without ratios (the 2
shared cores make single rounds swing by tens of percent). Also prints the mean wall time
of one poll of every socket.

    python bench/ceph_sensor_overhead.py [--rounds 3] [--seconds 6] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from collector.inventory import Node
from collector.pollers import CephDaemonPoller
from collector.sensors import Context
from collector.ssh import LocalConnection
from loadgen import cephlab


def fio_iops(lab: cephlab.CephLab, seconds: int) -> float:
    return float(cephlab.fio_write(lab, seconds)["iops"])


def poll_until(stop: threading.Event, lab: cephlab.CephLab, interval: float, polls: list) -> None:
    async def loop() -> None:
        conn = LocalConnection(Node(name="bench", roles=("ceph-osd",)))
        poller = CephDaemonPoller(interval, str(lab.run_dir))
        ctx, state = Context(tags={"node": "bench"}), None
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                _, state, _ = await poller.poll(conn, ctx, state)
                polls.append(time.perf_counter() - t0)
                await asyncio.sleep(interval)
        finally:
            await poller.close(state)

    asyncio.run(loop())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wally-ceph-bench-") as tmp:
        lab = cephlab.up(Path(tmp) / "lab", n_osds=1)
        try:
            fio_iops(lab, 2)  # warm-up: allocate the image's objects
            without, with_, poll_s = [], [], []
            for r in range(args.rounds):
                without.append(fio_iops(lab, args.seconds))
                stop, polls = threading.Event(), []
                poller = threading.Thread(target=poll_until, args=(stop, lab, args.interval, polls))
                poller.start()
                try:
                    with_.append(fio_iops(lab, args.seconds))
                finally:
                    stop.set()
                    poller.join()
                poll_s += polls
                print(
                    f"round {r + 1}: without {without[-1]:8.0f} IOPS   "
                    f"with {with_[-1]:8.0f} IOPS   ({len(polls)} polls)"
                )
        finally:
            cephlab.down(lab)
    ratio = statistics.median(w / b for w, b in zip(with_, without, strict=True))
    print(
        f"median IOPS without sensor {statistics.median(without):.0f}, with sensor "
        f"{statistics.median(with_):.0f}; one poll takes {1000 * statistics.mean(poll_s):.0f} ms"
    )
    print(f"ratio={ratio:.3f} target=>=0.95")


if __name__ == "__main__":
    main()

"""Node CPU cost of our sensor reader vs Debian's collectd, same metrics, 1 s interval.

Both run side by side on this machine for the same window. Ours runs the way the collector
runs it: one SSH channel to a real sshd on loopback carrying the long-lived reader, every
node sensor enabled (cpu, diskio, mem, net, netstat, system, kernel, processes, procstat on
sshd). Counted on the node: the reader AND the sshd session processes serving it (every
descendant of that sshd instance). collectd runs in the foreground with cpu, disk,
interface, memory, load, processes (+ the same process selector), tcpconns, contextswitch
and uptime at Interval 1, sending with the network plugin to a UDP socket we drain.
CPU = utime + stime from /proc/PID/stat over the window, extrapolated to an hour.

    python bench/sensor_overhead.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from collector.sensors import ProcMatch
from collector.sensors.reader import enable, reader_command, reads_for
from tests.fixtures.sshd import SshdCluster, _descendants

TCK = os.sysconf("SC_CLK_TCK")
COLLECTD = "/usr/sbin/collectd"


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all threads), in seconds; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])
    return total / TCK


def collectd_config(port: int, base: Path) -> str:
    return f"""Hostname "bench"
FQDNLookup false
BaseDir "{base}"
PIDFile "{base}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin cpu
LoadPlugin disk
LoadPlugin interface
LoadPlugin memory
LoadPlugin load
LoadPlugin processes
LoadPlugin tcpconns
LoadPlugin contextswitch
LoadPlugin uptime
LoadPlugin network
<Plugin cpu>
  ReportByCpu true
  ValuesPercentage true
</Plugin>
<Plugin processes>
  ProcessMatch "sshd" "sshd"
</Plugin>
<Plugin tcpconns>
  ListeningPorts false
  AllPortsSummary true
</Plugin>
<Plugin network>
  Server "127.0.0.1" "{port}"
</Plugin>
"""


def drain(stream, stop: threading.Event) -> None:
    while not stop.is_set() and stream.read(65536):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    args = ap.parse_args()
    if not os.path.exists(COLLECTD):
        sys.exit(f"{COLLECTD} not found: apt-get install collectd-core")

    stop = threading.Event()
    with (
        tempfile.TemporaryDirectory(prefix="wally-overhead-") as tmp,
        SshdCluster(Path(tmp) / "ssh", count=1) as cluster,
    ):
        node = cluster.instances[0]
        enabled = enable()
        cmd = reader_command(reads_for(enabled), 1.0, procstat=(ProcMatch("exe", "^sshd$"),))
        ssh = subprocess.Popen(
            ["ssh", "-T", "-i", str(cluster.key_path), "-p", str(node.port),
             "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "BatchMode=yes",
             "root@127.0.0.1", cmd],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        base = Path(tmp) / "collectd"
        base.mkdir()
        conf = base / "collectd.conf"
        conf.write_text(collectd_config(udp.getsockname()[1], base))
        collectd = subprocess.Popen(
            [COLLECTD, "-f", "-C", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        received = [0]

        def drain_udp() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    received[0] += len(udp.recv(65536))

        threads = [
            threading.Thread(target=drain, args=(ssh.stdout, stop), daemon=True),
            threading.Thread(target=drain_udp, daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(args.warmup)
            if collectd.poll() is not None:
                sys.exit(f"collectd exited: {collectd.stderr.read().decode()[-2000:]}")
            ours_pids = _descendants(node.proc.pid)
            if len(ours_pids) < 2:
                sys.exit(f"expected sshd session + reader under sshd, found {ours_pids}")
            ours0, cd0, t0 = cpu_seconds(ours_pids), cpu_seconds([collectd.pid]), time.monotonic()
            time.sleep(args.seconds)
            ours1, cd1, t1 = cpu_seconds(ours_pids), cpu_seconds([collectd.pid]), time.monotonic()
            if sorted(_descendants(node.proc.pid)) != sorted(ours_pids):
                print("note: node-side process set changed during the window")
            if collectd.poll() is not None or ssh.poll() is not None:
                sys.exit("a collector died during the measurement")
        finally:
            stop.set()
            ssh.stdin.close()
            ssh.wait(timeout=10)
            collectd.terminate()
            collectd.wait(timeout=10)
            udp.close()
        hour = 3600.0 / (t1 - t0)
        ours = (ours1 - ours0) * hour
        theirs = (cd1 - cd0) * hour
        print(f"window {t1 - t0:.1f} s, node-side pids ours={ours_pids} collectd={collectd.pid}")
        print(f"{'collector':<28}{'CPU s/hour':>12}")
        print(f"{'wally reader + sshd session':<28}{ours:>12.1f}")
        print(f"{'collectd (Debian)':<28}{theirs:>12.1f}")
        print(f"collectd sent {received[0]} bytes over UDP")
        print(f"ratio={ours / theirs:.3f} target=<=1")


if __name__ == "__main__":
    main()

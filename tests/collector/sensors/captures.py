"""Samples built from the real /proc captures in tests/data/proc (see capture.py there)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from collector.sensors import Context, ProcMatch, Sample
from collector.sensors.reader import node_digest_procs, node_digest_sockets

DATA = Path(__file__).resolve().parents[2] / "data" / "proc"
SUBJECT = (DATA / "subject").read_text().strip()
CTX = Context(
    {"node": "n1", "role": "testnode"},
    device_roles={"vda": "os"},
    procstat=(ProcMatch("pattern", "urandom"),),
)
SOCKET_TABLES = ("net/tcp", "net/tcp6", "net/udp", "net/udp6", "net/unix")


def raw(i: int, rel: str) -> str:
    """One captured file as text, e.g. raw(0, "proc/stat")."""
    return (DATA / f"t{i}" / rel).read_text()


def time_ns(i: int) -> int:
    return int((DATA / f"t{i}.time_ns").read_text())


def sample(i: int) -> Sample:
    """Capture i keyed like the reader's frames, node-side digests applied."""
    root = DATA / f"t{i}"
    files: dict[str, str] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.split("/")[1].isdigit():
            files[rel] = path.read_text()
    stats = [Path(p).read_text() for p in glob.glob(os.fspath(root / "proc/[0-9]*/stat"))]
    files["@procs"] = node_digest_procs(stats)
    files["@sockets"] = node_digest_sockets({t: raw(i, f"proc/{t}") for t in SOCKET_TABLES})
    for leaf in ("stat", "status", "io", "fds"):
        files[f"pid/{SUBJECT}/{leaf}"] = raw(i, f"proc/{SUBJECT}/{leaf}")
    files["@procstat"] = f"{SUBJECT} 0\n"
    return Sample(time_ns(i), files, clk_tck=os.sysconf("SC_CLK_TCK"))

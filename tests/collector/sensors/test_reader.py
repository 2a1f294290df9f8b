"""The reader for real: run locally against this machine's /proc, compare with ground truth
read directly in the test, with iostat, and check the node side cleans up after itself."""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from collector.lineproto import encode_point
from collector.sensors import Context, ProcMatch
from collector.sensors.reader import (
    MARKER,
    Frame,
    StreamError,
    StreamState,
    enable,
    frame_points,
    node_scan,
    reader_command,
    reader_script,
    reads_for,
    split_frames,
    start_local,
)

CTX = Context({"node": "local", "role": "testnode"})


def _frames_bytes() -> bytes:
    return (
        b"#F -1 5 1\n@hello 31\npid=1 clk_tck=100 pagesize=4096"
        b"#F 0 10 2\nproc/loadavg 5\n1 2 3proc/x 0\n"
        b"#F 1 20 1\nbin 4\n\n#F\x00"
    )


def test_split_frames_at_every_chunk_boundary():
    data = _frames_bytes()
    whole, rest = split_frames(data)
    assert rest == b""
    assert [f.seq for f in whole] == [-1, 0, 1]
    assert whole[1].files == {"proc/loadavg": "1 2 3", "proc/x": ""}
    assert whole[2].files == {"bin": "\n#F\x00"}
    for cut in range(len(data)):
        a, rest = split_frames(data[:cut])
        b, rest = split_frames(data[cut:], rest)
        assert a + b == whole and rest == b""


def test_split_frames_rejects_garbage_with_the_offset():
    with pytest.raises(StreamError, match="at byte 0: expected '#F seq time_ns nfiles'"):
        split_frames(b"Welcome to the node!\n")
    with pytest.raises(StreamError, match="expected 'key nbytes'"):
        split_frames(b"#F 0 1 1\nkey many\n")


def test_interval_must_be_a_multiple_of_the_tick():
    assert [e.every for e in enable({"cpu": 5, "mem": 1}, tick=1.0)] == [5, 1]
    with pytest.raises(ValueError, match=r"'cpu': interval 1\.5 s"):
        enable({"cpu": 1.5}, tick=1.0)
    with pytest.raises(KeyError, match="unknown sensor 'cpux'"):
        enable(["cpux"])


def test_marker_in_node_code_matches():
    assert MARKER in reader_script()
    import inspect

    assert f'"{MARKER}"' in inspect.getsource(node_scan)


def test_command_runs_under_sh_and_exits_when_stdin_closes():
    cmd = reader_command({"proc/loadavg": [1]}, interval=0.2)
    proc = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        frames = list(_frames(proc, 2))
        assert frames[0].seq == -1 and int(frames[0].files["@hello"].split()[0][4:]) == proc.pid
        # stdlib only: no environment, user site or site-packages to load at start
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:4] == [b"-I", b"-S", b"-c"]
        assert frames[1].files["proc/loadavg"].count(" ") == 4
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=2) == 0  # `exec`: the reader itself was the shell's pid
        proc.stdout.close()


def _frames(proc: subprocess.Popen, n: int, timeout: float = 10.0) -> Iterator[Frame]:
    rest = b""
    got = 0
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while got < n:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise AssertionError(f"reader sent {got} frames of {n} in {timeout} s")
        chunk = os.read(fd, 1 << 20)
        assert chunk, f"reader exited with {proc.poll()}"
        frames, rest = split_frames(chunk, rest)
        for f in frames:
            got += 1
            yield f


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@contextmanager
def _local_reader(names: list[str], interval: float = 1.0):
    enabled = enable(names, tick=interval)
    proc = start_local(reads_for(enabled), interval)
    try:
        yield proc, enabled
    finally:
        proc.stdin.close()
        proc.wait(timeout=5)
        proc.stdout.close()


def _run(names: list[str], n: int, files: tuple[str, ...]):
    """(frame, points, snapshot taken right after that frame arrived) for n frames;
    every counter of frame k must lie between snapshots k-1 and k."""
    out = []
    with _local_reader(names) as (proc, enabled):
        state = StreamState()
        for frame in _frames(proc, n + 1):
            snap = {f: _read(f) for f in files}
            points, state, errors = frame_points(frame, enabled, CTX, state)
            assert errors == []
            for p in points:
                encode_point(p)
            out.append((frame, points, snap))
    return out[1:]  # drop the hello


def _disks(text: str) -> dict[str, list[int]]:
    return {w[2]: [int(x) for x in w[3:14]] for w in (line.split() for line in text.splitlines())}


def test_diskio_counters_are_exact():
    runs = _run(["diskio"], 4, ("/proc/diskstats",))
    for (_, _, before), (_frame, points, after) in itertools.pairwise(runs):
        lo, hi = _disks(before["/proc/diskstats"]), _disks(after["/proc/diskstats"])
        assert points, "diskio wrote nothing"
        for p in points:
            dev = p.tags["device"]
            got = [p.fields[k] for k in ("reads", "merged_reads", "read_bytes", "read_time",
                                         "writes", "merged_writes", "write_bytes", "write_time")]  # fmt: skip
            got[2] //= 512
            got[6] //= 512
            for col, value in enumerate(got):
                assert lo[dev][col] <= value <= hi[dev][col], (dev, col)
                if lo[dev][col] == hi[dev][col]:
                    assert value == lo[dev][col]


def _net(text: str) -> dict[str, list[int]]:
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        out[name.strip()] = [int(x) for x in rest.split()]
    return out


def test_net_counters_are_exact():
    runs = _run(["net"], 3, ("/proc/net/dev",))
    for (_, _, before), (_, points, after) in itertools.pairwise(runs):
        lo, hi = _net(before["/proc/net/dev"]), _net(after["/proc/net/dev"])
        for p in points:
            dev = p.tags["device"]
            for field, col in (("bytes_recv", 0), ("packets_recv", 1), ("bytes_sent", 8)):
                assert lo[dev][col] <= p.fields[field] <= hi[dev][col]


def _cpu_total(text: str) -> list[int]:
    return [int(x) for x in text.splitlines()[0].split()[1:]]


def test_cpu_percentages_match_stat_deltas():
    runs = _run(["cpu"], 4, ("/proc/stat",))
    for (_, _, before), (frame, _, after) in itertools.pairwise(runs):
        # the reader's own read lies between the test's reads, column by column
        theirs = _cpu_total(frame.files["proc/stat"])
        a, b = _cpu_total(before["/proc/stat"]), _cpu_total(after["/proc/stat"])
        assert all(x <= y <= z for x, y, z in zip(a, theirs, b, strict=False))
    for (_, _, before), (_, points, after) in itertools.pairwise(runs):
        a, b = _cpu_total(before["/proc/stat"]), _cpu_total(after["/proc/stat"])
        d = [y - x for x, y in zip(a, b, strict=True)]
        total = sum(d[:8])
        (p,) = [p for p in points if p.tags["cpu"] == "cpu-total"]
        # windows differ by the milliseconds between the reader's read and the test's
        assert p.fields["usage_idle"] == pytest.approx(100 * d[3] / total, abs=3)
        assert p.fields["usage_system"] == pytest.approx(100 * d[2] / total, abs=3)


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    backing = tmp_path / "backing"
    with open(backing, "wb") as f:
        f.truncate(256 << 20)
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(backing)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def test_disk_rates_match_iostat(loop_device: str, tmp_path: Path):
    name = os.path.basename(loop_device)
    fio = subprocess.Popen(
        [
            "fio",
            "--name=w",
            f"--filename={loop_device}",
            "--rw=randwrite",
            "--bs=16k",
            "--direct=1",
            "--ioengine=psync",
            "--rate_iops=300",
            "--time_based",
            "--runtime=30",
            f"--output={tmp_path / 'fio.json'}",
        ],
    )
    iostat = None
    try:
        time.sleep(2.0)  # past fio start-up, where rate limiting catches up in bursts
        with _local_reader(["diskio"]) as (proc, enabled):
            state = StreamState()
            ours = []
            for frame in _frames(proc, 5):
                if frame.seq == -1:
                    # the reader's first read follows its hello at once: starting iostat
                    # now puts both 1 s grids within a few ms of each other
                    iostat = subprocess.Popen(
                        ["iostat", "-dx", "-y", "-o", "JSON", "1", "3", name],
                        stdout=subprocess.PIPE, text=True,
                    )  # fmt: skip
                points, state, _ = frame_points(frame, enabled, CTX, state)
                ours += [p for p in points if p.tags["device"] == name]
            stats = json.loads(iostat.communicate(timeout=10)[0])
    finally:
        fio.kill()
        fio.wait()
        if iostat is not None and iostat.poll() is None:
            iostat.kill()
            iostat.wait()
    theirs = stats["sysstat"]["hosts"][0]["statistics"]
    assert len(theirs) == 3 and len(ours) == 4
    a, b = ours[0], ours[-1]
    secs = (b.time_ns - a.time_ns) / 1e9
    w_s = (b.fields["writes"] - a.fields["writes"]) / secs
    wkb_s = (b.fields["write_bytes"] - a.fields["write_bytes"]) / 1024 / secs
    util = sum(p.fields["io_util"] for p in ours[1:]) / 3
    disk = [s["disk"][0] for s in theirs]
    assert w_s == pytest.approx(sum(d["w/s"] for d in disk) / 3, rel=0.02)
    assert wkb_s == pytest.approx(sum(d["wkB/s"] for d in disk) / 3, rel=0.02)
    print(f"ours w/s={w_s:.1f} util={util:.2f}; iostat", [(d["w/s"], d["util"]) for d in disk])
    assert util == pytest.approx(sum(d["util"] for d in disk) / 3, rel=0.02, abs=0.1)


def test_sensor_intervals_and_error_isolation():
    enabled = enable({"cpu": 1, "system": 2})
    state = StreamState()
    stat = "cpu 1 2 3 4 5 6 7 8 0 0\nbtime 100\n"
    seen = []
    for seq in range(4):
        stat = stat.replace(f"cpu {seq + 1} ", f"cpu {seq + 2} ")
        frame = Frame(seq, (seq + 200) * 10**9, {"proc/stat": stat, "proc/loadavg": "x y z"})
        points, state, errors = frame_points(frame, enabled, CTX, state)
        seen.append(sorted({p.measurement for p in points}))
        # system is due on even ticks only, and its bad loadavg does not stop cpu
        assert [e.split(":")[0] for e in errors] == (["system"] if seq % 2 == 0 else [])
    assert seen == [[], ["cpu"], ["cpu"], ["cpu"]]


def test_real_reader_procstat_follows_a_process_and_not_itself():
    sleeper = subprocess.Popen(["sleep", "30"])
    enabled = enable(["procstat", "processes"])
    matchers = (ProcMatch("exe", "^sleep$"), ProcMatch("pattern", "sleep|python"))
    ctx = Context(CTX.tags, procstat=matchers)
    proc = start_local(reads_for(enabled), 0.5, matchers)
    try:
        state = StreamState()
        points = []
        for frame in _frames(proc, 4):
            pts, state, errors = frame_points(frame, enabled, ctx, state)
            assert errors == []
            points += pts
        ps = [p for p in points if p.measurement == "procstat"]
        pids = {p.tags["pid"] for p in ps}
        assert str(sleeper.pid) in pids and str(proc.pid) not in pids
        mine = [p for p in ps if p.tags["pid"] == str(sleeper.pid)]
        assert {p.tags.get("exe") for p in mine} >= {"^sleep$"}
        assert any("cpu_usage" in p.fields for p in mine)
        assert all(p.fields["num_fds"] >= 3 for p in mine)
        for p in points:
            encode_point(p)
    finally:
        sleeper.kill()
        sleeper.wait()
        proc.stdin.close()
        proc.wait(timeout=5)
        proc.stdout.close()

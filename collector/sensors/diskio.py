"""Telegraf ``inputs.diskio`` from /proc/diskstats, tagged ``device`` and ``device_role``.

Like gopsutil, sectors are 512 bytes and devices whose counters are all zero are skipped.
io_await, io_svctm and io_util come from the previous sample exactly as Telegraf computes
them: no derived fields after a counter wrap, io_await/io_svctm only when I/Os completed,
io_util over the interval in whole milliseconds (node clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register

DISKSTATS = "proc/diskstats"
SECTOR = 512
# /proc/diskstats columns after major, minor, name (Documentation/admin-guide/iostats.rst)
_COLS = ("reads", "merged_reads", "read_sectors", "read_time", "writes", "merged_writes",
         "write_sectors", "write_time", "iops_in_progress", "io_time", "weighted_io_time")  # fmt: skip


@dataclass(frozen=True)
class DiskState:
    time_ns: int
    counters: dict[str, dict[str, int]]


def read_diskstats(text: str) -> dict[str, dict[str, int]]:
    """{device: Telegraf counter fields} for every device with any non-zero counter."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 14:
            continue  # gopsutil ignores malformed lines too
        try:
            raw = dict(zip(_COLS, (int(w) for w in words[3:14]), strict=True))
        except ValueError:
            raise parse_error(DISKSTATS, f"non-integer counter in line {line!r}") from None
        if not any(raw.values()):
            continue
        raw["read_bytes"] = raw.pop("read_sectors") * SECTOR
        raw["write_bytes"] = raw.pop("write_sectors") * SECTOR
        out[words[2]] = raw
    return out


def derived(now: dict[str, int], last: dict[str, int], itv_ms: int) -> dict[str, float]:
    """io_await, io_svctm, io_util between two samples of one device (Telegraf's rules)."""
    if any(now[k] < last[k] for k in ("reads", "writes", "read_time", "write_time", "io_time")):
        return {}
    ops = (now["reads"] - last["reads"]) + (now["writes"] - last["writes"])
    rw_time = (now["read_time"] - last["read_time"]) + (now["write_time"] - last["write_time"])
    io_time = now["io_time"] - last["io_time"]
    out: dict[str, float] = {}
    if ops > 0:
        out["io_await"] = rw_time / ops
        out["io_svctm"] = io_time / ops
    if itv_ms > 0:
        out["io_util"] = 100.0 * io_time / itv_ms
    return out


def parse(
    sample: Sample, ctx: Context, state: DiskState | None = None
) -> tuple[list[Point], DiskState]:
    disks = read_diskstats(need(sample, DISKSTATS))
    itv_ms = (sample.time_ns - state.time_ns) // 1_000_000 if state else 0
    points = []
    for name, counters in disks.items():
        fields: dict[str, int | float] = dict(counters)
        last = state.counters.get(name) if state else None
        if last is not None:
            fields.update(derived(counters, last, itv_ms))
        tags = base_tags(ctx, device=name, device_role=ctx.device_roles.get(name, ""))
        points.append(Point(schema.DISKIO.name, tags, fields, sample.time_ns))
    return points, DiskState(sample.time_ns, disks)


SENSOR = register(Sensor("diskio", schema.DISKIO, (DISKSTATS,), parse, __doc__ or ""))

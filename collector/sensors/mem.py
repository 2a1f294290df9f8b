"""Telegraf ``inputs.mem`` on Linux: gopsutil's VirtualMemory arithmetic over /proc/meminfo.

cached includes SReclaimable and used = total - free - buffers - cached (gopsutil v3+);
huge_pages_total/free are page counts, everything else bytes.
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register

MEMINFO = "proc/meminfo"

# Telegraf field -> /proc/meminfo key (values in kB unless a count)
_KB = {
    "total": "MemTotal", "free": "MemFree", "buffered": "Buffers", "active": "Active",
    "inactive": "Inactive", "shared": "Shmem", "slab": "Slab", "sreclaimable": "SReclaimable",
    "sunreclaim": "SUnreclaim", "dirty": "Dirty", "write_back": "Writeback",
    "write_back_tmp": "WritebackTmp", "mapped": "Mapped", "page_tables": "PageTables",
    "swap_total": "SwapTotal", "swap_free": "SwapFree", "swap_cached": "SwapCached",
    "commit_limit": "CommitLimit", "committed_as": "Committed_AS",
    "huge_page_size": "Hugepagesize", "vmalloc_total": "VmallocTotal",
    "vmalloc_used": "VmallocUsed", "vmalloc_chunk": "VmallocChunk", "high_total": "HighTotal",
    "high_free": "HighFree", "low_total": "LowTotal", "low_free": "LowFree",
}  # fmt: skip
_COUNT = {"huge_pages_total": "HugePages_Total", "huge_pages_free": "HugePages_Free"}


def read_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        words = rest.split()
        try:
            out[key.strip()] = int(words[0])
        except (IndexError, ValueError):
            raise parse_error(MEMINFO, f"expected a number in line {line!r}") from None
    return out


def parse(sample: Sample, ctx: Context, state: object = None) -> tuple[list[Point], object]:
    info = read_meminfo(need(sample, MEMINFO))
    if not info.get("MemTotal"):
        raise parse_error(MEMINFO, "no MemTotal")
    fields: dict[str, int | float] = {k: info.get(v, 0) * 1024 for k, v in _KB.items()}
    fields.update({k: info.get(v, 0) for k, v in _COUNT.items()})
    cached = (info.get("Cached", 0) + info.get("SReclaimable", 0)) * 1024
    fields["cached"] = cached
    total = fields["total"]
    available = info["MemAvailable"] * 1024 if "MemAvailable" in info else None
    if available is None:  # kernels before 3.14: gopsutil's fallback
        available = cached + fields["free"]
    fields["available"] = available
    used = total - fields["free"] - fields["buffered"] - cached
    fields["used"] = used
    fields["used_percent"] = 100.0 * used / total
    fields["available_percent"] = 100.0 * available / total
    return [Point(schema.MEM.name, base_tags(ctx), fields, sample.time_ns)], state


SENSOR = register(Sensor("mem", schema.MEM, (MEMINFO,), parse, __doc__ or ""))

"""Telegraf ``inputs.kernel``: counters from /proc/stat and the entropy pool."""

from __future__ import annotations

from typing import Any

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register

STAT = "proc/stat"
ENTROPY = "proc/sys/kernel/random/entropy_avail"


def stat_lines(text: str) -> dict[str, list[str]]:
    """/proc/stat as {first word: remaining words}; shared by cpu, system and procstat."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            out[words[0]] = words[1:]
    return out


def stat_int(lines: dict[str, list[str]], key: str, index: int = 0) -> int:
    try:
        return int(lines[key][index])
    except (KeyError, IndexError, ValueError):
        raise parse_error(STAT, f"expected an integer in line {key!r} word {index + 1}") from None


def parse(sample: Sample, ctx: Context, state: Any = None) -> tuple[list[Point], Any]:
    """Same fields as Telegraf: ``page`` exists only on old kernels, so disk_pages_* are
    written only when the line is there."""
    lines = stat_lines(need(sample, STAT))
    fields: dict[str, int] = {
        "interrupts": stat_int(lines, "intr"),
        "context_switches": stat_int(lines, "ctxt"),
        "processes_forked": stat_int(lines, "processes"),
        "boot_time": stat_int(lines, "btime"),
    }
    if "page" in lines:
        fields["disk_pages_in"] = stat_int(lines, "page", 0)
        fields["disk_pages_out"] = stat_int(lines, "page", 1)
    entropy = need(sample, ENTROPY).strip()
    try:
        fields["entropy_avail"] = int(entropy)
    except ValueError:
        raise parse_error(ENTROPY, f"expected an integer, got {entropy!r}") from None
    return [Point(schema.KERNEL.name, base_tags(ctx), fields, sample.time_ns)], state


SENSOR = register(Sensor("kernel", schema.KERNEL, (STAT, ENTROPY), parse, __doc__ or ""))

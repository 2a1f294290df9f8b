"""Telegraf ``inputs.net``: /proc/net/dev counters per interface, tagged ``device``.

Without an explicit interface list Telegraf skips loopback and interfaces that are down;
we read the same flags from /sys/class/net/IF/flags. ``speed`` is /sys/class/net/IF/speed
in Mbit/s, -1 when the kernel does not know it (virtual devices).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register

NETDEV = "proc/net/dev"
FLAGS = "sys/class/net/*/flags"
SPEED = "sys/class/net/*/speed"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
# /proc/net/dev columns after "IFACE:"; Telegraf field for the ones it reports
_COLS = {0: "bytes_recv", 1: "packets_recv", 2: "err_in", 3: "drop_in",
         8: "bytes_sent", 9: "packets_sent", 10: "err_out", 11: "drop_out"}  # fmt: skip


def read_netdev(text: str) -> dict[str, dict[str, int]]:
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        words = rest.split()
        try:
            out[name.strip()] = {f: int(words[i]) for i, f in _COLS.items()}
        except (IndexError, ValueError):
            raise parse_error(NETDEV, f"expected 16 integer columns in line {line!r}") from None
    return out


def _sys(sample: Sample, iface: str, leaf: str) -> str | None:
    return sample.files.get(f"sys/class/net/{iface}/{leaf}")


def _wanted(sample: Sample, ctx: Context, iface: str) -> bool:
    if ctx.interfaces:
        return any(fnmatchcase(iface, pat) for pat in ctx.interfaces)
    flags = _sys(sample, iface, "flags")
    if flags is None:
        return True  # sysfs not readable: keep it rather than lose data
    try:
        value = int(flags.strip(), 16)
    except ValueError:
        raise parse_error(f"sys/class/net/{iface}/flags", f"expected hex, got {flags!r}") from None
    return bool(value & IFF_UP) and not value & IFF_LOOPBACK


def _speed(sample: Sample, iface: str) -> int:
    text = _sys(sample, iface, "speed")
    try:
        return int(text.strip()) if text is not None else -1
    except ValueError:
        return -1


def parse(sample: Sample, ctx: Context, state: object = None) -> tuple[list[Point], object]:
    points = []
    for iface, fields in read_netdev(need(sample, NETDEV)).items():
        if not _wanted(sample, ctx, iface):
            continue
        all_fields: dict[str, int] = {**fields, "speed": _speed(sample, iface)}
        points.append(
            Point(schema.NET.name, base_tags(ctx, device=iface), all_fields, sample.time_ns)
        )
    return points, state


SENSOR = register(Sensor("net", schema.NET, (NETDEV, FLAGS, SPEED), parse, __doc__ or ""))

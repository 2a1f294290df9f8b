"""Telegraf ``inputs.system``: load averages, CPU count, logged-in users, uptime.

uptime is gopsutil's: node time (whole seconds) minus boot time from /proc/stat; n_cpus
counts the online CPUs listed in /proc/stat; n_users/n_unique_users come from utmp and,
as in Telegraf, are left out when the node has no utmp.
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import (
    Context,
    Sample,
    Sensor,
    base_tags,
    digest_counts,
    need,
    parse_error,
    register,
)
from collector.sensors.kernel import STAT, stat_int, stat_lines

LOADAVG = "proc/loadavg"
USERS = "@users"


def parse(sample: Sample, ctx: Context, state: object = None) -> tuple[list[Point], object]:
    load = need(sample, LOADAVG).split()
    try:
        load1, load5, load15 = (float(x) for x in load[:3])
    except ValueError:
        raise parse_error(LOADAVG, f"expected three load averages, got {load[:3]!r}") from None
    lines = stat_lines(need(sample, STAT))
    fields: dict[str, int | float] = {
        "load1": load1,
        "load5": load5,
        "load15": load15,
        "n_cpus": sum(1 for k in lines if k.startswith("cpu") and k[3:].isdigit()),
        "uptime": sample.time_ns // 1_000_000_000 - stat_int(lines, "btime"),
    }
    if USERS in sample.files:
        counts = dict(digest_counts(sample, USERS))
        fields["n_users"] = counts["users"]
        fields["n_unique_users"] = counts["unique"]
    return [Point(schema.SYSTEM.name, base_tags(ctx), fields, sample.time_ns)], state


SENSOR = register(Sensor("system", schema.SYSTEM, (LOADAVG, STAT, USERS), parse, __doc__ or ""))

"""Telegraf ``inputs.cpu`` (percpu and totalcpu): usage_* percentages from /proc/stat deltas.

Exactly Telegraf's arithmetic: the total excludes guest and guest_nice (the kernel already
counts them in user and nice), usage_user and usage_nice subtract them, a CPU whose total
did not move is skipped, and the first sample only primes the state.
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register

STAT = "proc/stat"
COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
           "guest_nice")  # fmt: skip

CpuTimes = dict[str, tuple[int, ...]]


def read_times(text: str) -> CpuTimes:
    """{"cpu-total" | "cpuN": ticks per column} from /proc/stat."""
    out: CpuTimes = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        words = line.split()
        name = "cpu-total" if words[0] == "cpu" else words[0]
        try:
            ticks = tuple(int(w) for w in words[1:])
        except ValueError:
            raise parse_error(STAT, f"non-integer tick count in line {line!r}") from None
        if len(ticks) < 8:
            raise parse_error(STAT, f"expected at least 8 tick columns in line {line!r}")
        out[name] = ticks + (0,) * (len(COLUMNS) - len(ticks))
    if not out:
        raise parse_error(STAT, "no cpu lines")
    return out


def usage(now: tuple[int, ...], last: tuple[int, ...]) -> dict[str, float] | None:
    """Telegraf's usage_* fields between two samples of one CPU (None: nothing elapsed)."""
    d = dict(zip(COLUMNS, (a - b for a, b in zip(now, last, strict=True)), strict=True))
    total = sum(d[c] for c in COLUMNS[:8])
    if total <= 0:
        return None
    f = 100.0 / total
    return {
        "usage_user": (d["user"] - d["guest"]) * f,
        "usage_system": d["system"] * f,
        "usage_idle": d["idle"] * f,
        "usage_nice": (d["nice"] - d["guest_nice"]) * f,
        "usage_iowait": d["iowait"] * f,
        "usage_irq": d["irq"] * f,
        "usage_softirq": d["softirq"] * f,
        "usage_steal": d["steal"] * f,
        "usage_guest": d["guest"] * f,
        "usage_guest_nice": d["guest_nice"] * f,
    }


def parse(
    sample: Sample, ctx: Context, state: CpuTimes | None = None
) -> tuple[list[Point], CpuTimes]:
    times = read_times(need(sample, STAT))
    points = []
    for cpu, now in times.items():
        last = (state or {}).get(cpu)
        fields = usage(now, last) if last is not None else None
        if fields is not None:
            points.append(Point(schema.CPU.name, base_tags(ctx, cpu=cpu), fields, sample.time_ns))
    return points, times


SENSOR = register(Sensor("cpu", schema.CPU, (STAT,), parse, __doc__ or ""))

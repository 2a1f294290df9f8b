"""Telegraf ``inputs.processes`` on Linux: process states from every /proc/PID/stat.

The node digests the process table (``@procs``, see reader.node_digest_procs); the state
letters map to Telegraf's fields exactly as its procfs path does.
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, digest_counts, register

PROCS = "@procs"
STATES = {
    "R": "running", "S": "sleeping", "D": "blocked", "Z": "zombies", "X": "dead",
    "T": "stopped", "t": "stopped", "W": "paging", "I": "idle", "P": "parked",
}  # fmt: skip
# Telegraf's zero-initialised Linux fields (parked is only written when seen)
_ZERO = ("blocked", "zombies", "stopped", "running", "sleeping", "total", "unknown", "dead",
         "paging", "total_threads", "idle")  # fmt: skip


def parse(sample: Sample, ctx: Context, state: object = None) -> tuple[list[Point], object]:
    fields = dict.fromkeys(_ZERO, 0)
    for key, n in digest_counts(sample, PROCS):
        if key == "threads":
            fields["total_threads"] = n
            continue
        name = STATES.get(key)
        if name is not None:
            fields[name] = fields.get(name, 0) + n
        fields["total"] += n
    return [Point(schema.PROCESSES.name, base_tags(ctx), fields, sample.time_ns)], state


SENSOR = register(Sensor("processes", schema.PROCESSES, (PROCS,), parse, __doc__ or ""))

"""Telegraf ``inputs.procstat`` for the processes the node's roles care about.

The node selects processes (``exe``: regex on the process name like pgrep; ``pattern``:
regex on the command line like pgrep -f) and streams their /proc/PID/stat, status, io (when
readable) and fd count; ``@procstat`` lists "pid selector-index". One point per process and
selector, tagged process_name, exe or pattern, and pid. Values follow gopsutil: cpu times
in seconds from clock ticks, cpu_usage = 100 * d(user+system+iowait) / d(wall) (percent of
one core, Telegraf's default irix mode), memory from status in bytes, created_at in ns.
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import Context, Sample, Sensor, base_tags, need, parse_error, register
from collector.sensors.kernel import STAT, stat_int, stat_lines

PROCSTAT = "@procstat"
# /proc/PID/status key -> Telegraf field (kB -> bytes)
_STATUS_KB = {"VmRSS": "memory_rss", "VmSize": "memory_vms", "VmSwap": "memory_swap",
              "VmData": "memory_data", "VmStk": "memory_stack", "VmLck": "memory_locked"}  # fmt: skip
_STATUS_N = {"Threads": "num_threads", "voluntary_ctxt_switches": "voluntary_context_switches",
             "nonvoluntary_ctxt_switches": "involuntary_context_switches"}  # fmt: skip
_IO = {"syscr": "read_count", "syscw": "write_count", "read_bytes": "read_bytes",
       "write_bytes": "write_bytes"}  # fmt: skip

# (pid, start time in ticks) -> user+system+iowait ticks at time_ns
ProcState = dict[tuple[str, int], tuple[int, int]]


def read_stat(key: str, text: str) -> dict[str, int]:
    """The /proc/PID/stat numbers procstat uses (1-based field k is rest[k - 3])."""
    end = text.rfind(")")
    rest = text[end + 2 :].split()
    if end < 0 or len(rest) < 20:
        raise parse_error(key, f"expected '(comm) state ...' with 20+ fields, got {text[:80]!r}")
    try:
        return {
            "minflt": int(rest[7]),
            "majflt": int(rest[9]),
            "utime": int(rest[11]),
            "stime": int(rest[12]),
            "starttime": int(rest[19]),
            "blkio": int(rest[39]) if len(rest) > 39 else 0,
        }
    except ValueError:
        raise parse_error(key, "non-integer value in a numeric field") from None


def read_keyed(key: str, text: str) -> dict[str, str]:
    """'Key:  value' lines (status, io)."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _int(key: str, value: str) -> int:
    try:
        return int(value.split()[0])
    except (IndexError, ValueError):
        raise parse_error(key, f"expected an integer, got {value!r}") from None


def process_fields(sample: Sample, pid: str, btime: int) -> tuple[str, dict[str, int | float]]:
    """(process name, Telegraf fields) of one process, without cpu_usage."""
    tck = sample.clk_tck
    stat = read_stat(f"pid/{pid}/stat", need(sample, f"pid/{pid}/stat"))
    fields: dict[str, int | float] = {
        "cpu_time_user": stat["utime"] / tck,
        "cpu_time_system": stat["stime"] / tck,
        "cpu_time_iowait": stat["blkio"] / tck,
        "minor_faults": stat["minflt"],
        "major_faults": stat["majflt"],
        "created_at": (stat["starttime"] * 1000 // tck + btime * 1000) * 1_000_000,
    }
    skey = f"pid/{pid}/status"
    status = read_keyed(skey, need(sample, skey))
    for k, f in _STATUS_KB.items():
        if k in status:
            fields[f] = _int(skey, status[k]) * 1024
    for k, f in _STATUS_N.items():
        if k in status:
            fields[f] = _int(skey, status[k])
    ikey = f"pid/{pid}/io"
    if ikey in sample.files:
        io = read_keyed(ikey, sample.files[ikey])
        fields.update({f: _int(ikey, io[k]) for k, f in _IO.items() if k in io})
    fkey = f"pid/{pid}/fds"
    if fkey in sample.files:
        fields["num_fds"] = _int(fkey, sample.files[fkey])
    return status.get("Name", ""), fields


def parse(
    sample: Sample, ctx: Context, state: ProcState | None = None
) -> tuple[list[Point], ProcState]:
    btime = stat_int(stat_lines(need(sample, STAT)), "btime")
    new_state: ProcState = {}
    points = []
    for line in need(sample, PROCSTAT).splitlines():
        pid, _, idx = line.partition(" ")
        try:
            match = ctx.procstat[int(idx)]
        except (ValueError, IndexError):
            raise parse_error(PROCSTAT, f"line {line!r}: no such procstat selector") from None
        if f"pid/{pid}/status" not in sample.files:
            continue  # exited between the scan and the read
        name, fields = process_fields(sample, pid, btime)
        stat = read_stat(f"pid/{pid}/stat", sample.files[f"pid/{pid}/stat"])
        ident = (pid, stat["starttime"])
        ticks = stat["utime"] + stat["stime"] + stat["blkio"]
        last = (state or {}).get(ident)
        if last is not None and sample.time_ns > last[1]:
            dt = (sample.time_ns - last[1]) / 1e9
            fields["cpu_usage"] = 100.0 * (ticks - last[0]) / sample.clk_tck / dt
        new_state[ident] = (ticks, sample.time_ns)
        tags = base_tags(ctx, process_name=name, pid=pid, **{match.kind: match.regex})
        points.append(Point(schema.PROCSTAT.name, tags, fields, sample.time_ns))
    return points, new_state


SENSOR = register(Sensor("procstat", schema.PROCSTAT, (PROCSTAT, STAT), parse, __doc__ or ""))

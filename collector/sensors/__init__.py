"""Node sensors: one module per Telegraf input, registered here by name.

A sensor declares the measurement it writes, the files it needs (keys relative to the
host root, e.g. ``proc/stat``; or a node-side digest such as ``@procs``) and a PURE
``parse(sample, ctx, state) -> (points, state)``. Counters that Telegraf turns into rates
(cpu usage, diskio io_util, procstat cpu_usage) need the previous sample: that is the
explicit ``state`` going in and coming out, so parsers stay pure and testable on captured
files. The node-side reader (``collector.sensors.reader``) reads every file the enabled
sensors need once per tick and streams them; ``reader.frame_points`` turns a frame into
points for every sensor due at that tick.

Other sensor modules (rabbitmq, ceph) plug in with :func:`register`; sensors that do not
read node files (an HTTP API) simply declare no files and are not driven by the reader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

from pydantic import PositiveFloat, RootModel

from collector import schema
from collector.inventory import Inventory
from collector.lineproto import Point


@dataclass(frozen=True)
class ProcMatch:
    """One procstat selector, like a Telegraf ``[[inputs.procstat]]`` with ``exe`` or
    ``pattern``: ``exe`` is a regex searched in the process name (pgrep), ``pattern`` a
    regex searched in the full command line (pgrep -f)."""

    kind: str
    regex: str

    def __post_init__(self) -> None:
        if self.kind not in ("exe", "pattern"):
            raise ValueError(f"procstat matcher kind {self.kind!r}: expected 'exe' or 'pattern'")


# Which processes procstat follows on a node, by node role (a node gets the union).
ROLE_PROCESSES: dict[str, tuple[ProcMatch, ...]] = {
    "testnode": (ProcMatch("exe", "^fio$"),),
    "ceph-osd": (ProcMatch("exe", "^ceph-osd$"),),
    "ceph-mon": (ProcMatch("exe", "^ceph-mon$"), ProcMatch("exe", "^ceph-mgr$")),
    "rabbitmq": (ProcMatch("exe", "^beam.smp$"),),
    "compute": (ProcMatch("exe", "^qemu"),),
    "rpc-client": (ProcMatch("pattern", r"ombt|loadgen\.rpc\.agent"),),
    "rpc-server": (ProcMatch("pattern", r"ombt|loadgen\.rpc\.agent"),),
}


def procstat_for_roles(roles: list[str] | tuple[str, ...]) -> tuple[ProcMatch, ...]:
    """The procstat selectors for a node with these roles, without duplicates."""
    out: list[ProcMatch] = []
    for role in roles:
        for m in ROLE_PROCESSES.get(role, ()):
            if m not in out:
                out.append(m)
    return tuple(out)


@dataclass(frozen=True)
class Context:
    """What the caller knows about the node: tags for every point and per-node options."""

    tags: Mapping[str, str]
    # device name (as in /proc/diskstats) -> device role, e.g. {"sdb": "osd-data"}
    device_roles: Mapping[str, str] = field(default_factory=dict)
    # Telegraf's net `interfaces`: empty means every interface that is up and not loopback
    interfaces: tuple[str, ...] = ()
    procstat: tuple[ProcMatch, ...] = ()


@dataclass(frozen=True)
class Sample:
    """The files read on the node at one instant (node clock), keyed like Sensor.files."""

    time_ns: int
    files: Mapping[str, str]
    clk_tck: int = 100
    pagesize: int = 4096


ParseFn = Callable[[Sample, Context, Any], tuple[list[Point], Any]]


@dataclass(frozen=True)
class Sensor:
    name: str
    measurement: schema.Measurement
    files: tuple[str, ...]
    parse: ParseFn
    doc: str = ""


REGISTRY: dict[str, Sensor] = {}

# Built-in modules, imported lazily by `get`/`all_sensors` so rabbitmq/ceph can live in
# the same package and register themselves the same way.
BUILTIN = (
    "cpu",
    "diskio",
    "mem",
    "net",
    "netstat",
    "system",
    "kernel",
    "processes",
    "procstat",
)


def register(sensor: Sensor) -> Sensor:
    """Add a sensor to the registry; a second sensor with the same name is a bug."""
    if sensor.name in REGISTRY and REGISTRY[sensor.name] is not sensor:
        raise ValueError(f"sensor {sensor.name!r} is registered twice")
    REGISTRY[sensor.name] = sensor
    return sensor


def _load(name: str) -> None:
    importlib.import_module(f"collector.sensors.{name}")


def get(name: str) -> Sensor:
    if name not in REGISTRY and name.isidentifier() and find_spec(f"collector.sensors.{name}"):
        _load(name)
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(set(REGISTRY) | set(BUILTIN)))
        raise KeyError(f"unknown sensor {name!r}; known: {known}") from None


def all_sensors() -> list[Sensor]:
    """Every built-in node sensor (plus any other module already registered)."""
    for name in BUILTIN:
        _load(name)
    return list(REGISTRY.values())


def parse_error(key: str, what: str) -> ValueError:
    """A uniform error for input a parser cannot use: names the file and what was wrong."""
    return ValueError(f"{key}: {what}")


def need(sample: Sample, key: str) -> str:
    """The text of one file of the sample, or a clear error saying it was not read."""
    try:
        return sample.files[key]
    except KeyError:
        raise parse_error(key, "missing from the sample (not read on the node)") from None


def base_tags(ctx: Context, **extra: str) -> dict[str, str]:
    tags = dict(ctx.tags)
    tags.update(extra)
    return tags


def digest_counts(sample: Sample, key: str) -> list[tuple[str, int]]:
    """The 'name count' lines of a node-side digest (@procs, @sockets, @users)."""
    out = []
    for line in need(sample, key).splitlines():
        name, _, count = line.partition(" ")
        try:
            out.append((name, int(count)))
        except ValueError:
            raise parse_error(key, f"expected 'name count', got {line!r}") from None
    return out


class SensorIntervals(RootModel[dict[str, PositiveFloat]]):
    """The lab config's `sensors:` section: sensor name -> interval in seconds."""


def configured_intervals(inventory: Inventory) -> dict[str, float] | None:
    """Per-sensor intervals from the config, or None for every sensor at the default tick."""
    section = inventory.section("sensors", SensorIntervals)
    return section.root if section is not None else None

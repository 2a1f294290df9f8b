"""What a node is: disks, NICs, CPU, memory, kernel, OS, and the role of every device.

One shell script gathers everything in a single round trip (no Python or agent needed on
the node); its sections are parsed by pure functions tested on captured real output.
Block devices come from `lsblk -J -b`, with `/sys/block` as the fallback when lsblk is
missing or too old. Device roles come from config patterns per node role, then from
discovery itself (the disk holding `/` is the OS disk), and providers registered per node
role (the Ceph issue plugs OSD data/DB/WAL discovery in there) can add facts that win over
both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from collector import schema
from collector.inventory import Node
from collector.lineproto import Point
from collector.ssh import NodeConnection

OS_DISK_ROLE = "os"
DEFAULT_DISK_ROLE = "other"
DEFAULT_NIC_ROLE = "nic"
LOOPBACK_ROLE = "loopback"

_LSBLK_COLUMNS = "NAME,KNAME,TYPE,SIZE,MODEL,SERIAL,ROTA,SCHED,MOUNTPOINT,PKNAME"
_MARK = "@@wally:"
# Each section is introduced by a marker line; a failing command leaves its section empty.
DISCOVERY_SCRIPT = f"""
echo '{_MARK}lsblk'; lsblk -J -b -o {_LSBLK_COLUMNS} 2>/dev/null
echo '{_MARK}sysblock'; grep -H . /sys/block/*/size /sys/block/*/queue/rotational \
 /sys/block/*/queue/scheduler /sys/block/*/device/model /sys/block/*/*/partition \
 /sys/block/*/*/size 2>/dev/null
echo '{_MARK}slaves'; for s in /sys/block/*/slaves/*; do [ -e "$s" ] && echo "$s"; done
echo '{_MARK}mounts'; cat /proc/self/mounts
echo '{_MARK}net'; grep -H . /sys/class/net/*/speed /sys/class/net/*/address \
 /sys/class/net/*/mtu /sys/class/net/*/operstate 2>/dev/null
echo '{_MARK}netdev'; for d in /sys/class/net/*/device; do [ -e "$d" ] && echo "$d"; done
echo '{_MARK}cpuinfo'; grep -E '^(processor|model name|physical id|core id|Hardware|Model)[[:space:]]*:' /proc/cpuinfo
echo '{_MARK}meminfo'; grep -E '^(MemTotal|SwapTotal):' /proc/meminfo
echo '{_MARK}uname'; uname -n; uname -r; uname -m
echo '{_MARK}os-release'; cat /etc/os-release 2>/dev/null
"""


class DiscoveryError(ValueError):
    """Discovery output that cannot be understood; names the node and the section."""


@dataclass
class BlockDevice:
    name: str
    type: str
    size: int
    rotational: bool | None = None
    model: str = ""
    serial: str = ""
    scheduler: str = ""
    mountpoints: list[str] = field(default_factory=list)
    parent: str | None = None
    role: str = ""


@dataclass
class Nic:
    name: str
    speed: int = -1
    address: str = ""
    mtu: int | None = None
    state: str = ""
    physical: bool = False
    role: str = ""


@dataclass
class CpuInfo:
    model: str
    count: int
    sockets: int
    physical_cores: int


@dataclass
class NodeInfo:
    node: str
    roles: list[str]
    hostname: str = ""
    kernel: str = ""
    arch: str = ""
    os: str = ""
    cpu_model: str = ""
    cpus: int = 0
    sockets: int = 0
    physical_cores: int = 0
    memory: int = 0
    swap: int = 0
    devices: list[BlockDevice] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    # what role providers learned from the node's software, e.g. {"ceph": {"osds": 2, ...}}
    facts: dict[str, Any] = field(default_factory=dict)

    def device_roles(self) -> dict[str, str]:
        """device name -> device role, for tagging diskio/net points."""
        return {d.name: d.role for d in [*self.devices, *self.nics]}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def points(self, time_ns: int) -> list[Point]:
        """`wally_node` and `wally_device` records, one per node role, so every role finds them."""
        out: list[Point] = []
        for role in self.roles:
            tags = {schema.TAG_NODE: self.node, schema.TAG_ROLE: role}
            out.append(
                Point(
                    schema.WALLY_NODE.name,
                    tags,
                    {
                        "roles": ",".join(self.roles),
                        "cores": self.cpus,
                        "cpu_model": self.cpu_model,
                        "memory": self.memory,
                        "kernel": self.kernel,
                        "os": self.os,
                        "info": self.to_json(),
                    },
                    time_ns,
                )
            )
            for dev in self.devices:
                fields: dict[str, Any] = {
                    "size": dev.size,
                    "model": dev.model,
                    "scheduler": dev.scheduler,
                    "mountpoint": ",".join(dev.mountpoints),
                }
                if dev.rotational is not None:
                    fields["rotational"] = dev.rotational
                out.append(self._device_point(tags, dev.name, dev.role, dev.type, fields, time_ns))
            for nic in self.nics:
                out.append(
                    self._device_point(
                        tags, nic.name, nic.role, "nic", {"speed": nic.speed}, time_ns
                    )
                )
        return out

    @staticmethod
    def _device_point(
        tags: dict[str, str], name: str, role: str, kind: str, fields: dict[str, Any], t: int
    ) -> Point:
        dtags = {**tags, schema.TAG_DEVICE: name, schema.TAG_DEVICE_ROLE: role, "kind": kind}
        return Point(schema.WALLY_DEVICE.name, dtags, fields, t)


# --- pure parsers --------------------------------------------------------------------


def split_sections(text: str) -> dict[str, str]:
    """Cut the discovery script's output at its marker lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = sections.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _as_bool(value: Any) -> bool | None:
    """lsblk >= 2.33 gives JSON booleans, older versions "0"/"1" strings."""
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip() == "1"


def _as_int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _scheduler(text: str | None) -> str:
    """`/sys/.../scheduler` says `mq-deadline [none]`; the bracketed one is active."""
    if not text:
        return ""
    m = re.search(r"\[([^\]]+)\]", text)
    return m.group(1) if m else text.strip()


def parse_lsblk(text: str) -> list[BlockDevice]:
    """Flatten `lsblk -J -b` output; partitions and holders keep their parent's name."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DiscoveryError(f"lsblk output is not JSON: {exc}") from None
    out: list[BlockDevice] = []

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for item in items:
            name = item.get("kname") or item["name"]
            mounts = item.get("mountpoints") or [item.get("mountpoint")]
            dev = BlockDevice(
                name=name,
                type=item.get("type") or "disk",
                size=_as_int(item.get("size")),
                rotational=_as_bool(item.get("rota")),
                model=(item.get("model") or "").strip(),
                serial=(item.get("serial") or "").strip(),
                scheduler=_scheduler(item.get("sched")),
                mountpoints=[m for m in mounts if m],
                parent=parent or item.get("pkname"),
            )
            if not any(d.name == name for d in out):
                out.append(dev)
            walk(item.get("children") or [], name)

    walk(data.get("blockdevices") or [], None)
    return out


def _grep_lines(text: str, prefix: str) -> Iterator[tuple[list[str], str]]:
    """`grep -H . FILES` output -> (path parts below `prefix`, value) pairs."""
    for line in text.splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith(prefix):
            yield path[len(prefix) :].split("/"), value


def parse_sysblock(text: str, slaves: str = "") -> list[BlockDevice]:
    """Build the device list from `grep -H . /sys/block/...` lines when lsblk is unusable."""
    attrs: dict[str, dict[str, str]] = {}
    for parts, value in _grep_lines(text, "/sys/block/"):
        disk = parts[0]
        if len(parts) == 2:
            attrs.setdefault(disk, {})[parts[1]] = value
        elif parts[1] in ("queue", "device"):
            attrs.setdefault(disk, {})[parts[2]] = value
        else:
            attrs.setdefault(parts[1], {"_parent": disk})[parts[2]] = value
    holders: dict[str, str] = {}
    for line in slaves.splitlines():
        # /sys/block/dm-0/slaves/vda2: dm-0 is stacked on vda2.
        parts = line.strip().split("/")
        if len(parts) == 6 and parts[4] == "slaves":
            holders.setdefault(parts[3], parts[5])
    out = []
    for name, a in attrs.items():
        parent = a.get("_parent") or holders.get(name)
        kind = "part" if "partition" in a else ("dm" if name.startswith("dm-") else "disk")
        rota = a.get("rotational")
        out.append(
            BlockDevice(
                name=name,
                type=kind,
                size=_as_int(a.get("size")) * 512,
                rotational=rota == "1" if rota is not None else None,
                model=a.get("model", "").strip(),
                scheduler=_scheduler(a.get("scheduler")),
                parent=parent,
            )
        )
    return out


def parse_mounts(text: str) -> dict[str, list[str]]:
    """`/proc/self/mounts` -> device name -> mount points (octal escapes decoded)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].startswith("/dev/"):
            continue
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        out.setdefault(fields[0][len("/dev/") :], []).append(target)
    return out


def parse_net(text: str, devices: str = "") -> list[Nic]:
    """`grep -H . /sys/class/net/*/{speed,address,mtu,operstate}`; no speed means -1."""
    attrs: dict[str, dict[str, str]] = {}
    for parts, value in _grep_lines(text, "/sys/class/net/"):
        attrs.setdefault(parts[0], {})[parts[-1]] = value.strip()
    physical = {line.strip().split("/")[4] for line in devices.splitlines() if line.count("/") >= 5}
    out = []
    for name, a in attrs.items():
        speed = a.get("speed", "")
        out.append(
            Nic(
                name=name,
                speed=int(speed) if re.fullmatch(r"-?\d+", speed) else -1,
                address=a.get("address", ""),
                mtu=int(a["mtu"]) if a.get("mtu", "").isdigit() else None,
                state=a.get("operstate", ""),
                physical=name in physical,
            )
        )
    return out


def parse_cpuinfo(text: str) -> CpuInfo:
    count = 0
    model = ""
    cores: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    phys = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "Hardware", "Model") and not model:
            model = value
        elif key == "physical id":
            phys = value
            sockets.add(value)
        elif key == "core id":
            cores.add((phys, value))
    return CpuInfo(model or "unknown", count, len(sockets) or 1, len(cores) or count)


def parse_meminfo(text: str) -> dict[str, int]:
    """Lines `MemTotal:  16318412 kB` -> {"MemTotal": bytes}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s+(\d+)(?:\s+kB)?", line)
        if m:
            factor = 1024 if line.rstrip().endswith("kB") else 1
            out[m.group(1)] = int(m.group(2)) * factor
    return out


def parse_os_release(text: str) -> str:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("\"'")
    return values.get("PRETTY_NAME") or values.get("NAME", "")


def parse_discovery(text: str, node: str, roles: Iterable[str]) -> NodeInfo:
    """The discovery script's whole output -> NodeInfo (device roles not yet assigned)."""
    sec = split_sections(text)
    missing = [s for s in ("uname", "cpuinfo", "meminfo", "mounts") if not sec.get(s, "").strip()]
    if missing:
        raise DiscoveryError(f"node {node}: discovery output lacks {', '.join(missing)}")
    lsblk_text = sec.get("lsblk", "").strip()
    try:
        devices = parse_lsblk(lsblk_text) if lsblk_text else []
    except DiscoveryError:
        devices = []
    if not devices:
        devices = parse_sysblock(sec.get("sysblock", ""), sec.get("slaves", ""))
    mounts = parse_mounts(sec["mounts"])
    for dev in devices:
        dev.mountpoints = list(dict.fromkeys([*dev.mountpoints, *mounts.get(dev.name, [])]))
    # Unused, empty devices (unbound loop and zram devices) are noise in every table.
    devices = [d for d in devices if d.size > 0]
    uname = [*sec["uname"].splitlines(), "", "", ""]
    cpu = parse_cpuinfo(sec["cpuinfo"])
    mem = parse_meminfo(sec["meminfo"])
    return NodeInfo(
        node=node,
        roles=list(roles),
        hostname=uname[0].strip(),
        kernel=uname[1].strip(),
        arch=uname[2].strip(),
        os=parse_os_release(sec.get("os-release", "")),
        cpu_model=cpu.model,
        cpus=cpu.count,
        sockets=cpu.sockets,
        physical_cores=cpu.physical_cores,
        memory=mem.get("MemTotal", 0),
        swap=mem.get("SwapTotal", 0),
        devices=devices,
        nics=parse_net(sec.get("net", ""), sec.get("netdev", "")),
    )


# --- device roles --------------------------------------------------------------------


def os_disks(devices: list[BlockDevice]) -> set[str]:
    """Devices under the one mounted at `/`: the disk, its partitions and stacked devices."""
    by_name = {d.name: d for d in devices}
    found: set[str] = set()
    for dev in devices:
        if "/" in dev.mountpoints:
            cur: BlockDevice | None = dev
            while cur is not None and cur.name not in found:
                found.add(cur.name)
                cur = by_name.get(cur.parent) if cur.parent else None
    # Partitions of the OS disk belong to it too (swap, /boot).
    changed = True
    while changed:
        changed = False
        for dev in devices:
            if dev.parent in found and dev.name not in found and dev.type == "part":
                found.add(dev.name)
                changed = True
    return found


def assign_device_roles(
    info: NodeInfo, node: Node, extra: Mapping[str, str] | None = None
) -> NodeInfo:
    """Give every device its role: extra facts > config patterns > discovery > defaults.

    `extra` is the hook for facts only the node's software knows (Ceph OSD data/DB/WAL
    devices); a partition without a role of its own inherits its disk's.
    """
    extra = extra or {}
    os_names = os_disks(info.devices)
    by_name = {d.name: d for d in info.devices}

    def disk_role(dev: BlockDevice) -> str:
        role = extra.get(dev.name) or node.device_role(dev.name)
        if role:
            return role
        if dev.name in os_names:
            return OS_DISK_ROLE
        parent = by_name.get(dev.parent) if dev.parent else None
        return disk_role(parent) if parent is not None else DEFAULT_DISK_ROLE

    for dev in info.devices:
        dev.role = disk_role(dev)
    for nic in info.nics:
        default = LOOPBACK_ROLE if nic.name == "lo" else DEFAULT_NIC_ROLE
        nic.role = extra.get(nic.name) or node.device_role(nic.name) or default
    return info


DeviceRoleProvider = Callable[[NodeConnection, NodeInfo], Awaitable[Mapping[str, str]]]
_PROVIDERS: dict[str, list[DeviceRoleProvider]] = {}


def register_device_role_provider(node_role: str, provider: DeviceRoleProvider) -> None:
    """Let another package add device facts for nodes of `node_role` (e.g. Ceph OSDs)."""
    _PROVIDERS.setdefault(node_role, []).append(provider)


async def discover(conn: NodeConnection, *, timeout: float = 30.0) -> NodeInfo:
    """Gather a node's facts in one command and assign its device roles."""
    node = conn.node
    res = await conn.run(DISCOVERY_SCRIPT, timeout=timeout)
    info = parse_discovery(res.out, node.name, node.roles)
    extra: dict[str, str] = {}
    for role in node.roles:
        for provider in _PROVIDERS.get(role, []):
            extra.update(await provider(conn, info))
    return assign_device_roles(info, node, extra)


# --- the `collector nodes` table ---------------------------------------------------------


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def inventory_table(infos: Iterable[NodeInfo], errors: Mapping[str, str] | None = None) -> Table:
    """Node, roles, devices with roles, NICs, cores, memory; unreachable nodes show their error."""
    table = Table(title="Inventory", show_lines=True)
    for col in ("node", "roles", "devices", "NICs", "cores", "memory"):
        table.add_column(col, justify="right" if col in ("cores", "memory") else "left")
    for info in infos:
        devices = "\n".join(
            f"{d.name} {d.role} {_size(d.size)}"
            + (" hdd" if d.rotational else "")
            + (f" {','.join(d.mountpoints)}" if d.mountpoints else "")
            for d in info.devices
        )
        nics = "\n".join(
            f"{n.name} {n.role} " + (f"{n.speed} Mbit/s" if n.speed >= 0 else "speed ?")
            for n in info.nics
        )
        table.add_row(
            info.node,
            ", ".join(info.roles),
            devices,
            nics,
            str(info.cpus),
            _size(info.memory),
        )
    for node, message in (errors or {}).items():
        table.add_row(node, "", f"[red]{message}[/red]", "", "", "")
    return table

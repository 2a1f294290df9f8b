"""Node discovery: parsers on captured output, role assignment, and real nodes against /proc and /sys.

The sshd nodes are this machine, so every discovered fact is checked against the kernel's
own files read here directly (and lsblk against /sys/block within one capture).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from collector import discovery as d
from collector import schema
from collector.influx import InfluxClient
from collector.inventory import Node, inventory_from_dict
from collector.lineproto import encode_points
from collector.ssh import connect
from collector.writer import InfluxWriter
from tests.fixtures.sshd import SshdCluster

DATA = Path(__file__).parents[1] / "data" / "discovery"
CAPTURES = sorted(DATA.glob("*.txt"))


def capture(name: str) -> str:
    return (DATA / name).read_text()


def section(text: str, name: str) -> str:
    return d.split_sections(text)[name]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_lsblk_and_sys_block_agree_on_every_capture(path: Path) -> None:
    sec = d.split_sections(path.read_text())
    from_lsblk = {x.name: x for x in d.parse_lsblk(sec["lsblk"])}
    from_sys = {x.name: x for x in d.parse_sysblock(sec["sysblock"], sec["slaves"])}
    assert from_lsblk, "capture has no lsblk devices"
    for name, dev in from_lsblk.items():
        other = from_sys[name]
        assert (dev.size, dev.rotational, dev.scheduler) == (
            other.size,
            other.rotational,
            other.scheduler,
        )


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_parse_discovery_matches_the_raw_sections(path: Path) -> None:
    text = path.read_text()
    sec = d.split_sections(text)
    info = d.parse_discovery(text, "n1", ["testnode"])
    assert info.cpus == sum(line.startswith("processor") for line in sec["cpuinfo"].splitlines())
    mem_kb = next(ln for ln in sec["meminfo"].splitlines() if ln.startswith("MemTotal:"))
    assert info.memory == int(mem_kb.split()[1]) * 1024
    assert [info.hostname, info.kernel, info.arch] == sec["uname"].splitlines()
    assert info.os in sec["os-release"]
    # Empty (unbound) devices are left out; every non-empty /sys/block device is present.
    sys_sizes = {x.name: x.size for x in d.parse_sysblock(sec["sysblock"])}
    assert {x.name for x in info.devices} == {n for n, s in sys_sizes.items() if s > 0}
    assert {n.name for n in info.nics} == {ln.split("/")[4] for ln in sec["net"].splitlines()}


def test_mount_points_with_spaces_and_the_os_disk() -> None:
    info = d.parse_discovery(capture("debian12_loop_mounted.txt"), "n1", ["ceph-osd"])
    devs = {x.name: x for x in info.devices}
    assert devs["loop0"].mountpoints == ["/tmp/wally mnt"]
    assert devs["loop0"].type == "loop"
    assert d.parse_mounts(section(capture("debian12_loop_mounted.txt"), "mounts"))["loop0"] == [
        "/tmp/wally mnt"
    ]
    assert d.os_disks(info.devices) == {"vda"}


def test_sys_block_fallback_when_lsblk_is_missing() -> None:
    text = capture("debian12_vm.txt")
    start = text.index("@@wally:lsblk")
    end = text.index("@@wally:sysblock")
    without = text[:start] + "@@wally:lsblk\n" + text[end:]
    info = d.parse_discovery(without, "n1", ["testnode"])
    full = d.parse_discovery(text, "n1", ["testnode"])
    assert [(x.name, x.size, x.mountpoints) for x in info.devices] == [
        (x.name, x.size, x.mountpoints) for x in full.devices
    ]


def test_nic_speed_unknown_is_minus_one() -> None:
    nics = {n.name: n for n in d.parse_net(section(capture("debian12_vm.txt"), "net"))}
    assert nics["lo"].speed == -1  # the kernel refuses to read lo's speed (EINVAL)
    assert nics["eth0"].mtu and nics["eth0"].address
    parsed = d.parse_net("/sys/class/net/eth1/speed:10000\n/sys/class/net/eth1/mtu:9000\n")
    assert (parsed[0].speed, parsed[0].mtu) == (10000, 9000)


def test_discovery_output_without_core_sections_is_an_error() -> None:
    with pytest.raises(d.DiscoveryError, match="node n9: discovery output lacks uname"):
        d.parse_discovery("@@wally:cpuinfo\nprocessor : 0\n", "n9", [])


# --- device roles (pure logic on constructed device trees) ----------------------------


def tree() -> list[d.BlockDevice]:
    return [
        d.BlockDevice("sda", "disk", 10),
        d.BlockDevice("sda1", "part", 1, mountpoints=["/boot"], parent="sda"),
        d.BlockDevice("sda2", "part", 9, parent="sda"),
        d.BlockDevice("dm-0", "lvm", 9, mountpoints=["/"], parent="sda2"),
        d.BlockDevice("sdb", "disk", 10),
        d.BlockDevice("sdb1", "part", 10, parent="sdb"),
        d.BlockDevice("sdc", "disk", 10),
        d.BlockDevice("nvme0n1", "disk", 10),
    ]


def test_os_disk_follows_partitions_and_stacked_devices() -> None:
    assert d.os_disks(tree()) == {"sda", "sda1", "sda2", "dm-0"}


def test_role_precedence_extra_then_config_then_discovery() -> None:
    node = inventory_from_dict(
        {
            "nodes": [{"uri": "h", "roles": ["ceph-osd"], "device_roles": {"eth1": "cluster-net"}}],
            "device_roles": {"ceph-osd": {"sd[b-z]": "osd-data"}},
        }
    ).nodes[0]
    info = d.NodeInfo("h", ["ceph-osd"], devices=tree(), nics=[d.Nic("lo"), d.Nic("eth1")])
    d.assign_device_roles(info, node, extra={"nvme0n1": "osd-db", "sdc": "osd-wal"})
    assert info.device_roles() == {
        "sda": "os",
        "sda1": "os",
        "sda2": "os",
        "dm-0": "os",
        "sdb": "osd-data",
        "sdb1": "osd-data",
        "sdc": "osd-wal",
        "nvme0n1": "osd-db",
        "lo": "loopback",
        "eth1": "cluster-net",
    }


def test_points_have_schema_types_and_one_record_per_role() -> None:
    info = d.parse_discovery(capture("debian12_loop_mounted.txt"), "n1", ["ceph-osd", "testnode"])
    d.assign_device_roles(info, Node("n1", ("ceph-osd", "testnode")))
    points = info.points(1_700_000_000_000_000_000)
    encode_points(points)  # validates names, tags and field types against the schema
    nodes = [p for p in points if p.measurement == schema.WALLY_NODE.name]
    assert [p.tags["role"] for p in nodes] == ["ceph-osd", "testnode"]
    assert nodes[0].fields["roles"] == "ceph-osd,testnode"
    per_role = len(info.devices) + len(info.nics)
    assert len(points) == 2 * (1 + per_role)


def test_inventory_table_lists_devices_roles_and_errors() -> None:
    info = d.parse_discovery(capture("debian12_vm.txt"), "n1", ["testnode", "compute"])
    d.assign_device_roles(info, Node("n1", ("testnode", "compute")))
    console = Console(width=200, record=True)
    console.print(d.inventory_table([info], errors={"n2": "node n2: cannot reach"}))
    text = console.export_text()
    assert "testnode, compute" in text
    assert "vda os 256.0 GiB hdd /" in text
    assert "lo loopback speed ?" in text
    assert f"{info.memory / 2**30:.1f} GiB" in text
    assert "node n2: cannot reach" in text


# --- real nodes --------------------------------------------------------------------------


def root_device() -> str:
    """The block device holding / per the kernel: /sys/dev/block/MAJ:MIN."""
    st = os.stat("/")
    link = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
    return link.name


def meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_discover_real_node_against_proc_and_sys(sshd_nodes: SshdCluster, kind: str) -> None:
    cfg = sshd_nodes.lab_config(roles=[["ceph-osd", "testnode"]])
    cfg["nodes"].append({"uri": "local", "roles": ["ceph-osd", "testnode"]})
    node = inventory_from_dict(cfg).nodes[-1 if kind == "local" else 0]

    async def main() -> d.NodeInfo:
        async with await connect(node) as conn:
            return await d.discover(conn)

    info = asyncio.run(main())
    assert info.node == node.name and info.roles == ["ceph-osd", "testnode"]
    assert info.cpus == os.cpu_count()
    assert info.memory == meminfo_total()
    assert info.kernel == os.uname().release
    assert info.hostname == os.uname().nodename
    sys_block = {p.name for p in Path("/sys/block").iterdir() if int((p / "size").read_text()) > 0}
    assert {x.name for x in info.devices} >= sys_block
    roles = info.device_roles()
    assert roles[root_device()] == "os"
    assert {n.name for n in info.nics} == {p.name for p in Path("/sys/class/net").iterdir()}
    for nic in info.nics:
        try:
            speed = int(Path(f"/sys/class/net/{nic.name}/speed").read_text())
        except OSError:
            speed = -1
        assert nic.speed == speed


def test_several_roles_find_the_node_in_influxdb(
    sshd_nodes: SshdCluster, influx: InfluxClient
) -> None:
    cfg = sshd_nodes.lab_config(roles=[["ceph-osd", "rabbitmq"], ["testnode"]])
    inv = inventory_from_dict(cfg)

    async def main() -> list[d.NodeInfo]:
        infos = []
        for node in inv.nodes[:2]:
            async with await connect(node) as conn:
                infos.append(await d.discover(conn))
        return infos

    infos = asyncio.run(main())
    now = time.time_ns()
    with InfluxWriter(influx) as writer:
        for info in infos:
            writer.write(info.points(now))
    for role in ("ceph-osd", "rabbitmq", "testnode"):
        expected = sorted(n.name for n in inv.nodes_with_role(role) if n.name in ("node0", "node1"))
        assert influx.tag_values(schema.WALLY_NODE.name, "node", {"role": role}) == expected
        found = influx.tag_values(schema.WALLY_DEVICE.name, "node", {"role": role})
        assert found == expected

"""Ceph-aware inventory: what the cluster itself says about its mons, OSDs, hosts and pools.

Run from a root node (one with the `ceph` CLI and an admin key): the mons and the hosts
they run on, every OSD with its host, objectstore and data/DB/WAL devices (from
`ceph osd metadata`), the pools with size and pg_num, and the non-default settings of one
OSD (`ceph config show`; the seed: ask the first OSD once, at start). OSD hosts get the
`ceph-osd` role and their OSD devices `osd-data`/`osd-db`/`osd-wal` device roles, through
the device-role hook of `collector.discovery`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from collector.discovery import NodeInfo, register_device_role_provider
from collector.ssh import CommandError, NodeConnection, to_shell

log = logging.getLogger(__name__)

OSD_ROLE = "ceph-osd"
MON_ROLE = "ceph-mon"
DATA_ROLE, DB_ROLE, WAL_ROLE = "osd-data", "osd-db", "osd-wal"
_MARK = "@@wally-ceph@@ "
# node name -> extra `ceph` CLI arguments for discovery there (e.g. --conf PATH), from the
# lab config's `ceph:` section (set by `collector.pollers.ceph_pollers`).
CLI_ARGS: dict[str, list[str]] = {}
# section name -> `ceph` subcommand; printed one after another in one shell command
SECTIONS = {
    "mon_metadata": ("mon", "metadata"),
    "osd_metadata": ("osd", "metadata"),
    "osd_dump": ("osd", "dump"),
}


class CephDiscoveryError(ValueError):
    """The cluster's answers could not be used; the message names the command and field."""


@dataclass
class CephMon:
    name: str
    host: str
    addrs: str


@dataclass
class CephOsd:
    id: int
    host: str
    up: bool
    in_: bool
    objectstore: str
    device_class: str
    # device role (osd-data / osd-db / osd-wal) -> kernel device names
    devices: dict[str, list[str]]
    data_path: str
    rotational: bool | None


@dataclass
class CephPool:
    name: str
    id: int
    size: int
    min_size: int
    pg_num: int
    applications: list[str]


@dataclass
class CephCluster:
    fsid: str
    mons: list[CephMon]
    osds: list[CephOsd]
    pools: list[CephPool]
    # non-default settings of the first OSD: name -> value (strings, as Ceph prints them)
    osd_settings: dict[str, str] = field(default_factory=dict)

    @property
    def hosts(self) -> dict[str, list[str]]:
        """hostname -> Ceph roles running there (ceph-mon, ceph-osd)."""
        out: dict[str, list[str]] = {}
        for mon in self.mons:
            out.setdefault(mon.host, [])
            if MON_ROLE not in out[mon.host]:
                out[mon.host].append(MON_ROLE)
        for osd in self.osds:
            out.setdefault(osd.host, [])
            if OSD_ROLE not in out[osd.host]:
                out[osd.host].append(OSD_ROLE)
        return out

    def device_roles(self, hostname: str) -> dict[str, str]:
        """Kernel device -> OSD device role for one host (data wins if shared)."""
        out: dict[str, str] = {}
        for osd in self.osds:
            if osd.host != hostname:
                continue
            for role in (WAL_ROLE, DB_ROLE, DATA_ROLE):
                for dev in osd.devices.get(role, []):
                    out[dev] = role
        return out

    def summary(self) -> dict[str, Any]:
        """What a storage test report needs about the cluster, JSON-ready."""
        return {
            "fsid": self.fsid,
            "mons": len(self.mons),
            "osds": len(self.osds),
            "osds_up": sum(o.up for o in self.osds),
            "objectstores": sorted({o.objectstore for o in self.osds}),
            "pools": {p.name: {"size": p.size, "pg_num": p.pg_num} for p in self.pools},
            "osd_settings": self.osd_settings,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _load(sections: Mapping[str, str], name: str) -> Any:
    text = sections.get(name)
    if text is None:
        raise CephDiscoveryError(f"ceph {' '.join(SECTIONS[name])}: no output")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CephDiscoveryError(f"ceph {' '.join(SECTIONS[name])}: not JSON ({exc})") from None


def _devices(meta: Mapping[str, Any], key: str) -> list[str]:
    return [d for d in str(meta.get(key, "")).split(",") if d]


def _osd_devices(meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """Data/DB/WAL devices from `ceph osd metadata` (bluestore; filestore: data/journal)."""
    if meta.get("osd_objectstore") == "filestore":
        return {
            DATA_ROLE: _devices(meta, "backend_filestore_partition_path")
            or _devices(meta, "devices"),
            WAL_ROLE: _devices(meta, "journal_dev") if meta.get("journal_dev") else [],
        }
    out = {DATA_ROLE: _devices(meta, "bluestore_bdev_devices") or _devices(meta, "devices")}
    if meta.get("bluefs_dedicated_db") == "1":
        out[DB_ROLE] = _devices(meta, "bluefs_db_devices")
    if meta.get("bluefs_dedicated_wal") == "1":
        out[WAL_ROLE] = _devices(meta, "bluefs_wal_devices")
    return out


def parse_cluster(sections: Mapping[str, str], osd_config: str | None = None) -> CephCluster:
    """Build the cluster picture from the JSON of the SECTIONS commands (pure)."""
    mon_meta = _load(sections, "mon_metadata")
    osd_meta = _load(sections, "osd_metadata")
    osd_dump = _load(sections, "osd_dump")
    try:
        mons = [CephMon(m["name"], m.get("hostname", ""), m.get("addrs", "")) for m in mon_meta]
        states = {o["osd"]: o for o in osd_dump["osds"]}
        osds = []
        for meta in sorted(osd_meta, key=lambda m: m["id"]):
            st = states.get(meta["id"], {})
            rot = meta.get("rotational")
            osds.append(
                CephOsd(
                    id=int(meta["id"]),
                    host=meta.get("hostname", ""),
                    up=bool(st.get("up")),
                    in_=bool(st.get("in")),
                    objectstore=meta.get("osd_objectstore", ""),
                    device_class=meta.get("default_device_class", ""),
                    devices=_osd_devices(meta),
                    data_path=meta.get("osd_data", ""),
                    rotational=None if rot is None else rot == "1",
                )
            )
        pools = [
            CephPool(
                name=p["pool_name"],
                id=int(p["pool"]),
                size=int(p["size"]),
                min_size=int(p["min_size"]),
                pg_num=int(p["pg_num"]),
                applications=sorted(p.get("application_metadata", {})),
            )
            for p in osd_dump["pools"]
        ]
        fsid = osd_dump["fsid"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CephDiscoveryError(
            f"ceph mon/osd metadata or osd dump: missing field {exc}"
        ) from None
    settings: dict[str, str] = {}
    if osd_config is not None:
        try:
            settings = {s["name"]: str(s["value"]) for s in json.loads(osd_config)}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CephDiscoveryError(f"ceph config show osd.N: unexpected output ({exc})") from None
    return CephCluster(fsid, mons, osds, pools, settings)


def split_sections(text: str) -> dict[str, str]:
    """Cut the combined command's output at the marker lines."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = out.setdefault(line[len(_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def discovery_command(ceph_args: Iterable[str] = ()) -> str:
    """One shell command printing every SECTIONS output after a marker line."""
    parts = []
    for name, sub in SECTIONS.items():
        parts.append(f"echo; echo '{_MARK}{name}'")
        parts.append(to_shell(["ceph", *ceph_args, "-f", "json", *sub]))
    return " && ".join(parts)


async def discover_cluster(
    conn: NodeConnection, ceph_args: Iterable[str] = (), timeout: float = 60.0
) -> CephCluster:
    """Ask the cluster about itself from a root node (`ceph_args`, e.g. --conf PATH)."""
    args = list(ceph_args)
    res = await conn.run(discovery_command(args), timeout=timeout)
    if res.rc != 0:
        raise CephDiscoveryError(
            f"{conn.node.name}: ceph discovery exited {res.rc}: {res.err.strip()[-500:]}"
        )
    cluster = parse_cluster(split_sections(res.out))
    if cluster.osds:
        first = f"osd.{cluster.osds[0].id}"
        cfg = await conn.run(
            ["ceph", *args, "-f", "json", "config", "show", first], timeout=timeout
        )
        if cfg.rc == 0:
            cluster = parse_cluster(split_sections(res.out), cfg.out)
    return cluster


async def ceph_node_facts(conn: NodeConnection, info: NodeInfo) -> dict[str, str]:
    """Discovery hook for Ceph nodes: this host's OSD data/DB/WAL devices, and the cluster
    summary (OSD count, objectstores, pool size/pg_num, OSD settings) in `info.facts`.

    Uses the node's own `ceph` CLI (admin key on Ceph hosts is the common layout) with the
    node's CLI_ARGS. A node where the CLI fails is still discovered: the error is kept in
    its facts and logged, and its devices keep their configured roles.
    """
    if "ceph" in info.facts:  # a node with both roles is asked once
        return {}
    try:
        cluster = await discover_cluster(conn, CLI_ARGS.get(conn.node.name, ()))
    except (CephDiscoveryError, CommandError) as exc:
        log.warning("%s: Ceph discovery failed: %s", conn.node.name, exc)
        info.facts["ceph"] = {"error": str(exc)}
        return {}
    host_osds = [o.id for o in cluster.osds if o.host == info.hostname]
    info.facts["ceph"] = {**cluster.summary(), "host_osds": host_osds}
    return cluster.device_roles(info.hostname)


for _role in (OSD_ROLE, MON_ROLE):
    register_device_role_provider(_role, ceph_node_facts)

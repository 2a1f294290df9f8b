"""RBD targets on a node: how fio and the `rbd` CLI reach the cluster, the RBD pre-flight,
images a run creates and removes, and the OSD count the `ceph` profile sweeps QD by.

fio's rbd engine is a librados client with no option for the cluster's config file: it
reads `CEPH_CONF` from its environment (and the keyring the conf names). The conf comes
from the lab config's `ceph:` section (`collector.pollers.CephSection`, shared with the
Ceph sensors: `conf`, per node `nodes: {NAME: {conf: ...}}`); without one, librados and
the CLI use their default /etc/ceph/ceph.conf. A krbd-mapped device or a file on a
Ceph-backed filesystem is a plain block/file target and never comes here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collector import ceph as ceph_discovery
from collector.ceph import CephDiscoveryError
from collector.inventory import Inventory
from collector.pollers import CephSection
from collector.ssh import NodeConnection, SshError, connect, to_shell
from loadgen.plan import Iteration, Target, format_size, load_plan, load_profile

RBD_TIMEOUT_S = 60.0
# `rbd info` exits with ENOENT's number when the image (or its pool) is missing.
_ENOENT_RC = 2


class RbdError(RuntimeError):
    """An `rbd`/`ceph` command failed on a node; the message names node, command and why."""


@dataclass(frozen=True)
class CephClient:
    """How one node reaches the cluster: its conf path on that node (None: the default)."""

    conf: str | None = None

    def cli_args(self) -> list[str]:
        """Arguments for the `rbd` and `ceph` CLIs."""
        return ["--conf", self.conf] if self.conf else []

    def env(self) -> dict[str, str]:
        """Environment for fio's rbd engine (librados reads CEPH_CONF)."""
        return {"CEPH_CONF": self.conf} if self.conf else {}


def ceph_clients(inventory: Inventory) -> dict[str, CephClient]:
    """Each node's Ceph client settings from the `ceph:` section (a node's own conf wins)."""
    cfg = inventory.section("ceph", CephSection) or CephSection()
    out = {}
    for node in inventory:
        own = cfg.nodes.get(node.name)
        out[node.name] = CephClient((own and own.conf) or cfg.conf)
    return out


def image_spec(target: Target) -> str:
    """`POOL/IMAGE`, how the `rbd` CLI names an image (and how run.json records it)."""
    return f"{target.pool}/{target.image}"


async def _rbd(conn: NodeConnection, client: CephClient, *args: str):
    return await conn.run(["rbd", *client.cli_args(), *args], timeout=RBD_TIMEOUT_S)


async def image_info(conn: NodeConnection, client: CephClient, spec: str) -> dict | None:
    """`rbd info` of an image as JSON, or None when it does not exist."""
    res = await _rbd(conn, client, "info", "--format", "json", spec)
    if res.rc == 0:
        return json.loads(res.out)
    if res.rc == _ENOENT_RC and "No such file or directory" in res.err:
        return None
    raise RbdError(
        f"{conn.node.name}: `rbd info {spec}` exited with {res.rc}: {res.err.strip()[-300:]}"
    )


async def preflight(
    conn: NodeConnection, client: CephClient, iterations: Sequence[Iteration]
) -> list[str]:
    """Why this node cannot run its RBD iterations: fio without the rbd engine, a cluster it
    cannot reach, an image that is missing (and not to be created) or smaller than `size`."""
    node = conn.node.name
    rbd_its = [it for it in iterations if it.target.kind == "rbd"]
    if not rbd_its:
        return []
    problems = []
    res = await conn.run("fio --enghelp=rbd", timeout=RBD_TIMEOUT_S)
    if res.rc != 0:
        problems.append(
            "fio has no rbd engine (`fio --enghelp=rbd` exited with "
            f"{res.rc}): install a fio built with librbd (Debian's fio is)"
        )
    checked: set[str] = set()
    for it in rbd_its:
        target = it.target.for_node(node)
        spec = image_spec(target)
        if spec in checked:
            continue
        checked.add(spec)
        try:
            info = await image_info(conn, client, spec)
        except RbdError as exc:
            problems.append(f"{it.name}: cannot check RBD image {spec}: {exc}")
            continue
        if info is None and not it.create_image:
            problems.append(
                f"{it.name}: RBD image {spec} does not exist (conf {client.conf or 'default'}); "
                f"create it (rbd create --size 10G {spec}) or set create_image: true and "
                "size: in the suite"
            )
        elif info is None:
            pool = await _rbd(conn, client, "ls", "--format", "json", target.pool)
            if pool.rc != 0:
                problems.append(
                    f"{it.name}: cannot create RBD image {spec}: pool {target.pool!r} is not "
                    f"usable (`rbd ls {target.pool}`: {pool.err.strip()[-200:]})"
                )
        elif it.size and it.size > int(info["size"]):
            problems.append(
                f"{it.name}: RBD image {spec} has {format_size(int(info['size']))}, "
                f"smaller than the suite's size {format_size(it.size)}"
            )
    return problems


async def create_image(conn: NodeConnection, client: CephClient, spec: str, size: int) -> None:
    res = await _rbd(conn, client, "create", "--size", f"{size // (1 << 20)}M", spec)
    if res.rc != 0:
        raise RbdError(
            f"{conn.node.name}: `rbd create {spec}` exited with {res.rc}: {res.err.strip()[-300:]}"
        )


async def remove_images(
    conn: NodeConnection, client: CephClient, specs: Iterable[str]
) -> dict[str, str]:
    """`rbd rm` each image; the ones that could not be removed, with why (kept for cleanup).

    An image whose fio was killed hard keeps a watcher for ~30 s and refuses removal;
    `loadgen cleanup` retries later.
    """
    failed = {}
    for spec in specs:
        res = await _rbd(conn, client, "rm", "--no-progress", spec)
        gone = res.rc == 0 or (res.rc == _ENOENT_RC and "No such file" in res.err)
        if not gone:
            failed[spec] = res.err.strip()[-300:] or f"rbd rm exited with {res.rc}"
    return failed


def wants_osd_count(inventory: Inventory) -> bool:
    """Does a suite of the plan leave its QD sweep to a profile that takes it from the OSD
    count (`qd_from_osd_count: true`, the built-in `ceph`)?"""
    if (inventory.config.model_extra or {}).get("plan") is None:
        return False  # no fio suites (an RPC-only config)
    section, _, base_dir = load_plan(inventory)
    return any(
        s.iodepth is None and s.profile and load_profile(s.profile, base_dir).qd_from_osd_count
        for s in section.suites
    )


def root_node(inventory: Inventory) -> str | None:
    """The node whose `ceph` CLI answers for the cluster: `ceph.root_node`, else a ceph-mon."""
    cfg = inventory.section("ceph", CephSection) or CephSection()
    if cfg.root_node is not None:
        try:
            return inventory.node(cfg.root_node).name
        except KeyError as exc:
            raise inventory.error(("ceph", "root_node"), str(exc.args[0])) from None
    mons = inventory.nodes_with_role(ceph_discovery.MON_ROLE)
    return mons[0].name if mons else None


async def count_osds(inventory: Inventory, root: str) -> int:
    """OSDs up and in, as discovered from `root` (what a client's I/O spreads over)."""
    client = ceph_clients(inventory)[root]
    try:
        conn = await connect(inventory.node(root))
    except SshError as exc:
        raise RbdError(f"cannot count OSDs: {exc}") from None
    try:
        cluster = await ceph_discovery.discover_cluster(conn, client.cli_args())
    except (CephDiscoveryError, SshError) as exc:
        raise RbdError(f"cannot count OSDs on {root}: {exc}") from None
    finally:
        await conn.close()
    n = sum(1 for o in cluster.osds if o.up and o.in_)
    if n == 0:
        raise RbdError(
            f"cannot size the QD sweep: the cluster seen from {root} has no OSD up and in "
            f"(`{to_shell(['ceph', *client.cli_args(), 'osd', 'stat'])}` shows them)"
        )
    return n


def osd_count_for_plan(inventory: Inventory) -> tuple[int | None, str]:
    """The OSD count to compile the plan with (None: the profiles' own sweeps) and a note
    for the console saying where it came from."""
    if not wants_osd_count(inventory):
        return None, ""
    root = root_node(inventory)
    if root is None:
        return None, (
            "QD sweep: the profiles' own (no Ceph root node to count OSDs on: set "
            "ceph.root_node or give a node the ceph-mon role)"
        )
    n = asyncio.run(count_osds(inventory, root))
    return n, f"QD sweep from {n} OSDs (counted on {root})"

"""All dashboards at once, with defaults taken from the inventory when there is one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.ceph import OSD_ROLE
from collector.inventory import Inventory
from dashboards import ceph, cluster, node, rpc, storage


@dataclass(frozen=True)
class Defaults:
    """Which roles the dashboards select when opened; None = "All"."""

    storage_role: str | None = None
    rabbitmq_role: str | None = rpc.RABBITMQ_ROLE


def defaults_from(inventory: Inventory | None) -> Defaults:
    if inventory is None:
        return Defaults()
    roles = inventory.roles()
    return Defaults(
        storage_role=OSD_ROLE if OSD_ROLE in roles else None,
        rabbitmq_role=rpc.RABBITMQ_ROLE if rpc.RABBITMQ_ROLE in roles else None,
    )


def all_dashboards(defaults: Defaults | None = None) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    d = defaults or Defaults()
    docs = [
        cluster.build(d.storage_role),
        storage.build(d.storage_role),
        ceph.build(),
        rpc.build(d.rabbitmq_role),
        node.build(),
    ]
    return {f"{doc['uid']}.json": doc for doc in docs}

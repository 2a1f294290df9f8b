"""RabbitMQ management API -> `rabbitmq_overview`, `rabbitmq_node`, `rabbitmq_queue`.

Field names and types follow Telegraf's inputs.rabbitmq (missing JSON values become 0,
booleans become 0/1 integers, `idle_since` stays a string), so points from this poller and
from a Telegraf agent land in the same series. Telegraf's `node` tag (the Erlang node)
is `rabbit_node` here because `node` is the host the broker runs on. The parsers are pure
functions of the API's JSON; `poll` does the HTTP and fails clearly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests

from collector import schema
from collector.lineproto import Point

TIMEOUT_S = 4.0  # Telegraf's default client timeout


class RabbitMQError(RuntimeError):
    """The management API could not be used; the message says why and where."""


def _int(d: Mapping[str, Any] | None, key: str) -> int:
    v = (d or {}).get(key)
    if isinstance(v, bool):
        return int(v)
    return int(v) if isinstance(v, int | float) else 0


def _float(d: Mapping[str, Any] | None, key: str) -> float:
    v = (d or {}).get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _rate(d: Mapping[str, Any] | None, key: str) -> float:
    return _float((d or {}).get(f"{key}_details"), "rate")


def _need(doc: Any, kind: type, what: str) -> Any:
    if not isinstance(doc, kind):
        raise ValueError(f"{what}: expected a JSON {kind.__name__}, got {type(doc).__name__}")
    return doc


def parse_overview(
    doc: Mapping[str, Any], url: str, tags: Mapping[str, str], time_ns: int
) -> Point:
    """/api/overview -> one `rabbitmq_overview` point."""
    _need(doc, dict, "/api/overview")
    for key in ("message_stats", "object_totals", "queue_totals", "listeners"):
        if key not in doc:
            raise ValueError(
                f"/api/overview: no {key!r} (not a management API answer, or no rights?)"
            )
    ms, ot, qt = doc["message_stats"], doc["object_totals"], doc["queue_totals"]
    listeners = [item.get("protocol") for item in doc["listeners"]]
    fields: dict[str, Any] = {
        "messages": _int(qt, "messages"),
        "messages_ready": _int(qt, "messages_ready"),
        "messages_unacked": _int(qt, "messages_unacknowledged"),
        "channels": _int(ot, "channels"),
        "connections": _int(ot, "connections"),
        "consumers": _int(ot, "consumers"),
        "exchanges": _int(ot, "exchanges"),
        "queues": _int(ot, "queues"),
        "messages_acked": _int(ms, "ack"),
        "messages_delivered": _int(ms, "deliver"),
        "messages_delivered_get": _int(ms, "deliver_get"),
        "messages_published": _int(ms, "publish"),
        "clustering_listeners": listeners.count("clustering"),
        "amqp_listeners": listeners.count("amqp"),
        "return_unroutable": _int(ms, "return_unroutable"),
        "return_unroutable_rate": _rate(ms, "return_unroutable"),
    }
    return Point(schema.RABBITMQ_OVERVIEW.name, {**tags, "url": url}, fields, time_ns)


_NODE_INTS = (
    "disk_free",
    "disk_free_limit",
    "fd_total",
    "fd_used",
    "mem_limit",
    "mem_used",
    "proc_total",
    "proc_used",
    "run_queue",
    "sockets_total",
    "sockets_used",
    "uptime",
)
_NODE_COUNTERS = (
    "mnesia_disk_tx_count",
    "mnesia_ram_tx_count",
    "gc_num",
    "gc_bytes_reclaimed",
    "io_read_bytes",
    "io_write_bytes",
)


def memory_total(memory: Mapping[str, Any]) -> int:
    """`total` is a number in old brokers, a map of estimators in newer ones (Telegraf
    takes rss, then allocated, then erlang)."""
    total = memory.get("total")
    if isinstance(total, int | float):
        return int(total)
    if isinstance(total, dict):
        for estimator in ("rss", "allocated", "erlang"):
            if isinstance(total.get(estimator), int | float):
                return int(total[estimator])
    raise ValueError(f"node memory: no usable 'total' in {total!r}")


def parse_nodes(
    doc: list[Mapping[str, Any]],
    url: str,
    tags: Mapping[str, str],
    time_ns: int,
    memory: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Point]:
    """/api/nodes (+ /api/nodes/NAME/memory's `memory` per node name) -> `rabbitmq_node`."""
    _need(doc, list, "/api/nodes")
    out = []
    for node in doc:
        name = node.get("name")
        if not name:
            raise ValueError("/api/nodes: a node without 'name'")
        fields: dict[str, Any] = {k: _int(node, k) for k in _NODE_INTS}
        for alarm in ("disk_free_alarm", "mem_alarm", "running"):
            fields[alarm] = 1 if node.get(alarm) is True else 0
        for k in _NODE_COUNTERS:
            fields[k] = _int(node, k)
            fields[f"{k}_rate"] = _rate(node, k)
        for k in ("io_read_avg_time", "io_write_avg_time"):
            fields[k] = _float(node, k)
            fields[f"{k}_rate"] = _rate(node, k)
        mem = (memory or {}).get(name)
        if mem is not None:
            for kind in schema.RABBITMQ_MEMORY_KINDS:
                if kind != "total":
                    fields[f"mem_{kind}"] = _int(mem, kind)
            fields["mem_total"] = memory_total(mem)
        out.append(
            Point(
                schema.RABBITMQ_NODE.name,
                {**tags, "url": url, "rabbit_node": name},
                fields,
                time_ns,
            )
        )
    return out


def parse_queues(
    doc: list[Mapping[str, Any]], url: str, tags: Mapping[str, str], time_ns: int
) -> list[Point]:
    """/api/queues -> one `rabbitmq_queue` point per queue."""
    _need(doc, list, "/api/queues")
    out = []
    for q in doc:
        ms = q.get("message_stats") or {}
        qtags = {
            **tags,
            "url": url,
            "queue": str(q.get("name", "")),
            "vhost": str(q.get("vhost", "")),
            "rabbit_node": str(q.get("node", "")),
            "durable": "true" if q.get("durable") else "false",
            "auto_delete": "true" if q.get("auto_delete") else "false",
        }
        fields: dict[str, Any] = {
            "consumers": _int(q, "consumers"),
            "consumer_utilisation": _float(q, "consumer_utilisation"),
            "idle_since": str(q.get("idle_since") or ""),
            "slave_nodes": len(q.get("slave_nodes") or []),
            "synchronised_slave_nodes": len(q.get("synchronised_slave_nodes") or []),
            "memory": _int(q, "memory"),
            "message_bytes": _int(q, "message_bytes"),
            "message_bytes_ready": _int(q, "message_bytes_ready"),
            "message_bytes_unacked": _int(q, "message_bytes_unacknowledged"),
            "message_bytes_ram": _int(q, "message_bytes_ram"),
            "message_bytes_persist": _int(q, "message_bytes_persistent"),
            "messages": _int(q, "messages"),
            "messages_ready": _int(q, "messages_ready"),
            "messages_unack": _int(q, "messages_unacknowledged"),
        }
        for ours, theirs in (
            ("messages_ack", "ack"),
            ("messages_deliver", "deliver"),
            ("messages_deliver_get", "deliver_get"),
            ("messages_publish", "publish"),
            ("messages_redeliver", "redeliver"),
        ):
            fields[ours] = _int(ms, theirs)
            fields[f"{ours}_rate"] = _rate(ms, theirs)
        out.append(Point(schema.RABBITMQ_QUEUE.name, qtags, fields, time_ns))
    return out


def _get(session: requests.Session, api: str, path: str, timeout: float) -> Any:
    where = f"{api}{path}"
    try:
        r = session.get(where, timeout=timeout)
    except requests.RequestException as exc:
        raise RabbitMQError(f"RabbitMQ management API {where} does not answer: {exc}") from None
    if r.status_code == 401:
        raise RabbitMQError(
            f"RabbitMQ management API {where}: login failed (wrong user or password)"
        )
    if r.status_code != 200:
        raise RabbitMQError(f"RabbitMQ management API {where}: HTTP {r.status_code} {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise RabbitMQError(f"RabbitMQ management API {where}: answer is not JSON") from None


def poll(
    api: str,
    user: str,
    password: str,
    tags: Mapping[str, str],
    time_ns: int,
    timeout: float = TIMEOUT_S,
) -> list[Point]:
    """Read overview, nodes (with memory) and queues once; `api` is e.g. http://host:15672."""
    api = api.rstrip("/")
    with requests.Session() as s:
        s.auth = (user, password)
        overview = _get(s, api, "/api/overview", timeout)
        nodes = _get(s, api, "/api/nodes", timeout)
        memory = {
            n["name"]: _get(s, api, f"/api/nodes/{quote(n['name'], safe='')}/memory", timeout).get(
                "memory", {}
            )
            for n in nodes
        }
        queues = _get(s, api, "/api/queues", timeout)
    return [
        parse_overview(overview, api, tags, time_ns),
        *parse_nodes(nodes, api, tags, time_ns, memory),
        *parse_queues(queues, api, tags, time_ns),
    ]

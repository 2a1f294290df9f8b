"""RabbitMQ management API parsers on real captured JSON, and the poller on a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector import schema
from collector.lineproto import encode_point
from collector.sensors.rabbitmq import (
    RabbitMQError,
    parse_nodes,
    parse_overview,
    parse_queues,
    poll,
)
from loadgen.rpc.broker import LocalBroker

DATA = Path(__file__).resolve().parents[2] / "data" / "rabbitmq"
URL = "http://127.0.0.1:15672"
TAGS = {"node": "bus1", "role": "rabbitmq"}
T = 1_700_000_000_000_000_000

# Field names Telegraf's inputs.rabbitmq (plugins/inputs/rabbitmq/rabbitmq.go) writes.
TELEGRAF_OVERVIEW = {
    "messages", "messages_ready", "messages_unacked", "channels", "connections", "consumers",
    "exchanges", "queues", "messages_acked", "messages_delivered", "messages_delivered_get",
    "messages_published", "clustering_listeners", "amqp_listeners", "return_unroutable",
    "return_unroutable_rate",
}  # fmt: skip
TELEGRAF_QUEUE = {
    "consumers", "consumer_utilisation", "idle_since", "slave_nodes", "synchronised_slave_nodes",
    "memory", "message_bytes", "message_bytes_ready", "message_bytes_unacked", "message_bytes_ram",
    "message_bytes_persist", "messages", "messages_ready", "messages_unack", "messages_ack",
    "messages_ack_rate", "messages_deliver", "messages_deliver_rate", "messages_deliver_get",
    "messages_deliver_get_rate", "messages_publish", "messages_publish_rate", "messages_redeliver",
    "messages_redeliver_rate",
}  # fmt: skip


def load(name: str):
    return json.loads((DATA / f"{name}.json").read_text())


def test_overview_matches_api_and_telegraf_fields() -> None:
    doc = load("overview")
    p = parse_overview(doc, URL, TAGS, T)
    assert set(p.fields) == TELEGRAF_OVERVIEW == set(schema.RABBITMQ_OVERVIEW.fields)
    assert p.tags == {**TAGS, "url": URL}
    assert p.fields["messages_published"] == doc["message_stats"]["publish"] > 0
    assert p.fields["messages_delivered_get"] == doc["message_stats"]["deliver_get"]
    assert p.fields["connections"] == doc["object_totals"]["connections"]
    assert p.fields["amqp_listeners"] == 1 and p.fields["clustering_listeners"] == 1
    encode_point(p)  # types agree with the schema


def test_nodes_with_memory() -> None:
    nodes, memory = load("nodes"), load("node_memory")["memory"]
    points = parse_nodes(nodes, URL, TAGS, T, {nodes[0]["name"]: memory})
    assert len(points) == 1
    p = points[0]
    assert set(p.fields) == set(schema.RABBITMQ_NODE.fields)
    assert p.tags["rabbit_node"] == nodes[0]["name"]
    assert p.fields["mem_used"] == nodes[0]["mem_used"]
    assert p.fields["running"] == 1 and p.fields["mem_alarm"] == 0
    assert p.fields["mem_total"] == memory["total"]["rss"]
    assert p.fields["mem_binary"] == memory["binary"]
    encode_point(p)
    # without the memory breakdown the mem_* detail fields are simply absent
    assert "mem_binary" not in parse_nodes(nodes, URL, TAGS, T)[0].fields


def test_queues() -> None:
    doc = load("queues")
    points = parse_queues(doc, URL, TAGS, T)
    assert len(points) == len(doc)
    for q, p in zip(doc, points, strict=True):
        assert set(p.fields) == TELEGRAF_QUEUE == set(schema.RABBITMQ_QUEUE.fields)
        assert p.tags["queue"] == q["name"] and p.tags["durable"] in ("true", "false")
        assert p.fields["messages_publish"] == q.get("message_stats", {}).get("publish", 0)
        encode_point(p)
    assert any(p.fields["messages_publish"] > 0 for p in points)


def test_bad_documents_are_named() -> None:
    with pytest.raises(ValueError, match=r"/api/overview: no 'listeners'"):
        parse_overview({"message_stats": {}, "object_totals": {}, "queue_totals": {}}, URL, TAGS, T)
    with pytest.raises(ValueError, match=r"/api/nodes: expected a JSON list"):
        parse_nodes({"error": "x"}, URL, TAGS, T)


def test_poll_real_broker_and_clear_errors(rabbitmq: LocalBroker) -> None:
    points = poll(rabbitmq.api, rabbitmq.user, rabbitmq.password, TAGS, T)
    kinds = {p.measurement for p in points}
    assert {"rabbitmq_overview", "rabbitmq_node"} <= kinds
    node = next(p for p in points if p.measurement == "rabbitmq_node")
    assert node.tags["rabbit_node"] == rabbitmq.nodename and node.fields["mem_total"] > 0
    for p in points:
        encode_point(p)
    with pytest.raises(RabbitMQError, match="login failed"):
        poll(rabbitmq.api, rabbitmq.user, "wrong", TAGS, T)
    with pytest.raises(RabbitMQError, match="does not answer"):
        poll("http://127.0.0.1:1", "guest", "guest", TAGS, T)

"""Polled sensors in the engine: the real Ceph lab under fio, the real broker, real InfluxDB."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import amqp
import pytest

from collector import ceph, pollers
from collector.engine import Collector
from collector.inventory import InventoryError, Node, inventory_from_dict
from collector.sensors import Context
from collector.ssh import LocalConnection
from collector.writer import InfluxWriter
from loadgen import cephlab
from loadgen.rpc.broker import LocalBroker, free_port
from tests.fixtures.rabbitmq import management_get, wait_for

# The reader keeps one cheap node sensor; the pollers are what is tested here.
SENSORS = {"mem": 1, "ceph": 1, "ceph_cluster": 2, "rabbitmq": 1}


def _ceph_config(lab: cephlab.CephLab) -> dict:
    return {
        "nodes": [{"uri": "local", "roles": ["ceph-osd", "ceph-mon"]}],
        "sensors": SENSORS,
        "ceph": {"socket_dir": str(lab.run_dir), "conf": str(lab.conf)},
    }


async def _collect_during(col: Collector, writer: InfluxWriter, work) -> object:
    """Collect while `work()` runs in a thread, with a couple of polls before and after."""
    await col.prepare()
    run = asyncio.create_task(col.run())
    try:
        await asyncio.sleep(2.5)
        result = await asyncio.to_thread(work)
        await asyncio.sleep(2.5)
    finally:
        col.stop()
        await run
        writer.flush()
    return result


def _op_w(influx, where: str = "") -> dict[str, list[float]]:
    df = influx.query_df(
        "SELECT op_w FROM ceph WHERE collection = 'osd' AND type = 'osd' "
        f'{where} GROUP BY "id" ORDER BY time'
    )
    return {i: list(g["op_w"]) for i, g in df.groupby("id")} if not df.empty else {}


def test_ceph_points_follow_what_fio_wrote(ceph_lab, influx, tmp_path) -> None:
    inventory = inventory_from_dict(_ceph_config(ceph_lab), source="lab.yaml")

    async def go():
        with InfluxWriter(influx, spool_dir=tmp_path / "spool") as writer:
            col = Collector(inventory, sink=writer.write)
            fio = await _collect_during(col, writer, lambda: cephlab.fio_write(ceph_lab, 3))
        return col, fio

    col, fio = asyncio.run(go())
    st = col.status["local"]
    assert st.last_error == "", st.last_error
    # Every OSD's op_w over the window adds up to fio's write IO count (pool size 1).
    series = _op_w(influx)
    assert set(series) == {str(i) for i in ceph_lab.osd_ids}
    delta = sum(v[-1] - v[0] for v in series.values())
    assert fio["total_ios"] > 1000
    assert delta == pytest.approx(fio["total_ios"], rel=0.03)
    assert all(len(v) >= 6 for v in series.values())  # ~1 s interval over ~8 s
    # The mon's counters, the op stages of the writes, the cluster-level stats.
    assert influx.tag_values("ceph", "id", where={"type": "monitor"}) == ["a"]
    stages = influx.query_df("SELECT sum(ops) FROM ceph_op_stages WHERE op_type = 'write'")
    assert stages["sum"].iloc[0] > 0
    # (their rates are the mgr's, refreshed every few seconds: present, not compared)
    pools = influx.tag_values("ceph_pool_stats", "name")
    assert ceph_lab.pool in pools
    assert not influx.query_df("SELECT count(num_pgs) FROM ceph_pgmap").empty
    # Discovery through the Ceph hook: OSD devices and the cluster summary in the node info.
    assert st.info is not None
    roles = {d.name: d.role for d in st.info.devices}
    assert ceph.DATA_ROLE in roles.values()
    info = json.loads(influx.query_df("SELECT last(info) FROM wally_node")["last"].iloc[0])
    summary = info["facts"]["ceph"]
    assert summary["osds"] == len(ceph_lab.osd_ids) and summary["objectstores"] == ["bluestore"]
    assert summary["pools"][ceph_lab.pool]["size"] == 1
    assert summary["osd_settings"]["osd_objectstore"] == "bluestore"
    devs = influx.tag_values("wally_device", "device", where={"device_role": ceph.DATA_ROLE})
    assert devs == sorted(d for d, r in roles.items() if r == ceph.DATA_ROLE)


def test_a_killed_osd_is_reported_once_and_the_other_kept(ceph_lab, influx, tmp_path) -> None:
    inventory = inventory_from_dict(_ceph_config(ceph_lab), source="lab.yaml")
    victim, other = f"osd.{ceph_lab.osd_ids[-1]}", str(ceph_lab.osd_ids[0])
    killed_at: list[int] = []

    def kill() -> None:
        killed_at.append(time.time_ns())
        cephlab.stop_daemon(ceph_lab, victim, signal.SIGKILL)  # a crash: stale socket left

    async def go():
        with InfluxWriter(influx, spool_dir=tmp_path / "spool") as writer:
            col = Collector(inventory, sink=writer.write)
            await _collect_during(col, writer, kill)
        return col

    try:
        col = asyncio.run(go())
    finally:
        cephlab.start_daemon(ceph_lab, victim)
        cephlab.wait_healthy(ceph_lab, timeout=90)
    st = col.status["local"]
    assert victim in st.last_error and "stopped answering" in st.last_error
    events = influx.query_df("SELECT message FROM wally_event WHERE kind = 'daemon_gone'")
    assert len(events) == 1 and victim in events["message"].iloc[0]
    after = _op_w(influx, f"AND time > {killed_at[0]}")
    assert set(after) == {other} and len(after[other]) >= 2
    assert st.samples >= 4  # the node's other sensors were not disturbed


def _publish(broker: LocalBroker, queue: str, n: int) -> None:
    with amqp.Connection(
        f"127.0.0.1:{broker.amqp_port}", userid=broker.user, password=broker.password
    ) as conn:
        ch = conn.channel()
        ch.queue_declare(queue, durable=False, auto_delete=False)
        for i in range(n):
            ch.basic_publish(amqp.Message(f"m{i}"), exchange="", routing_key=queue)


def test_rabbitmq_overview_agrees_with_the_broker(
    counting_rabbitmq, influx, tmp_path, monkeypatch
) -> None:
    rabbitmq = counting_rabbitmq
    monkeypatch.setenv("WALLY_TEST_RABBIT_PASSWORD", rabbitmq.password)
    data = {
        "nodes": [{"uri": "local", "name": "bus", "roles": ["rabbitmq"]}],
        "sensors": SENSORS,
        "rabbitmq": {
            "url": rabbitmq.api,
            "user": rabbitmq.user,
            "password_env": "WALLY_TEST_RABBIT_PASSWORD",
        },
    }
    inventory = inventory_from_dict(data, source="lab.yaml")
    queue, n = f"wally-poller-{time.monotonic_ns()}", 137

    def published() -> int:
        return management_get(rabbitmq, "/api/overview").get("message_stats", {}).get("publish", 0)

    start = published()

    def work() -> int:
        _publish(rabbitmq, queue, n)
        return wait_for(published, start + n)

    async def go():
        with InfluxWriter(influx, spool_dir=tmp_path / "spool") as writer:
            col = Collector(inventory, sink=writer.write)
            total = await _collect_during(col, writer, work)
        return col, total

    col, total = asyncio.run(go())
    assert total == start + n and col.status["bus"].last_error == ""
    df = influx.query_df(
        "SELECT messages_published FROM rabbitmq_overview WHERE node = 'bus' ORDER BY time"
    )
    assert len(df) >= 5
    assert df["messages_published"].iloc[-1] == total == published()
    assert df["messages_published"].iloc[-1] - df["messages_published"].iloc[0] == n
    q = influx.query_df(f"SELECT last(messages) FROM rabbitmq_queue WHERE queue = '{queue}'")
    assert q["last"].iloc[0] == n
    assert influx.tag_values("rabbitmq_node", "rabbit_node") == [rabbitmq.nodename]


def test_rabbitmq_poller_errors_and_reconnect(rabbitmq) -> None:
    ctx = Context(tags={"node": "bus"})

    def conn() -> LocalConnection:
        return LocalConnection(Node(name="bus", roles=("rabbitmq",)))

    async def poll_once(poller: pollers.RabbitMQPoller) -> None:
        try:
            await poller.poll(conn(), ctx, None)
        finally:
            await poller.close(None)

    wrong = pollers.RabbitMQPoller(url=rabbitmq.api, user=rabbitmq.user, password="wrong")
    with pytest.raises(pollers.PollError, match="login failed"):
        asyncio.run(poll_once(wrong))
    closed = pollers.RabbitMQPoller(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(pollers.PollError, match="does not answer"):
        asyncio.run(poll_once(closed))

    # A new connection (the engine reconnected) gets a new helper; the old one is stopped.
    good = pollers.RabbitMQPoller(url=rabbitmq.api, user=rabbitmq.user, password=rabbitmq.password)

    async def reconnect() -> tuple[int | None, int | None, bool]:
        first, state, _ = await good.poll(conn(), ctx, None)
        old_pid = state.pid
        second, state, _ = await good.poll(conn(), ctx, state)
        new_pid = state.pid
        await good.close(state)
        return old_pid, new_pid, len(first) == len(second) > 0

    old_pid, new_pid, same = asyncio.run(reconnect())
    assert old_pid != new_pid and same
    assert not Path(f"/proc/{old_pid}").exists() and not Path(f"/proc/{new_pid}").exists()


def test_config_errors_name_the_key(monkeypatch, tmp_path) -> None:
    base = {"nodes": [{"uri": "local", "roles": ["ceph-mon", "rabbitmq"]}]}
    cases = [
        ({"ceph": {"root_node": "mon9"}}, r"ceph\.root_node: no node named 'mon9'"),
        ({"ceph": {"nodes": {"osd9": {}}}}, r"ceph\.nodes\.osd9: no node named 'osd9'"),
        ({"ceph": {"sockets": "/x"}}, r"ceph\.sockets: unknown key"),
        ({"rabbitmq": {"password_env": "WALLY_UNSET_VAR"}}, "WALLY_UNSET_VAR is not set"),
        ({"rabbitmq": {"password_file": "nope.txt"}}, r"rabbitmq\.password_file: file"),
    ]
    monkeypatch.delenv("WALLY_UNSET_VAR", raising=False)
    for extra, message in cases:
        inventory = inventory_from_dict(
            {**base, **extra}, source="lab.yaml", base_dir=str(tmp_path)
        )
        with pytest.raises(InventoryError, match=message):
            pollers.pollers_for(inventory)
    # the defaults: sockets in /var/run/ceph, cluster stats from the mon, guest on loopback
    got = pollers.pollers_for(inventory_from_dict(base, source="lab.yaml"), {"ceph_cluster": 10})
    assert [(p.name, p.interval) for p in got] == [
        ("ceph", 1.0),
        ("ceph_cluster", 10.0),
        ("rabbitmq", 1.0),
    ]
    assert got[1].applies_to(Node(name="local", roles=("ceph-mon",)))
    assert pollers.split_sensors({"cpu": 1, "ceph": 2}) == ({"cpu": 1}, {"ceph": 2})

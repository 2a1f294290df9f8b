"""The collection engine against real sshd nodes, real /proc and the real InfluxDB."""

import asyncio

import pytest

from collector import engine
from collector.engine import Collector, PreflightError
from collector.inventory import inventory_from_dict
from collector.writer import InfluxWriter
from tests.fixtures.sshd import SKEW_S


def _lab(cluster, **defaults):
    data = cluster.lab_config(
        roles=[["testnode"], ["ceph-osd", "testnode"], ["rabbitmq"]], **defaults
    )
    data["nodes"].append({"uri": "local", "name": "here", "roles": ["compute"]})
    return data


def _per_node(influx, measurement, field, where=""):
    df = influx.query_df(f'SELECT count("{field}") FROM "{measurement}" {where} GROUP BY "node"')
    return dict(zip(df["node"], df["count"], strict=True)) if not df.empty else {}


def _collect(inventory, influx, tmp_path, seconds, during=None):
    async def go():
        with InfluxWriter(influx, spool_dir=tmp_path / "spool") as writer:
            # The roles here are for tagging: no Ceph or RabbitMQ runs behind these nodes, so
            # their polled sensors are off (they are tested in test_pollers.py).
            col = Collector(inventory, sink=writer.write, pollers=())
            await col.prepare()
            run = asyncio.create_task(col.run(seconds))
            if during is not None:
                await during(col)
            await run
        return col

    return asyncio.run(go())


def test_collects_every_node_with_its_roles(sshd_nodes, influx, tmp_path):
    inventory = inventory_from_dict(_lab(sshd_nodes), source="lab.yaml", base_dir=str(tmp_path))
    col = _collect(inventory, influx, tmp_path, 4.5)
    names = {n.name for n in inventory}
    for measurement, field in [
        ("cpu", "usage_idle"),
        ("mem", "used"),
        ("diskio", "reads"),
        ("system", "load1"),
    ]:
        counts = _per_node(influx, measurement, field)
        assert set(counts) == names, measurement
    # ~one sample per second per node (cpu-total: one series per node)
    totals = _per_node(influx, "cpu", "usage_idle", "WHERE cpu = 'cpu-total'")
    for name, st in col.status.items():
        assert st.samples >= 3, (name, st.last_error)
        assert totals[name] == st.samples - 1  # cpu percentages need a previous sample
        assert st.last_error == ""
    # a node with two roles is tagged with both and found by each in the node index
    roles = influx.query_df('SELECT roles FROM wally_node GROUP BY "node", "role"')
    both = roles[roles["node"] == sshd_nodes.instances[1].name]
    assert sorted(both["role"]) == ["ceph-osd", "testnode"]
    tagged = influx.tag_values("cpu", "role", where={"node": sshd_nodes.instances[1].name})
    assert tagged == ["ceph-osd,testnode"]
    # the disk holding / is tagged as the OS disk, from discovery, on every node
    os_disks = influx.tag_values("diskio", "device", where={"device_role": "os"})
    assert os_disks and all(not d.startswith("loop") for d in os_disks)


def test_a_killed_sshd_is_a_visible_gap_and_others_are_undisturbed(sshd_nodes, influx, tmp_path):
    inventory = inventory_from_dict(_lab(sshd_nodes), source="lab.yaml", base_dir=str(tmp_path))
    victim = sshd_nodes.instances[1]

    async def fault(col):
        await asyncio.sleep(2.5)
        sshd_nodes.stop(1)
        await asyncio.sleep(2.5)
        sshd_nodes.start(1)

    col = _collect(inventory, influx, tmp_path, 11, during=fault)
    st = col.status[victim.name]
    assert st.reconnects == 1, st.last_error
    events = influx.query_df(
        "SELECT gap_seconds, message FROM wally_event WHERE kind = 'reconnect' GROUP BY \"node\""
    )
    assert list(events["node"]) == [victim.name]
    assert 2.0 < events["gap_seconds"].iloc[0] < 9.0
    # after the restart the victim streams again
    times = influx.query_df(
        f"SELECT usage_idle FROM cpu WHERE cpu = 'cpu-total' AND node = '{victim.name}'"
    )["time"]
    assert times.diff().max() > 2e9  # the gap is in the data
    assert times.max() > events["time"].iloc[0]
    # the other nodes never missed a beat
    for other in (sshd_nodes.instances[0].name, sshd_nodes.instances[2].name, "here"):
        t = influx.query_df(
            f"SELECT usage_idle FROM cpu WHERE cpu = 'cpu-total' AND node = '{other}'"
        )["time"]
        assert t.diff().max() < 1.6e9, other
        assert col.status[other].reconnects == 0


def test_preflight_names_every_node_that_cannot_work(sshd_nodes, tmp_path):
    data = _lab(sshd_nodes)
    data["nodes"][0]["key_file"] = str(sshd_nodes.wrong_key_path)
    data["nodes"][1]["known_hosts"] = str(tmp_path / "empty_known_hosts")
    (tmp_path / "empty_known_hosts").write_text("")
    inventory = inventory_from_dict(data, source="lab.yaml", base_dir=str(tmp_path))

    async def go():
        col = Collector(inventory, sink=lambda pts: None)
        with pytest.raises(PreflightError) as e:
            await col.prepare()
        return e.value

    err = asyncio.run(go())
    assert set(err.problems) == {sshd_nodes.instances[0].name, sshd_nodes.instances[1].name}
    assert "authentication failed" in err.problems[sshd_nodes.instances[0].name]
    assert "host key" in err.problems[sshd_nodes.instances[1].name]


def test_an_unreachable_node_does_not_stop_the_others(sshd_nodes, influx, tmp_path):
    data = _lab(sshd_nodes)
    sshd_nodes.stop(2)
    inventory = inventory_from_dict(data, source="lab.yaml", base_dir=str(tmp_path))
    col = _collect(inventory, influx, tmp_path, 3.5)
    down = col.status[sshd_nodes.instances[2].name]
    assert down.samples == 0 and not down.connected
    assert "cannot reach" in down.last_error
    assert col.status[sshd_nodes.instances[0].name].samples >= 2


def test_readers_start_in_turns_and_all_stream(sshd_nodes, influx, tmp_path, monkeypatch):
    """Reader starts take turns (one at a time here): a turn ends when the reader speaks,
    not when its stream does, so every node streams."""
    monkeypatch.setattr(engine, "PREPARE_CONCURRENCY", 1)
    inventory = inventory_from_dict(_lab(sshd_nodes), source="lab.yaml", base_dir=str(tmp_path))
    col = _collect(inventory, influx, tmp_path, 4)
    for name, st in col.status.items():
        assert st.samples >= 2, (name, st.last_error)
        assert st.errors == 0, (name, st.last_error)


def test_a_node_whose_clock_is_off_is_refused_before_collection(sshd_nodes, skewed_sshd, tmp_path):
    data = sshd_nodes.lab_config()
    off = skewed_sshd.instances[0]
    data["nodes"].append(
        {
            "uri": off.uri,
            "name": "late",
            "roles": ["testnode"],
            "key_file": str(skewed_sshd.key_path),
            "known_hosts": str(skewed_sshd.known_hosts),
        }
    )
    data["defaults"]["max_clock_skew"] = 1.0
    inventory = inventory_from_dict(data, source="lab.yaml", base_dir=str(tmp_path))

    async def go():
        col = Collector(inventory, sink=lambda pts: None, pollers=())
        try:
            with pytest.raises(PreflightError) as e:
                await col.prepare()
        finally:
            await col.close()
        return col, e.value

    col, err = asyncio.run(go())
    # only the node whose sessions run SKEW_S ahead (libfaketime) is refused, with its skew
    assert set(err.problems) == {"late"}
    assert "max_clock_skew 1.0 s" in err.problems["late"]
    assert col.status["late"].skew == pytest.approx(SKEW_S, abs=0.5)
    assert abs(col.status[sshd_nodes.instances[0].name].skew) < 0.5

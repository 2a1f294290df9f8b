"""RPC campaigns in plans: templates, sweeps, filters, errors with file:line (pure logic)."""

from __future__ import annotations

import json

import pytest
import yaml

from collector.inventory import InventoryError, load_inventory
from loadgen.plan import compile_plan
from loadgen.rpcplan import RpcIteration, parse_filter, watched_nodes

BROKER = {"url": "rabbit://127.0.0.1:5672/", "user": "wally", "password_env": "WALLY_PW"}


def _compile(tmp_path, campaigns, broker=BROKER, extra=None):
    lab = {"nodes": [{"uri": "local", "roles": ["rabbitmq"]}], **(extra or {})}
    lab["rpc"] = {"broker": broker, "campaigns": campaigns}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return [it for it in compile_plan(load_inventory(path)) if isinstance(it, RpcIteration)]


def _agents(its):
    return [(it.test_type, it.clients, it.servers, it.topics) for it in its]


def test_templates_follow_the_openstack_test_cases(tmp_path):
    its = _compile(tmp_path, [{"template": t} for t in ("tc1", "tc2", "tc3", "tc4")])
    by = {c: [it for it in its if it.campaign == c] for c in ("tc1", "tc2", "tc3", "tc4")}
    # one large target: clients grow first, then a second server (incremental, servers<=clients)
    assert _agents(by["tc1"]) == [
        ("rpc-call", c, s, 1) for c, s in ((1, 1), (2, 2), (4, 2), (8, 2))
    ]
    # many targets: one client and one server per topic
    assert _agents(by["tc2"]) == [("rpc-call", n, n, n) for n in (1, 2, 4, 8)]
    assert _agents(by["tc3"]) == [("rpc-fanout", 1, n, 1) for n in (1, 2, 4, 8)]
    assert _agents(by["tc4"]) == [("rpc-fanout", n, 2 * n, n) for n in (1, 2, 4)]
    assert [it.index for it in its] == list(range(1, len(its) + 1))


def test_product_sweep_with_filter_and_open_loop(tmp_path):
    its = _compile(
        tmp_path,
        [
            {
                "name": "sw",
                "test_type": ["rpc-call", "rpc-cast"],
                "clients": [1, 2, 4],
                "servers": [1, 2],
                "filters": ["servers <= clients", "clients != 4"],
                "duration": "5s",
                "rate": 200,
            }
        ],
    )
    assert _agents(its) == [
        (t, c, s, 1) for t in ("rpc-call", "rpc-cast") for s, c in ((1, 1), (1, 2), (2, 2))
    ]
    assert its[0].name == "sw-rpc-call-c1-s1-r200"
    spec = its[0].spec("rabbit://wally:secret@127.0.0.1:5672/", "run1")
    assert (spec.rate, spec.duration, spec.calls, spec.test) == (200.0, 5, None, its[0].name)
    # the password never reaches the plan or the test record
    assert "secret" not in json.dumps(its[0].params())
    assert its[0].params()["broker"] == "rabbit://wally@127.0.0.1:5672/"


def test_executor_reaches_the_agents_spec(tmp_path):
    its = _compile(tmp_path, [{"clients": 1, "servers": 1, "executor": "eventlet"}])
    assert its[0].spec("rabbit://127.0.0.1:5672/", "run1").executor == "eventlet"
    assert its[0].params()["executor"] == "eventlet"


def test_broker_password_from_env(tmp_path, monkeypatch):
    it = _compile(tmp_path, [{"clients": 1, "servers": 1}])[0]
    monkeypatch.setenv("WALLY_PW", "p@ss/word")
    assert it.broker.resolved_url() == "rabbit://wally:p%40ss%2Fword@127.0.0.1:5672/"


def test_rpc_and_fio_in_one_plan(tmp_path):
    suite = {"target": "f", "size": "1m", "rw": ["read"], "bs": "4k", "roles": ["rabbitmq"]}
    lab = {"plan": {"suites": [suite]}}
    path = tmp_path / "lab.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [{"uri": "local", "roles": ["rabbitmq"]}],
                **lab,
                "rpc": {"broker": BROKER, "campaigns": [{"clients": 1, "servers": 1}]},
            }
        )
    )
    plan = compile_plan(load_inventory(path))
    assert [type(it).__name__ for it in plan] == ["Iteration", "RpcIteration"]
    assert [it.index for it in plan] == [1, 2]


@pytest.mark.parametrize(
    ("campaign", "message"),
    [
        ({"clients": [1, 2], "servers": [1], "topics": [2]}, "topics=2: expected at most"),
        ({"clients": 0, "servers": 1}, "expected whole numbers >= 1"),
        ({"clients": 1, "servers": 1, "filters": "servers <=< clients"}, "servers <=< clients"),
        ({"clients": 1, "servers": 1, "filters": "hosts <= clients"}, "unknown term 'hosts'"),
        ({"clients": 1, "servers": 2, "filters": "servers <= clients"}, "reject every"),
        ({"clients": [2, 1], "servers": 1, "sweep": "incremental"}, "expected increasing"),
        ({"clients": 1, "servers": 1, "calls": 10, "duration": 5}, "calls (per client) or"),
        ({"servers": 1}, "expected clients"),
        ({"template": "tc9"}, "'tc1', 'tc2', 'tc3' or 'tc4'"),
        ({"clients": 1, "servers": 1, "executor": "gevent"}, "executor"),
    ],
)
def test_bad_campaigns_name_file_line_and_key(tmp_path, campaign, message):
    with pytest.raises(InventoryError) as exc:
        _compile(tmp_path, [campaign])
    text = str(exc.value)
    assert message in text
    assert "lab.yaml:" in text and "rpc.campaigns[0]" in text


def test_bad_broker(tmp_path):
    with pytest.raises(InventoryError, match=r"lab.yaml:\d+: rpc.broker.url: expected rabbit://"):
        _compile(tmp_path, [{"clients": 1, "servers": 1}], broker={"url": "http://x"})


def test_filter_parser():
    f = parse_filter("servers <= clients")
    assert f.keep({"servers": 2, "clients": 2}) and not f.keep({"servers": 3, "clients": 2})
    assert parse_filter("clients > 4").keep({"clients": 5})


def _lab_with_agent_nodes(tmp_path, agents):
    lab = {
        "nodes": [
            {"uri": "local", "roles": ["rabbitmq"]},
            {"uri": "root@10.0.0.1", "name": "c1", "roles": ["rpc-client"]},
            {"uri": "root@10.0.0.2", "name": "c2", "roles": ["rpc-client", "rpc-server"]},
        ],
        "rpc": {"broker": BROKER, "agents": agents, "campaigns": [{"clients": 1, "servers": 1}]},
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return load_inventory(path)


def test_agent_nodes_come_from_roles_and_agent_settings(tmp_path):
    inv = _lab_with_agent_nodes(tmp_path, {"node_python": {"c2": "/opt/py"}})
    (it,) = [it for it in compile_plan(inv) if isinstance(it, RpcIteration)]
    assert it.client_nodes == ("c1", "c2") and it.server_nodes == ("c2",)
    assert it.nodes == ()  # agent nodes are not fio nodes: the runner prepares nothing there
    assert it.agents.python_on("c1") == "python3" and it.agents.python_on("c2") == "/opt/py"
    assert it.agents.max_clock_skew == 0.001
    assert it.to_dict()["client_nodes"] == ["c1", "c2"]


def test_agent_python_for_an_unknown_node_names_file_line_and_key(tmp_path):
    with pytest.raises(InventoryError) as exc:
        compile_plan(_lab_with_agent_nodes(tmp_path, {"node_python": {"c3": "/opt/py"}}))
    text = str(exc.value)
    assert "lab.yaml:" in text and "rpc.agents.node_python.c3: no node named 'c3'" in text


def test_agents_on_this_machine_are_watched_by_its_node(tmp_path):
    # senders have no node: they run here, where the lab's local node gets their role
    lab = {
        "nodes": [
            {"uri": "local", "name": "bus", "roles": ["rabbitmq"]},
            {"uri": "ssh://root@10.0.0.2", "name": "s1", "roles": ["rpc-server"]},
        ],
        "rpc": {"broker": BROKER, "campaigns": [{"clients": 1, "servers": 1}]},
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    inv = load_inventory(path)
    plan = compile_plan(inv)
    assert {n.name: n.roles for n in watched_nodes(inv, plan)} == {
        "bus": ("rabbitmq", "rpc-client"),
        "s1": ("rpc-server",),
    }
    # a lab without a local node: one is added, watching only what runs here
    lab["nodes"] = lab["nodes"][1:]
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    inv = load_inventory(path)
    assert {n.name: n.roles for n in watched_nodes(inv, compile_plan(inv))} == {
        "s1": ("rpc-server",),
        "local": ("rpc-client",),
    }
    # a plan without RPC iterations changes nothing
    assert watched_nodes(inv, []) == list(inv)

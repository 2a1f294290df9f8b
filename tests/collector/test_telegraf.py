"""Generated Telegraf configs: valid TOML, only measurements/fields/tags our schema knows."""

from __future__ import annotations

import re
import textwrap
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector import pollers, schema
from collector.engine import role_tag
from collector.inventory import Inventory, inventory_from_dict
from collector.sensors import ROLE_PROCESSES, procstat_for_roles
from collector.telegraf import (
    INPUT_MEASUREMENTS,
    dumps,
    glob_regex,
    telegraf_config_command,
    write_configs,
)

LAB = {
    "nodes": [
        {"uri": "local", "roles": ["testnode"]},
        {
            "uri": "ceph@127.0.0.1:2201",
            "name": "osd-1",
            "roles": ["testnode", "ceph-osd"],
            "device_roles": {"sdc": "journal", r"re:nvme\d+n1": "osd-db"},
        },
        {"uri": "u@127.0.0.1:2202", "roles": ["rabbitmq", "rpc-server"]},
        {"uri": "u@127.0.0.1:2203", "name": "mon-1", "roles": ["ceph-mon", "compute"]},
    ],
    "device_roles": {"ceph-osd": {"sd[b-z]": "osd-data"}},
}

# The tags each Telegraf input puts on its metrics with our options (Telegraf's plugin
# READMEs), before processors; `host` comes from the agent.
TELEGRAF_TAGS = {
    "cpu": {"host", "cpu"},
    "diskio": {"host", "name"},
    "mem": {"host"},
    "net": {"host", "interface"},
    "netstat": {"host"},
    "system": {"host"},
    "kernel": {"host"},
    "processes": {"host"},
    "procstat": {"host", "process_name", "exe", "pattern", "pid"},
    "rabbitmq_overview": {"host", "url"},
    "rabbitmq_node": {"host", "url", "node"},
    "rabbitmq_queue": {"host", "url", "queue", "vhost", "node", "durable", "auto_delete"},
    "ceph": {"host", "type", "id", "collection"},
}


def lab(data: dict = LAB) -> Inventory:
    return inventory_from_dict(data, "lab.yaml", check_files=False)


def generate(tmp_path: Path, inv: Inventory | None = None, **kw) -> dict[str, dict]:
    inv = inv or lab()
    kw.setdefault("influx_url", "http://10.0.0.5:8086")
    kw.setdefault("database", "perf")
    paths = write_configs(inv, tmp_path / "out", **kw)
    assert [p.parent.name for p in paths] == [n.name for n in inv]
    return {n.name: tomllib.loads(p.read_text()) for n, p in zip(inv, paths, strict=True)}


def renamed(conf: dict, tags: set[str]) -> set[str]:
    """Telegraf's processors.rename: each replacement in turn, on the tags it finds."""
    out = set(tags)
    for rep in conf["processors"]["rename"][0]["replace"]:
        if rep["tag"] in out:
            out = (out - {rep["tag"]}) | {rep["dest"]}
    return out


def test_every_enabled_measurement_field_and_tag_is_in_the_schema(tmp_path: Path) -> None:
    confs = generate(tmp_path)
    seen: set[str] = set()
    for name, conf in confs.items():
        for plugin, tables in conf["inputs"].items():
            assert plugin in INPUT_MEASUREMENTS, f"{name}: input {plugin} has no measurement map"
            for m in INPUT_MEASUREMENTS[plugin]:
                assert m in schema.REGISTRY
                seen.add(m)
                tags = renamed(conf, TELEGRAF_TAGS[m]) | set(conf["global_tags"])
                assert {schema.TAG_NODE, schema.TAG_ROLE} <= tags
                assert tags <= set(schema.get(m).tags), f"{m}: {tags - set(schema.get(m).tags)}"
            declared = {f for m in INPUT_MEASUREMENTS[plugin] for f in schema.get(m).fields}
            for table in tables:
                assert set(table.get("fieldinclude", [])) == declared
    assert seen == {m for ms in INPUT_MEASUREMENTS.values() for m in ms}


def test_renames_map_telegraf_tags_to_ours_in_a_safe_order(tmp_path: Path) -> None:
    conf = generate(tmp_path)["osd-1"]
    replace = [(r["tag"], r["dest"]) for r in conf["processors"]["rename"][0]["replace"]]
    assert ("host", schema.TAG_NODE) in replace
    assert ("name", schema.TAG_DEVICE) in replace
    assert ("interface", schema.TAG_DEVICE) in replace
    # rabbitmq's own `node` moves away before `host` becomes `node`
    assert replace.index(("node", "rabbit_node")) < replace.index(("host", schema.TAG_NODE))
    assert renamed(conf, {"host", "url", "node"}) == {schema.TAG_NODE, "url", "rabbit_node"}
    assert renamed(conf, {"host", "name"}) == {schema.TAG_NODE, schema.TAG_DEVICE}


def test_node_and_role_tags_match_our_sensors(tmp_path: Path) -> None:
    inv = lab()
    confs = generate(tmp_path, inv)
    for node in inv:
        conf = confs[node.name]
        assert conf["agent"]["hostname"] == node.name
        assert conf["agent"]["omit_hostname"] is False
        assert conf["global_tags"] == {schema.TAG_ROLE: role_tag(node.roles)}
    assert confs["osd-1"]["global_tags"]["role"] == "ceph-osd,testnode"


def test_inputs_follow_roles(tmp_path: Path) -> None:
    confs = generate(tmp_path)
    node_inputs = {"cpu", "diskio", "mem", "net", "netstat", "system", "kernel", "processes"}
    assert set(confs["local"]["inputs"]) == node_inputs | {"procstat"}
    assert set(confs["osd-1"]["inputs"]) == node_inputs | {"procstat", "ceph"}
    assert set(confs["127.0.0.1:2202"]["inputs"]) == node_inputs | {"procstat", "rabbitmq"}
    assert set(confs["mon-1"]["inputs"]) == node_inputs | {"procstat", "ceph"}
    cpu = confs["local"]["inputs"]["cpu"][0]
    assert (cpu["percpu"], cpu["totalcpu"]) == (True, True)
    assert (cpu["collect_cpu_time"], cpu["report_active"]) == (False, False)
    assert confs["local"]["inputs"]["net"][0]["ignore_protocol_stats"] is True
    ceph = confs["osd-1"]["inputs"]["ceph"][0]
    assert ceph["socket_dir"] == "/var/run/ceph"
    assert (ceph["gather_admin_socket_stats"], ceph["gather_cluster_stats"]) == (True, False)
    rabbit = confs["127.0.0.1:2202"]["inputs"]["rabbitmq"][0]
    assert rabbit["url"] == pollers.DEFAULT_RABBITMQ_URL  # the same url tag as our poller
    assert rabbit["metric_include"] == ["overview", "node", "queue"]


def test_procstat_selectors_are_the_roles_processes(tmp_path: Path) -> None:
    inv = lab()
    confs = generate(tmp_path, inv)
    for node in inv:
        tables = confs[node.name]["inputs"]["procstat"]
        got = [(k, t[k]) for t in tables for k in ("exe", "pattern") if k in t]
        assert got == [(m.kind, m.regex) for m in procstat_for_roles(node.roles)]
        for kind, regex in got:
            assert any((m.kind, m.regex) == (kind, regex) for r in node.roles for m in ROLE_PROCESSES.get(r, ()))  # fmt: skip
        assert all(t["namedrop"] == ["procstat_lookup"] for t in tables)
    # rpc-server and rabbitmq both bring their selectors; each appears once
    assert len(confs["127.0.0.1:2202"]["inputs"]["procstat"]) == 2


@pytest.mark.parametrize("glob", ["sd[b-z]", "nvme*n1", "vd?", "md[!0]", "dm-*", "a.b+c", "x[]]"])
def test_glob_regex_matches_what_fnmatch_matches(glob: str) -> None:
    names = ["sda", "sdb", "sdz", "nvme0n1", "nvme12n1", "nvme0n1p1", "vda", "vd", "md0", "md1",
             "dm-0", "dm", "a.b+c", "aXb+c", "x]", "x"]  # fmt: skip
    rx = re.compile(glob_regex(glob))
    for name in names:
        assert bool(rx.search(name)) == fnmatchcase(name, glob), (glob, name)


def test_device_roles_first_pattern_wins_like_the_inventory(tmp_path: Path) -> None:
    inv = lab()
    conf = generate(tmp_path, inv)["osd-1"]
    (regex,) = conf["processors"]["regex"]
    assert regex["namepass"] == ["diskio"] and regex["order"] > conf["processors"]["rename"][0]["order"]  # fmt: skip
    node = inv.node("osd-1")
    for dev in ("sda", "sdb", "sdc", "nvme0n1", "nvme0n1p1", "vda"):
        tags = {"device": dev}
        for t in regex["tags"]:  # Telegraf applies them in order, each overwriting
            if re.search(t["pattern"], tags[t["key"]]):
                tags[t["result_key"]] = re.sub(t["pattern"], t["replacement"], tags[t["key"]])
        assert tags.get(schema.TAG_DEVICE_ROLE) == node.device_role(dev), dev
    assert "regex" not in generate(tmp_path, inv)["local"]["processors"]


def test_agent_timing_and_outputs(tmp_path: Path) -> None:
    conf = generate(tmp_path)["local"]
    agent = conf["agent"]
    assert (agent["interval"], agent["flush_interval"], agent["flush_jitter"]) == (
        "1s",
        "10s",
        "5s",
    )
    out = conf["outputs"]["influxdb"][0]
    assert out == {"urls": ["http://10.0.0.5:8086"], "content_encoding": "gzip",
                   "database": "perf", "skip_database_creation": True}  # fmt: skip
    conf = generate(tmp_path, v2=True, organization="lab", interval=0.5)["local"]
    assert conf["agent"]["interval"] == "500ms"
    assert "influxdb" not in conf["outputs"]
    v2 = conf["outputs"]["influxdb_v2"][0]
    assert (v2["token"], v2["organization"], v2["bucket"]) == ("${INFLUX_TOKEN}", "lab", "perf")


def test_credentials_are_env_references(tmp_path: Path) -> None:
    data = {**LAB, "influx": {"username": "wally", "password_env": "WALLY_PW"}}
    out = generate(tmp_path, lab(data))["local"]["outputs"]["influxdb"][0]
    assert (out["username"], out["password"]) == ("wally", "${WALLY_PW}")


def test_sensor_intervals_choose_inputs(tmp_path: Path) -> None:
    confs = generate(tmp_path, sensors={"cpu": 2.0, "procstat": 5.0, "ceph": 30.0})
    assert set(confs["osd-1"]["inputs"]) == {"cpu", "procstat", "ceph"}
    assert confs["osd-1"]["inputs"]["cpu"][0]["interval"] == "2s"
    assert confs["osd-1"]["inputs"]["ceph"][0]["interval"] == "30s"
    with pytest.raises(ValueError, match=r"unknown sensor.*bogus"):
        generate(tmp_path, sensors={"bogus": 1.0})


def test_dumps_is_toml_and_keeps_arrays_of_tables_as_blocks() -> None:
    doc = {"a": {"s": 'q"\\\x7f\n', "n": 3, "b": False, "l": ["x", "y"], "t": [{"k": 1}]}}
    text = dumps(doc)
    assert "[[a.t]]" in text and "{" not in text
    assert tomllib.loads(text) == doc


def run(tmp_path: Path, yaml_text: str, *args: str):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(textwrap.dedent(yaml_text))
    return CliRunner().invoke(telegraf_config_command, [str(cfg), "--out", str(tmp_path / "o"), *args])  # fmt: skip


def test_cli_writes_one_file_per_node(tmp_path: Path) -> None:
    r = run(tmp_path, """
        nodes:
          - {uri: local, roles: [testnode]}
          - {uri: "ceph@127.0.0.1:2201", name: osd-1, roles: [ceph-osd]}
        influx: {url: "http://10.0.0.5:8086", database: perf}
        sensors: {cpu: 1, procstat: 1}
        """)  # fmt: skip
    assert r.exit_code == 0, r.output
    conf = tomllib.loads((tmp_path / "o" / "osd-1" / "telegraf.conf").read_text())
    assert set(conf["inputs"]) == {"cpu", "procstat", "ceph"}
    assert conf["outputs"]["influxdb"][0]["database"] == "perf"
    assert "osd-1" in r.output and "ceph-osd" in r.output
    assert "loopback" not in r.output


def test_cli_warns_when_remote_agents_cannot_reach_a_loopback_url(tmp_path: Path) -> None:
    yaml_text = "nodes:\n  - {uri: 'u@10.1.1.1', roles: [testnode]}\n"
    r = run(tmp_path, yaml_text, "--influx-url", "http://127.0.0.1:8086")
    assert r.exit_code == 0, r.output
    assert "http://127.0.0.1:8086 is a loopback address; agents on 10.1.1.1" in r.output


@pytest.mark.parametrize(
    ("yaml_text", "args", "expected"),
    [
        ("nodes:\n  - {uri: 'bad uri!', roles: [testnode]}\n", [], r"lab\.yaml:2: nodes\[0\]\.uri"),
        ("nodes:\n  - {uri: local, roles: [testnode]}\n", [], "no InfluxDB URL"),
        ("nodes:\n  - {uri: local, roles: [testnode]}\n", ["--influx-url", "db:8086"],
         "expected http"),
        ("nodes:\n  - {uri: local, roles: [testnode]}\n", ["--influx-url", "http://d:1",
         "--interval", "0"], "expected a positive number"),
        ("nodes:\n  - {uri: local, roles: [testnode], device_roles: {'re:sd(?!a)': x}}\n",
         ["--influx-url", "http://d:1"], "node 'local': device pattern 're:sd\\(\\?!a\\)'"),
        ("nodes:\n  - {uri: local, roles: [testnode]}\nsensors: {cpu: -1}\n",
         ["--influx-url", "http://d:1"], r"sensors\.cpu"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(tmp_path: Path, yaml_text: str, args: list, expected: str) -> None:  # fmt: skip
    r = run(tmp_path, yaml_text, *args)
    assert r.exit_code != 0
    assert re.search(expected, r.output), r.output
    assert not (tmp_path / "o").exists()

"""Lab config loading: resolution of defaults, roles, patterns, and errors that point at the line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from collector.inventory import (
    InventoryError,
    SshUri,
    inventory_from_dict,
    load_inventory,
    parse_ssh_uri,
)


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_test"
    path.write_text("not checked here\n")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("root@10.0.0.1", SshUri("root", "10.0.0.1", None)),
        ("ceph@osd-1.lab:2222", SshUri("ceph", "osd-1.lab", 2222)),
        ("host", SshUri(None, "host", None)),
        ("ssh://u@h:22", SshUri("u", "h", 22)),
        ("[::1]:22", SshUri(None, "::1", 22)),
        ("admin@[fe80::1]", SshUri("admin", "fe80::1", None)),
        ("::1", SshUri(None, "::1", None)),
    ],
)
def test_parse_ssh_uri(text: str, expected: SshUri) -> None:
    assert parse_ssh_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "root@", "@host", "u@h:0", "u@h:70000", "u@h:x", "[::1", "[nothost]:22", "a b", "1::2::3"],
)
def test_parse_ssh_uri_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="user@host"):
        parse_ssh_uri(text)


def test_ipv6_address_round_trips() -> None:
    uri = parse_ssh_uri("root@[::1]:2200")
    assert str(uri) == "root@[::1]:2200"
    assert uri.address == "[::1]:2200"


def test_defaults_roles_and_patterns(tmp_path: Path, key: Path) -> None:
    path = write(
        tmp_path,
        f"""
        defaults:
          user: ceph
          key_file: {key.name}
          connect_timeout: 3
          ssh_options: {{keepalive_interval: 15}}
        device_roles:
          ceph-osd:
            "sd[b-z]": osd-data
            "re:nvme[0-9]+n1": osd-db
          testnode:
            "vdb": test-target
        nodes:
          - uri: 10.0.0.1
            roles: [ceph-osd, ceph-mon]
          - uri: admin@10.0.0.2:2222
            name: client1
            roles: testnode
            host_key_checking: false
            device_roles: {{"sdb": scratch}}
          - uri: local
            roles: [testnode, ceph-osd]
        plan: {{anything: [1, 2]}}
        """,
    )
    inv = load_inventory(path)
    osd, client, local = inv.nodes
    assert (osd.name, osd.user, osd.port, osd.key_file) == ("10.0.0.1", "ceph", 22, str(key))
    assert osd.host_key_checking and osd.connect_timeout == 3
    assert osd.ssh_options == {"keepalive_interval": 15}
    assert osd.device_role("sdc") == "osd-data"
    assert osd.device_role("nvme0n1") == "osd-db"
    assert osd.device_role("nvme0n1p1") is None
    assert osd.device_role("sda") is None
    assert (client.name, client.user, client.port) == ("client1", "admin", 2222)
    assert not client.host_key_checking
    # The node's own pattern wins over its role's.
    assert client.device_role("sdb") == "scratch"
    assert client.device_role("vdb") == "test-target"
    assert local.is_local and local.name == "local" and local.uri == "local"
    assert [n.name for n in inv.nodes_with_role("ceph-osd")] == ["10.0.0.1", "local"]
    assert [n.name for n in inv.nodes_with_role("testnode")] == ["client1", "local"]
    assert inv.nodes_with_role("rabbitmq") == []
    assert inv.roles() == ["ceph-osd", "ceph-mon", "testnode"]
    assert inv.config.model_extra == {"plan": {"anything": [1, 2]}}


def test_missing_key_file_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          user: root
        nodes:
          - uri: a
            roles: [testnode]
          - uri: b
            roles: [testnode]
            key_file: ~/no/such/key
        """,
    )
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    text = str(err.value)
    assert f"{path}:9: nodes[1].key_file:" in text
    assert "no/such/key" in text and "does not exist" in text


def test_errors_name_file_key_path_line_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          usr: root
          max_clock_skew: -1
        nodes:
          - uri: ok@host1
            roles: [testnode]
          - uri: bad@host:99999
            roles: [testnode]
          - uri: host3
            roles: []
          - uri: host4
            roles: ["has space"]
        device_roles:
          ceph-osd:
            "re:sd(": osd-data
        influx:
          url: localhost:8086
          password_env: A
          password_file: nope
        """,
    )
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"invalid lab config {path}")

    def line_for(key: str) -> str:
        found = [ln for ln in lines if f": {key}:" in ln]
        assert found, f"no error for {key} in {lines}"
        return found[0].strip()

    assert line_for("defaults.usr").startswith(f"{path}:3:")
    assert "unknown key; expected one of: user, key_file" in line_for("defaults.usr")
    assert line_for("defaults.max_clock_skew").startswith(f"{path}:4:")
    assert "port must be 1-65535" in line_for("nodes[1].uri")
    assert line_for("nodes[1].uri").startswith(f"{path}:8:")
    assert "at least 1 item" in line_for("nodes[2].roles")
    assert "role name" in line_for("nodes[3].roles[0]")
    assert "bad regular expression" in line_for("device_roles.ceph-osd.re:sd(")
    assert line_for("device_roles.ceph-osd.re:sd(").startswith(f"{path}:16:")
    assert "http(s)://" in line_for("influx.url")
    assert "does not exist" in line_for("influx.password_file")


def test_duplicate_yaml_keys_and_node_names(tmp_path: Path) -> None:
    dup_key = write(tmp_path, "nodes: []\nnodes: []\n", "dup.yaml")
    with pytest.raises(InventoryError, match=r"dup.yaml:2: nodes: duplicate key 'nodes'"):
        load_inventory(dup_key)
    dup_name = write(
        tmp_path,
        """
        nodes:
          - {uri: "root@h1", roles: [a]}
          - {uri: "other@h1", roles: [b]}
        """,
        "names.yaml",
    )
    with pytest.raises(InventoryError, match=r"names.yaml:4: nodes\[1\].uri: node name 'h1'"):
        load_inventory(dup_name)


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read lab config"):
        load_inventory(tmp_path / "missing.yaml")
    bad = write(tmp_path, "nodes: [\n  - x: y\n", "bad.yaml")
    with pytest.raises(InventoryError, match=r"bad.yaml:\d+: not valid YAML"):
        load_inventory(bad)
    with pytest.raises(InventoryError, match="expected a mapping"):
        inventory_from_dict(["a"])


def test_unknown_ssh_option_and_reserved_ones() -> None:
    base = {"nodes": [{"uri": "h", "roles": ["x"]}]}
    with pytest.raises(InventoryError, match="unknown SSH option 'keepalive'"):
        inventory_from_dict({**base, "defaults": {"ssh_options": {"keepalive": 1}}})
    with pytest.raises(InventoryError, match="'client_keys' has its own key"):
        inventory_from_dict({**base, "defaults": {"ssh_options": {"client_keys": []}}})


class PlanSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: int


def test_other_packages_validate_their_sections_with_the_same_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        nodes:
          - {uri: local, roles: [testnode]}
        plan:
          runs: many
        """,
    )
    inv = load_inventory(path)
    assert inv.section("fio", PlanSection) is None
    with pytest.raises(InventoryError) as err:
        inv.section("plan", PlanSection)
    assert f"{path}:5: plan.runs:" in str(err.value)
    assert "valid integer" in str(err.value)


def test_influx_section(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    inv = inventory_from_dict(
        {
            "nodes": [{"uri": "local", "roles": ["testnode"]}],
            "influx": {"url": "http://127.0.0.1:8086", "database": "lab", "token_file": "token"},
        },
        base_dir=str(tmp_path),
    )
    assert inv.config.influx.token_file == str(token)
    assert not inv.config.influx.create_database  # a typo must not create a second database
    with pytest.raises(InventoryError, match="password_env or password_file, not both"):
        inventory_from_dict(
            {
                "nodes": [{"uri": "local", "roles": ["t"]}],
                "influx": {"password_env": "X", "password_file": str(token)},
            }
        )

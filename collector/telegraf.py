"""Telegraf configs that write what our SSH sensors write, for clusters too big to poll.

One file per NODE (``OUT/<node>/telegraf.conf``), not per role: our sensors tag ``node``
with the inventory name and ``role`` with ALL roles of the node (``engine.role_tag``), and
analysis finds devices and roles by those exact values (``wally_node``/``wally_device``).
A per-role file could give neither: Telegraf's own hostname need not be the inventory
name, and a node with two roles would need two agents tagging two different roles. So each
node's file carries its name as ``[agent] hostname``, its joined roles as a global tag and
the union of the inputs of its roles. Copy ``OUT/<node>/telegraf.conf`` to that node.

Tag keys are made ours by one ``processors.rename`` whose replacements run in list order
(Telegraf applies them one after the other on each metric): rabbitmq's ``node`` (the Erlang
node) becomes ``rabbit_node`` BEFORE ``host`` becomes ``node``, then diskio's ``name`` and
net's ``interface`` become ``device``. Config device-role patterns become a
``processors.regex`` (``order = 2``, after the rename) adding ``device_role`` to diskio.
Every input keeps only the fields ``collector.schema`` declares (``fieldinclude``), so the
two sources are interchangeable point for point. Option names follow Telegraf >= 1.29.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from collector import pollers, schema
from collector.engine import role_tag
from collector.inventory import DevicePattern, Inventory, InventoryError, Node, load_inventory
from collector.pollers import DEFAULT_INTERVALS as POLLER_INTERVALS
from collector.sensors import configured_intervals, procstat_for_roles
from collector.sensors.ceph import DEFAULT_SOCKET_DIR

# Telegraf input -> the measurements it produces with the options we set.
INPUT_MEASUREMENTS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "diskio": ("diskio",),
    "mem": ("mem",),
    "net": ("net",),
    "netstat": ("netstat",),
    "system": ("system",),
    "kernel": ("kernel",),
    "processes": ("processes",),
    "procstat": ("procstat",),
    "rabbitmq": ("rabbitmq_overview", "rabbitmq_node", "rabbitmq_queue"),
    "ceph": ("ceph",),
}
NODE_INPUTS = ("cpu", "diskio", "mem", "net", "netstat", "system", "kernel", "processes")
# Options that make each input behave like our sensor of the same name.
INPUT_OPTIONS: dict[str, dict[str, Any]] = {
    "cpu": {"percpu": True, "totalcpu": True, "collect_cpu_time": False, "report_active": False},
    "diskio": {"skip_serial_number": True},
    "net": {"ignore_protocol_stats": True},
    # native: no pgrep process per selector per second; procstat_lookup is not ours.
    "procstat": {"pid_finder": "native", "tag_with": ["pid"], "namedrop": ["procstat_lookup"]},
    "rabbitmq": {"metric_include": ["overview", "node", "queue"]},
    "ceph": {
        "socket_dir": DEFAULT_SOCKET_DIR,
        "gather_admin_socket_stats": True,
        "gather_cluster_stats": False,
    },
}
CEPH_DAEMON_ROLES = ("ceph-osd", "ceph-mon")
# Telegraf's ceph input starts the `ceph` CLI once per admin socket and poll (0.1 s CPU
# each, measured in docs/telegraf.md): at 1 s, 10% of a core per daemon. `sensors:` overrides.
DEFAULT_INTERVALS: dict[str, float] = {"ceph": 10.0}
RABBITMQ_ROLE = "rabbitmq"
DEFAULT_RABBITMQ_URL = pollers.DEFAULT_RABBITMQ_URL  # the same `url` tag as our poller
# Telegraf tag -> ours, applied in this order (rabbitmq's node must move before host -> node).
TAG_RENAMES: tuple[tuple[str, str], ...] = (
    ("node", "rabbit_node"),
    ("host", schema.TAG_NODE),
    ("name", schema.TAG_DEVICE),
    ("interface", schema.TAG_DEVICE),
)
CONFIG_NAME = "telegraf.conf"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML basic-string escapes, plus DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(doc: Mapping[str, Any]) -> str:
    """TOML in the layout of Telegraf's own sample configs: every array of tables as
    `[[a.b]]` blocks, never inline (generic writers inline short ones)."""
    lines: list[str] = []

    def table(path: str, items: Mapping[str, Any], array: bool) -> None:
        scalars = [
            (k, v) for k, v in items.items() if not isinstance(v, dict) and not _is_tables(v)
        ]
        if path and (scalars or array):
            lines.extend(["", f"[[{path}]]" if array else f"[{path}]"])
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars)
        for key, value in items.items():
            sub = f"{path}.{key}" if path else key
            if isinstance(value, dict):
                table(sub, value, False)
            elif _is_tables(value):
                for item in value:
                    table(sub, item, True)

    table("", doc, False)
    return "\n".join(lines).lstrip("\n") + "\n"


def duration(seconds: float, what: str = "interval") -> str:
    """A Telegraf duration string ("1s", "250ms"); rejects what Telegraf would misread."""
    if not seconds > 0:
        raise ValueError(f"{what}: expected a positive number of seconds, got {seconds!r}")
    ms = round(seconds * 1000)
    if ms == 0 or abs(ms - seconds * 1000) > 1e-6:
        raise ValueError(f"{what}: {seconds!r} s is not a whole number of milliseconds")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def glob_regex(glob: str) -> str:
    """An anchored Go (RE2) regex matching what `fnmatch.fnmatchcase(name, glob)` matches."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        end = glob.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end != -1:
            body = glob[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


def device_regex(pattern: DevicePattern) -> str:
    """The config pattern as an anchored RE2 regex; Python-only syntax is a clear error."""
    if pattern.regex is None:
        return glob_regex(pattern.pattern)
    text = pattern.regex.pattern
    if re.search(r"\(\?[=!<]|\(\?P=|\\[1-9]", text):
        raise ValueError(
            f"device pattern {pattern.pattern!r}: lookaround and back-references are not "
            "supported by Telegraf's Go regular expressions; expected a plain regex"
        )
    return f"^(?:{text})$"


def node_inputs(node: Node, sensors: Mapping[str, float] | None) -> dict[str, float | None]:
    """Input name -> its own interval (None: the agent's), like `reader.enable` picks sensors:
    no `sensors:` section means every node sensor; role inputs follow the node's roles."""
    if sensors is not None:
        # ceph_cluster is our root-node poller; Telegraf has no separate input for it
        unknown = sorted(set(sensors) - set(INPUT_MEASUREMENTS) - set(POLLER_INTERVALS))
        if unknown:
            known = ", ".join(
                [*INPUT_MEASUREMENTS, *(set(POLLER_INTERVALS) - set(INPUT_MEASUREMENTS))]
            )
            raise ValueError(f"sensors: unknown sensor(s) {', '.join(unknown)}; known: {known}")
        chosen = [n for n in (*NODE_INPUTS, "procstat") if n in sensors]
    else:
        chosen = [*NODE_INPUTS, "procstat"]
    if not procstat_for_roles(node.roles) and "procstat" in chosen:
        chosen.remove("procstat")
    if RABBITMQ_ROLE in node.roles:
        chosen.append("rabbitmq")
    if any(r in CEPH_DAEMON_ROLES for r in node.roles):
        chosen.append("ceph")
    return {name: (sensors or {}).get(name, DEFAULT_INTERVALS.get(name)) for name in chosen}


def _fieldinclude(measurements: tuple[str, ...]) -> list[str]:
    names = {f for m in measurements for f in schema.get(m).fields}
    return sorted(names)


def _input_tables(name: str, node: Node, interval: float | None, rabbitmq_url: str) -> list[dict]:
    base: dict[str, Any] = {} if interval is None else {"interval": duration(interval, name)}
    base.update(INPUT_OPTIONS.get(name, {}))
    if name == "rabbitmq":
        base["url"] = rabbitmq_url
    fields = _fieldinclude(INPUT_MEASUREMENTS[name])
    if fields:  # ceph's fields are open-ended (one per perf counter)
        base["fieldinclude"] = fields
    if name != "procstat":
        return [base]
    return [{m.kind: m.regex, **base} for m in procstat_for_roles(node.roles)]


def _processors(node: Node) -> dict[str, list[dict]]:
    rename = {"order": 1, "replace": [{"tag": old, "dest": new} for old, new in TAG_RENAMES]}
    out: dict[str, list[dict]] = {"rename": [rename]}
    if node.device_patterns:
        # Later entries overwrite earlier ones: reversed, the first matching pattern wins.
        tags = [
            {"key": schema.TAG_DEVICE, "pattern": device_regex(p), "replacement": p.role,
             "result_key": schema.TAG_DEVICE_ROLE}
            for p in reversed(node.device_patterns)
        ]  # fmt: skip
        out["regex"] = [{"order": 2, "namepass": ["diskio"], "tags": tags}]
    return out


def influx_output(
    url: str,
    database: str,
    *,
    v2: bool = False,
    organization: str = "",
    token_env: str = "INFLUX_TOKEN",
    username: str | None = None,
    password_env: str | None = None,
    retention_policy: str | None = None,
) -> dict[str, list[dict]]:
    """`[[outputs.influxdb]]` (v1 API), or `[[outputs.influxdb_v2]]` with bucket = database.
    Secrets stay in the agent's environment (`${VAR}`), never in the file."""
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(f"--influx-url: expected http(s)://host:port, got {url!r}")
    common = {"urls": [url], "content_encoding": "gzip"}
    if v2:
        out = {**common, "token": f"${{{token_env}}}", "organization": organization}
        return {"influxdb_v2": [{**out, "bucket": database}]}
    out = {**common, "database": database, "skip_database_creation": True}
    if retention_policy:
        out["retention_policy"] = retention_policy
    if username:
        out["username"] = username
        if password_env:
            out["password"] = f"${{{password_env}}}"
    return {"influxdb": [out]}


def node_config(
    node: Node,
    outputs: dict[str, list[dict]],
    *,
    interval: float = 1.0,
    sensors: Mapping[str, float] | None = None,
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL,
) -> dict[str, Any]:
    """The whole telegraf.conf of one node, as the TOML document's tables."""
    flush = max(10.0, interval)  # batch ~10 samples per write; jitter spreads big clusters
    inputs = {
        name: _input_tables(name, node, own, rabbitmq_url)
        for name, own in node_inputs(node, sensors).items()
    }
    return {
        "global_tags": {schema.TAG_ROLE: role_tag(node.roles)},
        "agent": {
            "hostname": node.name,
            "omit_hostname": False,
            "interval": duration(interval),
            "round_interval": True,
            "collection_jitter": "0s",
            "flush_interval": duration(flush, "flush interval"),
            "flush_jitter": duration(flush / 2, "flush jitter"),
            "metric_batch_size": 5000,
            "metric_buffer_limit": 100000,
        },
        "inputs": inputs,
        "processors": _processors(node),
        "outputs": outputs,
    }


def _dir_name(node: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._:@\-\[\]]", "_", node)
    return "_" + safe if safe.startswith(".") else safe


def write_configs(
    inventory: Inventory,
    out_dir: Path,
    *,
    influx_url: str,
    database: str,
    interval: float = 1.0,
    v2: bool = False,
    organization: str = "",
    token_env: str = "INFLUX_TOKEN",
    sensors: Mapping[str, float] | None = None,
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL,
) -> list[Path]:
    """Write OUT/<node>/telegraf.conf for every node; everything is checked before writing."""
    section = inventory.config.influx
    outputs = influx_output(
        influx_url, database, v2=v2, organization=organization, token_env=token_env,
        username=section.username, password_env=section.password_env,
        retention_policy=section.retention_policy,
    )  # fmt: skip
    docs: dict[Path, str] = {}
    for node in inventory:
        try:
            conf = node_config(
                node, outputs, interval=interval, sensors=sensors, rabbitmq_url=rabbitmq_url
            )
        except ValueError as e:
            raise InventoryError(f"{inventory.source}: node {node.name!r}: {e}") from None
        path = out_dir / _dir_name(node.name) / CONFIG_NAME
        if path in docs:
            raise InventoryError(f"{inventory.source}: two nodes map to the directory {path}")
        head = (
            f"# Telegraf agent for node {node.name!r} (roles: {', '.join(node.roles)}),\n"
            f"# generated from {inventory.source} by `collector telegraf-config`. Regenerate,"
            " don't edit.\n\n"
        )
        docs[path] = head + dumps(conf)
    for path, text in docs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(docs)


@click.command("telegraf-config")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Directory for OUT/<node>/telegraf.conf.",
)  # fmt: skip
@click.option(
    "--influx-url", envvar="WALLY_INFLUX_URL",
    help="InfluxDB the agents write to [default: the config's influx.url].",
)  # fmt: skip
@click.option(
    "--database", envvar="WALLY_INFLUX_DATABASE", help="[default: the config's influx.database]"
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Agent interval, seconds."
)
@click.option("--v2", is_flag=True, help="Write with outputs.influxdb_v2 (bucket = database).")
@click.option("--org", "organization", default="", help="InfluxDB 2 organization (--v2).")
@click.option(
    "--token-env", default=None, help="Env var holding the v2 token on the node [default: "
    "influx.token_env or INFLUX_TOKEN].",
)  # fmt: skip
@click.option("--rabbitmq-url", default=DEFAULT_RABBITMQ_URL, show_default=True)
def telegraf_config_command(
    config: Path,
    out_dir: Path,
    influx_url: str | None,
    database: str | None,
    interval: float,
    v2: bool,
    organization: str,
    token_env: str | None,
    rabbitmq_url: str,
) -> None:
    """Write one telegraf.conf per node that produces the schema our SSH sensors write.

    For clusters too big to poll over SSH: copy OUT/<node>/telegraf.conf to each node.
    Tags node/role/device match our sensors; see docs/telegraf.md.

    \b
    Example:
      collector telegraf-config lab.yaml --out telegraf/ --influx-url http://10.0.0.5:8086
      collector telegraf-config lab.yaml --out tg/ --v2 --org lab --influx-url http://db:8086
    """
    try:
        inventory = load_inventory(config, check_files=False)
        sensors = configured_intervals(inventory)
        url = influx_url or inventory.config.influx.url
        if not url:
            raise click.UsageError(
                "no InfluxDB URL: give --influx-url or influx.url in the config (agents on the "
                "nodes cannot reach the embedded database, which listens on loopback)"
            )
        paths = write_configs(
            inventory, out_dir, influx_url=url,
            database=database or inventory.config.influx.database, interval=interval, v2=v2,
            organization=organization,
            token_env=token_env or inventory.config.influx.token_env or "INFLUX_TOKEN",
            sensors=sensors, rabbitmq_url=rabbitmq_url,
        )  # fmt: skip
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        remote = [n.name for n in inventory if not n.is_local]
        if remote:
            click.echo(f"warning: {url} is a loopback address; agents on {', '.join(remote[:3])}"
                       f"{' ...' if len(remote) > 3 else ''} cannot reach it", err=True)  # fmt: skip
    table = Table(title=f"{len(paths)} Telegraf config(s) in {out_dir}")
    for col in ("node", "role", "role inputs", "file"):
        table.add_column(col, overflow="fold")
    for node, path in zip(inventory, paths, strict=True):
        extra = ", ".join(i for i in node_inputs(node, sensors) if i not in NODE_INPUTS)
        table.add_row(node.name, role_tag(node.roles), extra, str(path.relative_to(out_dir)))
    Console().print(table)

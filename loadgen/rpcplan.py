"""RPC campaigns in a plan: the `rpc:` section, its templates, sweeps and filters.

The lab config's top-level `rpc:` section names the broker once and lists campaigns. A
campaign sweeps agent counts and load parameters like ombt-orchestrator did, either as a
cartesian product or incrementally (agents are added step by step), drops combinations
its filters reject (`servers <= clients`), and compiles to `RpcIteration`s that
`loadgen run` executes after the fio suites. Templates give the defaults of the OpenStack
"massively distributed RPC" test plan's cases:

- tc1, one large target: rpc-call on one topic, clients grow, then servers (incremental);
- tc2, many targets: one client and one server per topic, topics grow;
- tc3, one large fanout: one client fans out to a growing number of servers;
- tc4, many fanouts: one client and two servers per topic, topics grow.

    rpc:
      broker:
        url: rabbit://127.0.0.1:5672/
        user: wally
        password_env: WALLY_RABBIT_PASSWORD     # or password_file (default: guest)
      campaigns:
        - template: tc1
          clients: [1, 2, 4]
          calls: 500

Agents run where the lab's nodes say: senders (RPC clients, notifiers) round-robin on the
nodes with role `rpc-client`, receivers (RPC servers, listeners) on those with role
`rpc-server`, over SSH (`loadgen.rpc.nodes`); a side without such nodes, and the `local`
node, run local processes. `rpc.agents` says which Python runs them on the nodes and how
far apart the clocks of a sender's and a receiver's node may be (one-way latency):

    rpc:
      agents:
        python: python3                      # needs oslo.messaging and hdrhistogram
        node_python: {old-node: /opt/venv/bin/python}
        max_clock_skew: 0.001                # seconds; refuse one-way tests above

Errors name the file, line and key path, all errors at once, like the fio plan.
"""

from __future__ import annotations

import itertools
import operator
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich import box
from rich.table import Table

from collector.influx import read_secret
from collector.inventory import LOCAL, Inventory, Node, _resolve_path
from loadgen.plan import (
    Name,
    PlanError,
    Size,
    _axis,
    _listify,
    _Strict,
    format_duration,
    format_size,
    parse_duration,
)
from loadgen.rpc.controller import RpcTestError, RpcTestSpec

TestType = Literal["rpc-call", "rpc-cast", "rpc-fanout", "notify"]
Count = Field(ge=1, le=10_000)
# Agent start (oslo.messaging import, broker connection), roll call and drain per iteration.
OVERHEAD_S = 6.0
# What a closed-loop message costs at least, for the ETA only.
EST_MSG_S = 0.003
# Sweep axes, outermost first: clients vary fastest (the notebook plots against them).
AXES = ("test_type", "length", "rate", "topics", "servers", "clients")
AGENT_AXES = ("topics", "servers", "clients")


# --- filters -------------------------------------------------------------------------

_OPS = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}
_FILTER_RE = re.compile(r"^\s*(\w+)\s*(<=|>=|==|!=|<|>)\s*(\w+)\s*$")
FILTER_TERMS = ("clients", "servers", "topics", "length")


@dataclass(frozen=True)
class Filter:
    """`servers <= clients`: keeps a combination when the comparison holds (totals)."""

    text: str
    left: str | int
    op: str
    right: str | int

    def keep(self, values: dict[str, Any]) -> bool:
        def value(term: str | int) -> Any:
            return values[term] if isinstance(term, str) else term

        return _OPS[self.op](value(self.left), value(self.right))


def parse_filter(text: Any) -> Filter:
    expected = (
        f"expected a comparison like 'servers <= clients': a term ({', '.join(FILTER_TERMS)} "
        f"or a whole number), one of {' '.join(_OPS)}, a term"
    )
    m = _FILTER_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{expected}; got {text!r}")
    terms: list[str | int] = []
    for raw in (m.group(1), m.group(3)):
        if raw.isdigit():
            terms.append(int(raw))
        elif raw in FILTER_TERMS:
            terms.append(raw)
        else:
            raise ValueError(f"{expected}; unknown term {raw!r} in {text!r}")
    return Filter(text.strip(), terms[0], m.group(2), terms[1])


# --- the section ---------------------------------------------------------------------


class BrokerSettings(BaseModel):
    """Where the bus is and how to log in; the password never goes into plans or records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="oslo.messaging transport URL, rabbit://host:port/vhost")
    user: str | None = Field(None, description="overrides the URL's user")
    password_env: str | None = None
    password_file: str | None = None
    driver: Literal["rabbit"] = "rabbit"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "rabbit" or not parts.hostname:
            raise ValueError(f"expected rabbit://host:port/vhost, got {value!r}")
        return value

    @field_validator("password_file")
    @classmethod
    def _file_exists(cls, value: str | None, info: Any) -> str | None:
        return _resolve_path(value, info, must_exist=True)

    @model_validator(mode="after")
    def _one_source(self) -> BrokerSettings:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and urlsplit(self.url).password:
            raise ValueError("the URL already has a password; drop it or password_env/_file")
        return self

    @property
    def safe_url(self) -> str:
        """The URL without any password, for plans, records and messages."""
        parts = urlsplit(self.url)
        user = self.user or parts.username
        host = parts.hostname or ""
        netloc = f"{user}@{host}" if user else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))

    def resolved_url(self) -> str:
        """The URL agents connect with: user and password from the settings filled in."""
        parts = urlsplit(self.url)
        secret = read_secret(self.password_env, self.password_file, "rpc.broker password")
        user = self.user or parts.username
        password = secret if secret is not None else parts.password
        if user is None:
            return self.url
        cred = quote(user, safe="")
        if password is not None:
            cred += ":" + quote(password, safe="")
        netloc = f"{cred}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


Template = Literal["tc1", "tc2", "tc3", "tc4"]
TEMPLATES: dict[str, dict[str, Any]] = {
    "tc1": {
        "test_type": ["rpc-call"],
        "topics": [1],
        "clients": [1, 2, 4, 8],
        "servers": [1, 2],
        "sweep": "incremental",
        "filters": ["servers <= clients"],
    },
    "tc2": {
        "test_type": ["rpc-call"],
        "topics": [1, 2, 4, 8],
        "clients": [1],
        "servers": [1],
        "per_topic": True,
    },
    "tc3": {"test_type": ["rpc-fanout"], "topics": [1], "clients": [1], "servers": [1, 2, 4, 8]},
    "tc4": {
        "test_type": ["rpc-fanout"],
        "topics": [1, 2, 4],
        "clients": [1],
        "servers": [2],
        "per_topic": True,
    },
}


def _duration_s(value: Any) -> Any:
    return None if value is None else parse_duration(value)


class Campaign(_Strict):
    """One entry of `rpc.campaigns`. Keys given here override the template's."""

    name: Name | None = Field(None, description="default: the template's name, or `rpc`")
    template: Template | None = None
    test_type: _axis(TestType) | None = None
    clients: _axis(int) | None = None
    servers: _axis(int) | None = None
    topics: _axis(int) | None = None
    per_topic: bool | None = Field(None, description="clients/servers count per topic")
    calls: int | None = Field(None, ge=1, description="per client")
    duration: int | str | None = Field(None, description="seconds per iteration, not calls")
    length: _axis(Size) | None = None
    rate: _axis(float) | None = Field(None, description="open loop: msg/s per client")
    pause: float = Field(0.0, ge=0, description="closed loop: seconds after each message")
    timeout: float = Field(10.0, gt=0)
    executor: Literal["threading", "eventlet"] = "threading"
    retry: int | None = Field(None, ge=0)
    sweep: Literal["product", "incremental"] | None = None
    filters: list[str] | None = None

    @field_validator("clients", "servers", "topics")
    @classmethod
    def _counts(cls, value: list[int] | None) -> list[int] | None:
        for v in value or []:
            if v < 1:
                raise ValueError(f"expected whole numbers >= 1, got {v}")
        return value

    @field_validator("rate")
    @classmethod
    def _rates(cls, value: list[float] | None) -> list[float] | None:
        for v in value or []:
            if v <= 0:
                raise ValueError(f"expected messages per second > 0, got {v}")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        seconds = _duration_s(value)
        if seconds is not None and seconds <= 0:
            raise ValueError("expected a positive duration (at least 1 s)")
        return seconds

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, value: Any) -> Any:
        value = _listify(value) if value is not None else None
        for text in value or []:
            parse_filter(text)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Campaign:
        if self.calls is not None and self.duration is not None:
            raise ValueError("give calls (per client) or duration, not both")
        return self


class AgentSettings(BaseModel):
    """How agents run on the `rpc-client`/`rpc-server` nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str = Field("python3", description="interpreter with oslo.messaging and hdrh")
    node_python: dict[str, str] = Field(
        default_factory=dict, description="node name -> interpreter, where it differs"
    )
    max_clock_skew: float = Field(
        0.001,
        ge=0,
        description="seconds two nodes' clocks may differ by when one-way latency is measured"
        " between them (rpc-cast, rpc-fanout, notify); above it the test is refused",
    )

    def python_on(self, node: str) -> str:
        return self.node_python.get(node, self.python)

    def __hash__(self) -> int:
        return hash((self.python, tuple(sorted(self.node_python.items())), self.max_clock_skew))


CLIENT_ROLE, SERVER_ROLE = "rpc-client", "rpc-server"


class RpcSection(_Strict):
    """The `rpc:` section: the broker, where agents run, and campaigns that sweep the load."""

    broker: BrokerSettings
    agents: AgentSettings = Field(default_factory=AgentSettings)
    campaigns: list[Campaign] = Field(min_length=1)


# --- compiled iterations -------------------------------------------------------------


@dataclass(frozen=True)
class RpcIteration:
    """One RPC test: all its agents run at once against the broker. `client_nodes` and
    `server_nodes` are the nodes senders and receivers are spread over (empty: local)."""

    index: int
    name: str
    campaign: str
    template: str | None
    broker: BrokerSettings
    test_type: str
    clients: int
    servers: int
    topics: int
    calls: int | None
    duration: int | None
    length: int
    rate: float | None
    pause: float
    timeout: float
    executor: str
    retry: int | None
    # Not `nodes`: those are the fio nodes the runner prepares; agents need none of that.
    nodes: tuple[str, ...] = ()
    client_nodes: tuple[str, ...] = ()
    server_nodes: tuple[str, ...] = ()
    agents: AgentSettings = field(default_factory=AgentSettings)

    kind = "rpc"

    @property
    def one_way(self) -> bool:
        """Whether the test's main latency is one-way (receiver clock minus sender stamp)."""
        return self.test_type != "rpc-call"

    @property
    def expected_duration(self) -> float:
        if self.duration:
            load = float(self.duration)
        elif self.rate:
            load = self.calls / self.rate
        else:
            load = self.calls * (self.pause + EST_MSG_S)
        return load + OVERHEAD_S

    def spec(self, url: str, run: str) -> RpcTestSpec:
        """The controller's input; `url` is the broker URL with credentials."""
        return RpcTestSpec(
            url=url,
            test_type=self.test_type,
            clients=self.clients,
            servers=self.servers,
            topics=self.topics,
            calls=self.calls,
            duration=self.duration,
            length=self.length,
            executor=self.executor,
            timeout=self.timeout,
            pause=self.pause,
            rate=self.rate,
            retry=self.retry,
            run=run,
            test=self.name,
        )

    def params(self) -> dict[str, Any]:
        """The load's parameters as written to the test record (ombt-orchestrator's names
        where they exist, so legacy and new campaigns read alike)."""
        return {
            "call_type": self.test_type,
            "nbr_clients": self.clients,
            "nbr_servers": self.servers,
            "nbr_topics": self.topics,
            "nbr_calls": self.calls,
            "duration": self.duration,
            "length": self.length,
            "rate": self.rate,
            "pause": self.pause,
            "timeout": self.timeout,
            "executor": self.executor,
            "driver": self.broker.driver,
            "broker": self.broker.safe_url,
            "campaign": self.campaign,
            "template": self.template,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "name": self.name,
            "campaign": self.campaign,
            "nodes": list(self.nodes),
            "client_nodes": list(self.client_nodes),
            "server_nodes": list(self.server_nodes),
            "params": self.params(),
            "expected_duration_s": self.expected_duration,
        }


def iteration_name(campaign: str, v: dict[str, Any]) -> str:
    """`tc1-rpc-call-c4-s2`; `-t3` for topics, `-l4k` for a length, `-r100` for a rate."""
    parts = [campaign, v["test_type"], f"c{v['clients']}", f"s{v['servers']}"]
    if v["topics"] > 1:
        parts.append(f"t{v['topics']}")
    if v["length"] != DEFAULT_LENGTH:
        parts.append(f"l{format_size(v['length'])}")
    if v["rate"] is not None:
        parts.append(f"r{v['rate']:g}")
    return "-".join(parts)


DEFAULT_LENGTH = 1024


def _combinations(c: dict[str, Any], where: Any, errors: list[str]) -> list[dict[str, Any]]:
    """Every combination of the campaign's axes, in run order, before filters."""
    outer = ("test_type", "length", "rate")
    if c["sweep"] == "product":
        return [
            dict(zip(AXES, values, strict=True))
            for values in itertools.product(*(c[a] for a in AXES))
        ]
    for axis in AGENT_AXES:
        if c[axis] != sorted(c[axis]):
            errors.append(
                where(
                    axis,
                    f"an incremental sweep adds agents: expected increasing values, got {c[axis]}",
                )
            )
            return []
    steps = max(len(c[a]) for a in AGENT_AXES)
    agents = [{a: c[a][min(k, len(c[a]) - 1)] for a in AGENT_AXES} for k in range(steps)]
    return [
        {**dict(zip(outer, values, strict=True)), **step}
        for values in itertools.product(*(c[a] for a in outer))
        for step in agents
    ]


def compile_rpc(inventory: Inventory) -> list[RpcIteration]:
    """The `rpc:` section's campaigns expanded into iterations (none without the section).

    All problems are reported together in one PlanError naming file:line and key path.
    """
    section = inventory.section("rpc", RpcSection)
    if section is None:
        return []
    errors: list[str] = []
    known = {n.name for n in inventory}
    for node in section.agents.node_python:
        if node not in known:
            errors.append(
                str(
                    inventory.error(
                        ("rpc", "agents", "node_python", node),
                        f"no node named {node!r}; known: {', '.join(sorted(known))}",
                    )
                )
            )
    pools = {
        "client_nodes": tuple(n.name for n in inventory.nodes_with_role(CLIENT_ROLE)),
        "server_nodes": tuple(n.name for n in inventory.nodes_with_role(SERVER_ROLE)),
        "agents": section.agents,
    }
    out: list[RpcIteration] = []
    seen: dict[str, int] = {}
    for i, camp in enumerate(section.campaigns):

        def where(key: str, message: str, i: int = i) -> str:
            return str(inventory.error(("rpc", "campaigns", i, key), message))

        name = camp.name or camp.template or "rpc"
        if name in seen:
            errors.append(
                where(
                    "name",
                    f"campaign name {name!r} is already used by campaigns[{seen[name]}]; "
                    "expected unique names (set `name:`)",
                )
            )
            continue
        seen[name] = i
        out += _compile_campaign(camp, name, section.broker, pools, where, errors)
    if errors:
        head = f"invalid rpc plan ({len(errors)} error{'s' * (len(errors) > 1)}):"
        raise PlanError("\n".join([head, *("  " + e for e in errors)]))
    return out


def _compile_campaign(
    camp: Campaign,
    name: str,
    broker: BrokerSettings,
    pools: dict[str, Any],
    where: Any,
    errors: list[str],
) -> list[RpcIteration]:
    n_errors = len(errors)
    given = camp.model_dump(exclude_none=True, exclude_unset=True)
    c: dict[str, Any] = {
        "test_type": ["rpc-call"],
        "topics": [1],
        "length": [DEFAULT_LENGTH],
        "rate": [None],
        "per_topic": False,
        "sweep": "product",
        "filters": [],
        "pause": camp.pause,
        "timeout": camp.timeout,
        "executor": camp.executor,
        **(TEMPLATES[camp.template] if camp.template else {}),
        **given,
    }
    for axis in ("clients", "servers"):
        if axis not in c:
            errors.append(where(axis, f"expected {axis}: [N, ...] (or a template)"))
    if "clients" not in c or "servers" not in c:
        return []
    calls = c.get("calls")
    duration = c.get("duration")
    if calls is None and duration is None:
        calls = 100
    filters = [parse_filter(f) for f in c["filters"]]
    out: list[RpcIteration] = []
    names: set[str] = set()
    for v in _combinations(c, where, errors):
        if c["per_topic"]:
            v["clients"] *= v["topics"]
            v["servers"] *= v["topics"]
        if not all(f.keep(v) for f in filters):
            continue
        it_name = iteration_name(name, v)
        if it_name in names:
            continue
        names.add(it_name)
        it = RpcIteration(
            index=0,
            name=it_name,
            campaign=name,
            template=camp.template,
            broker=broker,
            calls=calls,
            duration=duration,
            pause=c["pause"],
            timeout=c["timeout"],
            executor=c["executor"],
            retry=c.get("retry"),
            **pools,
            **v,
        )
        try:
            it.spec(broker.safe_url, "check").validate()
        except RpcTestError as exc:
            errors.append(
                where("topics", f"{it_name}: {exc}; add a filter such as 'topics <= servers'")
            )
            return []
        out.append(it)
    if not out and len(errors) == n_errors:
        errors.append(where("filters", "the filters reject every combination: nothing would run"))
    return out


def rpc_table(iterations: list[RpcIteration], total_s: float | None = None) -> Table:
    """One row per RPC iteration: type, agents, load and expected duration."""
    table = Table(title="RPC campaigns", show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ("#", "iteration", "type", "clients", "servers", "topics", "load", "length", "est.")
    for col in cols:
        table.add_column(col, justify="left" if col in ("iteration", "type", "load") else "right")
    table.columns[1].footer = f"{len(iterations)} iterations"
    total = sum(it.expected_duration for it in iterations) if total_s is None else total_s
    table.columns[-1].footer = format_duration(total)
    brokers: dict[str, str] = {}
    for it in iterations:
        bound = f"{it.calls} calls" if it.calls else f"{it.duration}s"
        model = f"open {it.rate:g}/s" if it.rate else f"closed pause {it.pause:g}s"
        table.add_row(
            str(it.index),
            it.name,
            it.test_type,
            str(it.clients),
            str(it.servers),
            str(it.topics),
            f"{bound}, {model}",
            format_size(it.length) if it.length else "0",
            format_duration(it.expected_duration),
        )
        brokers.setdefault(it.campaign, f"{it.campaign}: {it.broker.safe_url} ({it.broker.driver})")
    if iterations:
        it = iterations[0]
        where = [
            f"{side} on {', '.join(nodes) or 'the local machine'}"
            for side, nodes in (("senders", it.client_nodes), ("receivers", it.server_nodes))
        ]
        brokers["agents"] = "agents: " + "; ".join(where)
    table.caption = "\n".join(brokers.values())
    return table


def watched_nodes(inventory: Inventory, plan: list[Any]) -> list[Node]:
    """The nodes the collector watches during a run. Agents of a side without nodes run on
    this machine, which no `rpc-*` role marks: its inventory node (a `local` one added when
    the lab has none) also gets those roles, so procstat follows the agents there too."""
    here = {
        role
        for it in plan
        if isinstance(it, RpcIteration)
        for role, nodes in ((CLIENT_ROLE, it.client_nodes), (SERVER_ROLE, it.server_nodes))
        if not nodes
    }
    nodes = list(inventory)
    if not here:
        return nodes
    if not any(n.is_local for n in nodes):
        return [*nodes, Node(LOCAL, tuple(sorted(here)))]
    return [
        replace(n, roles=(*n.roles, *sorted(here - set(n.roles)))) if n.is_local else n
        for n in nodes
    ]


__all__ = [
    "AgentSettings",
    "BrokerSettings",
    "Campaign",
    "RpcIteration",
    "RpcSection",
    "compile_rpc",
    "parse_filter",
    "rpc_table",
    "watched_nodes",
]

"""The lab config: which nodes exist, how to reach them, what roles they and their devices play.

The YAML file is validated with pydantic; every error names the file, the key path
(`nodes[2].uri`) and the line it came from, because a typo in a 40-node config is otherwise
a needle in a haystack. Top-level sections this module does not know (`plan`, `fio`, ...)
are kept as they are and validated by their owners through `Inventory.section`, so other
packages add sections without editing this one.

Everything that can be checked without touching the network is checked here, before
anything runs: URIs parse, key files and known_hosts files exist, regexes compile, SSH
options are ones asyncssh knows.
"""

from __future__ import annotations

import fnmatch
import inspect
import ipaddress
import os
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncssh
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

LOCAL = "local"
DEFAULT_SSH_PORT = 22

_ROLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.\-]*[A-Za-z0-9_])?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*\$?$")
_URI_EXPECTED = "expected 'local' or an SSH URI user@host[:port] (IPv6 as [addr]:port)"


class InventoryError(ValueError):
    """A lab config that cannot be used; the message says where and what was expected."""


# --- SSH URIs ------------------------------------------------------------------------


@dataclass(frozen=True)
class SshUri:
    user: str | None
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"

    @property
    def address(self) -> str:
        """host[:port] without the user: the default node name."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_ssh_uri(text: str) -> SshUri:
    """Parse `[ssh://][user@]host[:port]`; IPv6 hosts go in brackets when a port follows."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{_URI_EXPECTED}, got {text!r}")
    rest = text.strip()
    rest = rest.removeprefix("ssh://")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not _USER_RE.match(user):
            raise ValueError(f"{_URI_EXPECTED}, got {text!r}: bad user name {user!r}")
    port_text: str | None = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise ValueError(f"{_URI_EXPECTED}, got {text!r}: missing ']'")
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"{_URI_EXPECTED}, got {text!r}: junk after ']'")
            port_text = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{_URI_EXPECTED}, got {text!r}: {host!r} is not an IPv6 address"
            ) from None
    elif rest.count(":") > 1:
        # A bare IPv6 address without a port.
        host = rest
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{_URI_EXPECTED}, got {text!r}: put IPv6 addresses in brackets"
            ) from None
    else:
        host, sep, port_text = rest.partition(":")
        if not sep:
            port_text = None
        if not _HOST_RE.match(host):
            raise ValueError(f"{_URI_EXPECTED}, got {text!r}: bad host {host!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{_URI_EXPECTED}, got {text!r}: port must be 1-65535")
        port = int(port_text)
    return SshUri(user or None, host, port)


# --- device role patterns ------------------------------------------------------------


@dataclass(frozen=True)
class DevicePattern:
    """`sd[b-z]` (glob) or `re:nvme\\d+n1` (regex, full match) -> device role."""

    pattern: str
    role: str
    regex: re.Pattern[str] | None = None

    def matches(self, device: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(device) is not None
        return fnmatch.fnmatchcase(device, self.pattern)


def _compile_pattern(pattern: str, role: str) -> DevicePattern:
    if pattern.startswith("re:"):
        try:
            return DevicePattern(pattern, role, re.compile(pattern[3:]))
        except re.error as exc:
            raise ValueError(f"bad regular expression {pattern[3:]!r}: {exc}") from None
    return DevicePattern(pattern, role)


def _compile_patterns(raw: Mapping[str, str]) -> tuple[DevicePattern, ...]:
    return tuple(_compile_pattern(p, r) for p, r in raw.items())


def _check_role(role: str) -> str:
    if not _ROLE_RE.match(role):
        raise ValueError(
            f"expected a role name (letters, digits, '_', '.', '-'; no spaces or commas), got {role!r}"
        )
    return role


def _check_pattern(pattern: str) -> str:
    _compile_pattern(pattern, "")
    return pattern


RoleName = Annotated[str, AfterValidator(_check_role)]
DevicePatternText = Annotated[str, AfterValidator(_check_pattern)]
# `{"sd[b-z]": osd-data, "re:nvme\\d+n1": osd-db}`: glob, or regex after `re:`.
PatternMap = dict[DevicePatternText, RoleName]


# --- the pydantic models (what the YAML may say) --------------------------------------


def _ssh_option_names() -> frozenset[str]:
    params = inspect.signature(asyncssh.SSHClientConnectionOptions.prepare).parameters
    return frozenset(p for p in params if p not in ("self", "last_config", "config", "args"))


_SSH_OPTIONS = _ssh_option_names()
# Options the inventory sets itself from dedicated keys; setting them twice would be ambiguous.
_RESERVED_SSH_OPTIONS = frozenset(
    {"username", "port", "client_keys", "known_hosts", "agent_path", "connect_timeout"}
)


def _resolve_path(value: str | None, info: ValidationInfo, *, must_exist: bool) -> str | None:
    """Expand `~` and make relative paths relative to the config file's directory."""
    if value is None:
        return None
    ctx = info.context or {}
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = Path(ctx.get("base_dir", ".")) / path
    if must_exist and ctx.get("check_files", True) and not path.is_file():
        raise ValueError(f"file {str(path)!r} does not exist (or is not a regular file)")
    return str(path)


def _check_ssh_options(opts: dict[str, Any]) -> dict[str, Any]:
    for name in opts:
        if name in _RESERVED_SSH_OPTIONS:
            raise ValueError(f"{name!r} has its own key in the config; set it there")
        if name not in _SSH_OPTIONS:
            raise ValueError(
                f"unknown SSH option {name!r}; expected an asyncssh connect option "
                "such as keepalive_interval, compression_algs, login_timeout"
            )
    return opts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SshSettings(_Strict):
    """Connection settings; `defaults` sets them for all nodes, a node may override each."""

    user: str | None = None
    key_file: str | None = Field(None, description="private key; default: agent + ~/.ssh keys")
    known_hosts: str | None = None
    host_key_checking: bool | None = None
    use_agent: bool | None = None
    ssh_config: str | None = Field(None, description="OpenSSH client config to read")
    connect_timeout: float | None = Field(None, gt=0)
    ssh_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("key_file", "known_hosts", "ssh_config")
    @classmethod
    def _files_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_path(value, info, must_exist=True)

    @field_validator("ssh_options")
    @classmethod
    def _known_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_ssh_options(value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER_RE.match(value):
            raise ValueError(f"expected a user name, got {value!r}")
        return value


class Defaults(SshSettings):
    max_clock_skew: float = Field(
        0.5, ge=0, description="seconds; a node further off refuses the run"
    )


class NodeSpec(SshSettings):
    uri: str
    name: str | None = None
    roles: list[RoleName] = Field(min_length=1)
    device_roles: PatternMap = Field(default_factory=dict)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if value != LOCAL:
            parse_ssh_uri(value)
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _one_role(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "," in value or "\n" in value):
            raise ValueError(f"expected a node name without commas or newlines, got {value!r}")
        return value


class InfluxSection(_Strict):
    """Where points go. No url means the embedded private influxd.

    Secrets are named by env var or file, never written in the config; the InfluxDB client
    reads them (`collector.influx.read_secret`) when it connects.
    """

    url: str | None = None
    database: str = "wally"
    retention_policy: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    # Off by default: a typo in the name must not silently create a second database.
    create_database: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected http(s)://host:port, got {value!r}")
        return value

    @field_validator("password_file", "token_file")
    @classmethod
    def _files_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_path(value, info, must_exist=True)

    @model_validator(mode="after")
    def _one_source(self) -> InfluxSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        return self


class LabConfig(BaseModel):
    """The whole file. Unknown top-level sections are kept for other packages."""

    model_config = ConfigDict(extra="allow")

    defaults: Defaults = Field(default_factory=Defaults)
    nodes: list[NodeSpec] = Field(min_length=1)
    device_roles: dict[RoleName, PatternMap] = Field(
        default_factory=dict, description="node role -> {device pattern: device role}"
    )
    influx: InfluxSection = Field(default_factory=InfluxSection)


# --- resolved nodes ------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node with defaults applied: everything `collector.ssh.connect` needs."""

    name: str
    roles: tuple[str, ...]
    host: str = LOCAL
    port: int = DEFAULT_SSH_PORT
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    host_key_checking: bool = True
    use_agent: bool = True
    ssh_config: str | None = None
    connect_timeout: float = 10.0
    ssh_options: Mapping[str, Any] = field(default_factory=dict)
    device_patterns: tuple[DevicePattern, ...] = ()
    max_clock_skew: float = 0.5

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL

    @property
    def uri(self) -> str:
        if self.is_local:
            return LOCAL
        return str(SshUri(self.user, self.host, self.port))

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def device_role(self, device: str) -> str | None:
        """The first config pattern matching `device`: node patterns first, then by node role."""
        for pat in self.device_patterns:
            if pat.matches(device):
                return pat.role
        return None


def _resolve_node(spec: NodeSpec, cfg: LabConfig) -> Node:
    d = cfg.defaults

    def pick(name: str) -> Any:
        own = getattr(spec, name)
        return own if own is not None else getattr(d, name)

    patterns = list(_compile_patterns(spec.device_roles))
    for role in spec.roles:
        patterns.extend(_compile_patterns(cfg.device_roles.get(role, {})))
    common = {
        "roles": tuple(dict.fromkeys(spec.roles)),
        "device_patterns": tuple(patterns),
        "max_clock_skew": d.max_clock_skew,
    }
    if spec.uri == LOCAL:
        return Node(name=spec.name or LOCAL, **common)
    uri = parse_ssh_uri(spec.uri)
    checking = pick("host_key_checking")
    return Node(
        name=spec.name or uri.address,
        host=uri.host,
        port=uri.port or DEFAULT_SSH_PORT,
        user=uri.user or pick("user"),
        key_file=pick("key_file"),
        known_hosts=pick("known_hosts"),
        host_key_checking=True if checking is None else checking,
        use_agent=pick("use_agent") is not False,
        ssh_config=pick("ssh_config"),
        connect_timeout=pick("connect_timeout") or 10.0,
        ssh_options={**d.ssh_options, **spec.ssh_options},
        **common,
    )


# --- where each key came from in the YAML --------------------------------------------

Path_ = tuple[str, ...]


def _marks(node: yaml.Node, path: Path_, out: dict[Path_, int], source: str) -> None:
    """Record the 1-based line of every key path; reject duplicate keys PyYAML would hide."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            k = str(key.value)
            if k in seen:
                where = format_path((*path, k))
                raise InventoryError(
                    f"{source}:{key.start_mark.line + 1}: {where}: duplicate key {k!r}"
                )
            seen.add(k)
            out[(*path, k)] = key.start_mark.line + 1
            _marks(value, (*path, k), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, (*path, str(i)), out, source)


def format_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the user wrote it: `nodes[2].roles`."""
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


_T = TypeVar("_T", bound=BaseModel)


class Inventory:
    """The validated lab config and its resolved nodes."""

    def __init__(self, config: LabConfig, source: str, lines: dict[Path_, int]) -> None:
        self.config = config
        self.source = source
        self._lines = lines
        self.nodes: tuple[Node, ...] = tuple(_resolve_node(s, config) for s in config.nodes)
        seen: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                raise self.error(
                    ("nodes", i, "name" if config.nodes[i].name else "uri"),
                    f"node name {node.name!r} is already used by nodes[{seen[node.name]}]; "
                    "expected unique names (set `name:`)",
                )
            seen[node.name] = i

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"no node named {name!r} in {self.source}; known: {known}")

    def nodes_with_role(self, role: str) -> list[Node]:
        """Every node carrying `role`, whatever its other roles."""
        return [n for n in self.nodes if role in n.roles]

    def roles(self) -> list[str]:
        return list(dict.fromkeys(r for n in self.nodes for r in n.roles))

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        """Line of the deepest existing prefix of `loc` in the YAML file."""
        parts = tuple(str(p) for p in loc)
        while parts not in self._lines and parts:
            parts = parts[:-1]
        return self._lines.get(parts)

    def error(self, loc: tuple[Any, ...], message: str) -> InventoryError:
        line = self.line_of(loc)
        where = f"{self.source}:{line}" if line else self.source
        return InventoryError(f"{where}: {format_path(loc)}: {message}")

    def section(self, name: str, model: type[_T]) -> _T | None:
        """Validate a top-level section owned by another package, with the same error style."""
        raw = (self.config.model_extra or {}).get(name)
        if raw is None:
            return None
        try:
            return model.model_validate(raw, context={"base_dir": self._base_dir()})
        except ValidationError as exc:
            raise from_validation(
                exc, self.source, self._lines, prefix=(name,), model=model
            ) from None

    def _base_dir(self) -> str:
        p = Path(self.source)
        return str(p.parent) if p.exists() else "."


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model validating the value at `loc`, to list its keys in errors."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            current = info.annotation if info else None
        else:
            # list[X] / dict[str, X] / X | None: step into the element type.
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[-1] if args else None
    args = [a for a in typing.get_args(current) if a is not type(None)]
    if len(args) == 1:
        current = args[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def from_validation(
    exc: ValidationError,
    source: str,
    lines: dict[Path_, int],
    prefix: tuple[Any, ...] = (),
    model: type[BaseModel] = LabConfig,
) -> InventoryError:
    """Every error of a validation as `file:line: key.path: message` lines (plan files
    reuse it with their section's `prefix` and `model`)."""
    probe = Inventory.__new__(Inventory)
    probe.source, probe._lines = source, lines
    messages = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, tuple(err["loc"])[:-1])
            known = ", ".join(owner.model_fields) if owner else ""
            msg = f"unknown key; expected one of: {known}" if known else "unknown key"
        elif "input" in err and err["type"] not in ("missing", "value_error"):
            msg += f" (got {err['input']!r})"
        messages.append(str(probe.error(loc, msg)))
    head = f"invalid lab config {source} ({len(messages)} error{'s' * (len(messages) > 1)}):"
    return InventoryError("\n".join([head, *("  " + m for m in messages)]))


def inventory_from_dict(
    data: Any,
    source: str = "<config>",
    *,
    base_dir: str = ".",
    check_files: bool = True,
    lines: dict[Path_, int] | None = None,
) -> Inventory:
    """Validate already-parsed config data (tests, generated configs)."""
    if not isinstance(data, dict):
        raise InventoryError(f"{source}: expected a mapping at the top level, got {data!r}")
    lines = lines or {}
    try:
        cfg = LabConfig.model_validate(
            data, context={"base_dir": base_dir, "check_files": check_files}
        )
    except ValidationError as exc:
        raise from_validation(exc, source, lines) from None
    return Inventory(cfg, source, lines)


def read_yaml(
    path: str | os.PathLike[str],
    what: str = "lab config",
    error: type[InventoryError] = InventoryError,
) -> tuple[Any, dict[Path_, int]]:
    """Parsed YAML and the 1-based line of every key path, for line-precise errors."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise error(f"cannot read {what} {str(p)!r}: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise error(f"{where}: not valid YAML: {exc}") from None
    lines: dict[Path_, int] = {}
    if root is not None:
        _marks(root, (), lines, str(p))
    return data, lines


def load_inventory(path: str | os.PathLike[str], *, check_files: bool = True) -> Inventory:
    """Read and validate a lab config file; raise InventoryError naming file, key and line."""
    p = Path(path)
    data, lines = read_yaml(p)
    return inventory_from_dict(
        data, str(p), base_dir=str(p.parent), check_files=check_files, lines=lines
    )

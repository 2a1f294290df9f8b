"""Storage test plans: suites of fio load, built-in profiles, and the compiler to iterations.

A plan is the `plan:` section of the lab config (or a file it names with `include:`). It
lists suites; a suite is a profile (data: `loadgen/profiles/NAME.yaml`, or a user's own
profile file) plus parameters (target, size, runtime, sweeps...). Compiling a plan expands
every suite's sweeps into a flat, ordered list of `Iteration`s, each one fio run on every
node of the suite's roles. How the expansion works is documented in docs/fio-tasks.md;
`jobfile.py` turns an iteration into a fio job file.

Everything that can be checked without a node is checked here, and every error names the
file, the line, the key path and what was expected, all errors of a plan at once.
"""

from __future__ import annotations

import functools
import itertools
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from rich import box
from rich.table import Table

from collector.inventory import (
    Inventory,
    InventoryError,
    RoleName,
    format_path,
    from_validation,
    read_yaml,
)

if TYPE_CHECKING:
    from loadgen.rpcplan import RpcIteration

DEFAULT_ROLE = "testnode"
# fio start, file open, JSON write and the SSH round trips around one iteration.
OVERHEAD_S = 3.0
DEFAULT_RUNTIME_S = 60
DEFAULT_RAMP_S = 5
MIXED_RW = frozenset({"rw", "readwrite", "randrw"})
DEFAULT_MIX = 50
# Sweep axes, outermost first: the last one varies fastest (QD sweeps up within one rw/bs).
AXES = ("rw", "bs", "rwmixread", "numjobs", "iodepth", "rate_iops")
QD_SWEEP = "qd_sweep"

# Storage engines of Debian's fio 3.33 that make sense for a block/file/RBD target.
Engine = Literal[
    "libaio",
    "io_uring",
    "psync",
    "sync",
    "pvsync",
    "pvsync2",
    "vsync",
    "posixaio",
    "mmap",
    "sg",
    "null",
    "rbd",
]
RwMode = Literal[
    "read",
    "write",
    "randread",
    "randwrite",
    "rw",
    "readwrite",
    "randrw",
    "trim",
    "randtrim",
    "trimwrite",
]


ENGINES: tuple[str, ...] = typing.get_args(Engine)
RW_MODES: tuple[str, ...] = typing.get_args(RwMode)


class PlanError(InventoryError):
    """A plan that cannot be compiled; the message names file, line, key and expectation."""


# --- values: fio units, durations, text that goes into a job file ---------------------

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"^(\d+)(?:([kmgtp])(?:ib)?)?$", re.IGNORECASE)
_SIZE_EXPECTED = (
    "expected a size in fio units: a whole number with an optional k, m, g, t or p suffix "
    "(powers of 1024), like 4k, 1m, 16m, 10G"
)


def parse_size(value: Any) -> int:
    """Bytes from fio's units (`4k` = 4096, `10G`); KiB/MiB spellings are accepted too."""
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_EXPECTED}; got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{_SIZE_EXPECTED}; got {value!r} (must be positive)")
        return value
    m = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{_SIZE_EXPECTED}; got {value!r}")
    n = int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if n <= 0:
        raise ValueError(f"{_SIZE_EXPECTED}; got {value!r} (must be positive)")
    return n


def format_size(n: int) -> str:
    """The shortest exact fio spelling (4096 -> `4k`), used in job files, names and tags."""
    for unit in ("p", "t", "g", "m", "k"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


_DURATION_RE = re.compile(r"^(\d+)([smh]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: Any) -> int:
    """Whole seconds from `30`, `30s`, `2m`, `1h` (fio's own runtime units)."""
    expected = "expected a duration: whole seconds, or a number with s, m or h (30, 45s, 2m)"
    if isinstance(value, bool):
        raise ValueError(f"{expected}; got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}; got {value!r} (must not be negative)")
        return value
    m = _DURATION_RE.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{expected}; got {value!r}")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _positive_duration(value: int) -> int:
    if value <= 0:
        raise ValueError("expected a positive duration (at least 1 s)")
    return value


# Characters fio's INI reader would treat specially: line breaks end the option, `;` and
# `#` start a comment anywhere on the line, `$` starts an environment/keyword expansion,
# and `=` is the key/value separator (fio splits on the first one; no option we write
# needs one in its value).
_FIO_FORBIDDEN = {
    "\n": "a line break",
    "\r": "a carriage return",
    "\0": "a NUL byte",
    ";": "';' (fio starts a comment there)",
    "#": "'#' (fio starts a comment there)",
    "$": "'$' (fio expands variables there)",
    "=": "'=' (fio's key/value separator)",
}


def check_fio_text(text: str, what: str, *, filename: bool = False) -> str:
    """Reject text that would change the meaning of a job file line; return it unchanged.

    `filename=True` also rejects ':' (fio's separator between several files).
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what}: expected non-empty text, got {text!r}")
    if text != text.strip():
        raise ValueError(f"{what}: leading or trailing spaces would be lost by fio: {text!r}")
    for ch, name in _FIO_FORBIDDEN.items():
        if ch in text:
            raise ValueError(f"{what}: must not contain {name}: {text!r}")
    if filename and ":" in text:
        raise ValueError(f"{what}: must not contain ':' (fio separates file names with it)")
    return text


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            "expected a short name: letters, digits, '_', '.', '-' (at most 64, "
            f"starting with a letter or digit), got {value!r}"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]

# Options the plan sets through its own keys, or that the job file must own for the
# parsers and the runner to work. Value: the plan key to use instead, if any.
OWNED_OPTIONS: dict[str, str | None] = {
    "filename": "target",
    "filename_format": "target",
    "directory": "target",
    "pool": "target",
    "rbdname": "target",
    "clientname": "rbd_client",
    "ioengine": "engine",
    "size": "size",
    "direct": "direct",
    "buffered": "direct",
    "runtime": "runtime",
    "ramp_time": "ramp_time",
    "time_based": "runtime",
    "rw": "rw",
    "readwrite": "rw",
    "bs": "bs",
    "blocksize": "bs",
    "iodepth": "iodepth",
    "numjobs": "numjobs",
    "rwmixread": "rwmixread",
    "rwmixwrite": "rwmixread",
    "rate_iops": "rate_iops",
    "name": None,
    "thread": None,
    "stonewall": None,
    "wait_for_previous": None,
    "group_reporting": None,
    "unified_rw_reporting": None,
    "per_job_logs": None,
    "log_unix_epoch": None,
    "log_avg_msec": None,
    "log_hist_msec": None,
    "log_offset": None,
    "log_prio": None,
    "write_bw_log": None,
    "write_iops_log": None,
    "write_lat_log": None,
    "write_hist_log": None,
    "fadvise_hint": None,
    "output": None,
    "output_format": None,
}
_OPTION_RE = re.compile(r"^[a-z][a-z0-9_]*$")
OptionValue = str | int | float | bool


def fio_option_value(value: OptionValue) -> str:
    """How an option value is written in a job file (booleans as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _check_options(opts: dict[str, OptionValue]) -> dict[str, OptionValue]:
    for name, value in opts.items():
        if not _OPTION_RE.match(name):
            raise ValueError(f"{name!r} is not a fio option name (lowercase letters, digits, _)")
        if name in OWNED_OPTIONS:
            key = OWNED_OPTIONS[name]
            hint = f"; use the suite key `{key}`" if key else "; the job compiler sets it"
            raise ValueError(f"fio option {name!r} cannot be set in options{hint}")
        check_fio_text(fio_option_value(value), f"options.{name}")
    return opts


FioOptions = Annotated[dict[str, OptionValue], AfterValidator(_check_options)]


# --- sweep axes ----------------------------------------------------------------------


def _listify(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _unique(values: list[Any]) -> list[Any]:
    dups = sorted({str(v) for v in values if values.count(v) > 1})
    if dups:
        raise ValueError(f"duplicate values in the sweep: {', '.join(dups)}")
    return values


def _axis(item: Any) -> Any:
    return Annotated[
        list[item], BeforeValidator(_listify), AfterValidator(_unique), Field(min_length=1)
    ]


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Runtime = Annotated[int, BeforeValidator(parse_duration), AfterValidator(_positive_duration)]
IoDepth = Annotated[int, Field(ge=1, le=65536)]
NumJobs = Annotated[int, Field(ge=1, le=4096)]
MixRead = Annotated[int, Field(ge=0, le=100)]
RateIops = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- targets -------------------------------------------------------------------------

NODE_PLACEHOLDER = "{node}"
_RBD_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TARGET_EXPECTED = (
    "expected a file path, a block device /dev/NAME, or an RBD image rbd:POOL/IMAGE "
    "({node} is replaced by the node name)"
)


@dataclass(frozen=True)
class Target:
    """What fio does I/O on; `text` may hold `{node}`, filled in per node by `for_node`."""

    kind: Literal["file", "block", "rbd"]
    text: str
    pool: str = ""
    image: str = ""

    def for_node(self, node: str) -> Target:
        return parse_target(self.text.replace(NODE_PLACEHOLDER, node))

    def resolve(self, base_dir: str) -> str:
        """The file or device path on the node: relative file paths live under `base_dir`."""
        path = PurePosixPath(self.text)
        return str(path if path.is_absolute() else PurePosixPath(base_dir) / path)

    def __str__(self) -> str:
        return self.text


def parse_target(text: str) -> Target:
    """`rbd:pool/image`, `/dev/sdX` or a file path, checked for what fio can take."""
    if not isinstance(text, str):
        raise ValueError(f"{_TARGET_EXPECTED}; got {text!r}")
    probe = text.replace(NODE_PLACEHOLDER, "node")
    if "{" in probe or "}" in probe:
        raise ValueError(f"{_TARGET_EXPECTED}; only the placeholder {{node}} is known: {text!r}")
    if text.startswith("rbd:"):
        pool, sep, image = text[4:].partition("/")
        names_ok = all(_RBD_NAME_RE.match(n) for n in (pool, image.replace("{node}", "node")))
        if not sep or not names_ok or "/" in image:
            raise ValueError(
                f"{_TARGET_EXPECTED}; pool and image names are letters, digits, '_', '.', '-'; "
                f"got {text!r}"
            )
        return Target("rbd", text, pool, image)
    check_fio_text(probe, "a file target", filename=True)
    if PurePosixPath(text).name in ("", ".", ".."):
        raise ValueError(f"{_TARGET_EXPECTED}; {text!r} names a directory, not a file")
    if text.startswith("/dev/"):
        return Target("block", text)
    return Target("file", text)


def _check_target(text: str) -> str:
    parse_target(text)
    return text


# --- profiles (data files) -----------------------------------------------------------


class ProfileGroup(_Strict):
    """One sweep of a profile: the cartesian product of its axes."""

    name: Name | None = Field(None, description="goes into iteration names")
    rw: _axis(RwMode)
    bs: _axis(Size)
    iodepth: _axis(IoDepth) | Literal["qd_sweep"] = Field(
        default_factory=lambda: [1], description="a list, or `qd_sweep` for the profile's"
    )
    numjobs: _axis(NumJobs) | None = None
    rwmixread: _axis(MixRead) | None = None
    rate_iops: _axis(RateIops) | None = None
    direct: bool | None = None
    options: FioOptions = Field(default_factory=dict)


class _RunSettings(_Strict):
    """What a profile defaults and a suite overrides (None: not said here)."""

    runtime: Runtime | None = None
    ramp_time: Duration | None = None
    engine: Engine | None = None
    direct: bool | None = None


class Profile(_RunSettings):
    """A built-in or user profile file: defaults, extra fio options and sweep groups."""

    description: str = ""
    numjobs: NumJobs | None = None
    qd_sweep: _axis(IoDepth) | None = None
    qd_from_osd_count: bool = Field(
        False, description="replace qd_sweep by qd_from_osd_count(n) when n is known"
    )
    options: FioOptions = Field(default_factory=dict)
    groups: list[ProfileGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _sweep_defined(self) -> Profile:
        uses = [i for i, g in enumerate(self.groups) if g.iodepth == QD_SWEEP]
        if uses and self.qd_sweep is None:
            raise ValueError(f"groups {uses} use iodepth: qd_sweep but qd_sweep is not set")
        return self


def qd_from_osd_count(n: int) -> list[int]:
    """QD sweep for a Ceph cluster of `n` OSDs: powers of two up to ~4 I/Os in flight per OSD.

    A healthy OSD saturates at a few outstanding requests, so going far beyond 4 per OSD
    only measures queueing; the top is kept within 16..1024 so small labs still see the knee.
    """
    if n < 1:
        raise ValueError(f"expected a positive OSD count, got {n}")
    top = min(max(1 << (4 * n - 1).bit_length(), 16), 1024)
    return [1 << k for k in range(top.bit_length())]


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with the package (loadgen/profiles/*.yaml)."""
    root = resources.files("loadgen.profiles")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _profile_path(ref: str, base_dir: str) -> Path:
    """A built-in name, or a path (relative to the plan's directory) to a profile file."""
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        if ref not in builtin_profiles():
            raise ValueError(
                f"unknown profile {ref!r}; expected one of the built-in profiles "
                f"({', '.join(builtin_profiles())}) or a path to a profile YAML file"
            )
        return Path(str(resources.files("loadgen.profiles") / f"{ref}.yaml"))
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.is_file():
        raise ValueError(f"profile file {str(path)!r} does not exist")
    return path


def _read_yaml(path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    return read_yaml(path, what="plan file", error=PlanError)


@functools.lru_cache(maxsize=64)
def _load_profile_file(path: Path, mtime_ns: int) -> Profile:
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a profile mapping (groups: ...), got {data!r}")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise PlanError(str(from_validation(exc, str(path), lines, model=Profile))) from None


def load_profile(ref: str, base_dir: str = ".") -> Profile:
    """A profile by built-in name or file path, validated (errors name the profile's lines)."""
    path = _profile_path(ref, base_dir)
    return _load_profile_file(path, path.stat().st_mtime_ns)


def _profile_label(ref: str) -> str:
    return Path(ref).name.removesuffix(".yaml").removesuffix(".yml")


# --- the plan section ----------------------------------------------------------------


class Suite(_RunSettings):
    """One entry of `plan.suites`: a profile plus parameters. Keys given here always win."""

    name: Name | None = Field(None, description="default: the profile's name, or `fio`")
    profile: str | None = Field(None, description="built-in name or profile file path")
    target: Annotated[str, AfterValidator(_check_target)]
    size: Size | None = None
    numjobs: _axis(NumJobs) | None = None
    rw: _axis(RwMode) | None = None
    bs: _axis(Size) | None = None
    iodepth: _axis(IoDepth) | None = None
    rwmixread: _axis(MixRead) | None = None
    rate_iops: _axis(RateIops) | None = None
    roles: Annotated[list[RoleName], BeforeValidator(_listify)] = Field(
        default_factory=lambda: [DEFAULT_ROLE], min_length=1
    )
    prefill: Literal["auto", "force", "skip"] = "auto"
    keep_files: bool = False
    rbd_client: Name = "admin"
    create_image: bool = Field(
        False, description="RBD target: the run creates the image (of `size`) if it is missing"
    )
    options: FioOptions = Field(default_factory=dict)

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                load_profile(value, (info.context or {}).get("base_dir", "."))
            except PlanError as exc:
                raise ValueError(f"profile {value!r} is invalid:\n{exc}") from None
        return value


class PlanSection(_Strict):
    """The `plan:` section: suites inline, or `include: FILE` holding them."""

    include: str | None = None
    suites: list[Suite] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> PlanSection:
        if self.include and self.suites:
            raise ValueError("give either include: FILE or suites:, not both")
        if not self.include and not self.suites:
            raise ValueError("expected suites: [...] (at least one) or include: FILE")
        return self


# --- compiled iterations -------------------------------------------------------------


@dataclass(frozen=True)
class Iteration:
    """One fio run, on every node in `nodes` at the same time."""

    index: int
    name: str
    suite: str
    profile: str | None
    group: str | None
    roles: tuple[str, ...]
    nodes: tuple[str, ...]
    target: Target
    engine: str
    rw: str
    bs: int
    iodepth: int
    numjobs: int
    rwmixread: int | None
    rate_iops: int | None
    size: int | None
    runtime: int
    ramp_time: int
    direct: bool
    prefill: str
    keep_files: bool
    rbd_client: str
    create_image: bool = False
    options: tuple[tuple[str, str], ...] = ()

    @property
    def expected_duration(self) -> float:
        """Seconds for the ETA: fio's ramp and runtime plus the fixed overhead around it."""
        return self.ramp_time + self.runtime + OVERHEAD_S

    def fio_params(self) -> dict[str, Any]:
        """The load's parameters as written to the test record (and shown by `loadgen plan`)."""
        out: dict[str, Any] = {
            "rw": self.rw,
            "bs": format_size(self.bs),
            "iodepth": self.iodepth,
            "numjobs": self.numjobs,
        }
        if self.rwmixread is not None:
            out["rwmixread"] = self.rwmixread
        if self.rate_iops is not None:
            out["rate_iops"] = self.rate_iops
        out.update(
            engine=self.engine,
            direct=int(self.direct),
            target=self.target.text,
            size=format_size(self.size) if self.size else None,
            runtime=self.runtime,
            ramp_time=self.ramp_time,
        )
        out.update(dict(self.options))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "suite": self.suite,
            "profile": self.profile,
            "group": self.group,
            "roles": list(self.roles),
            "nodes": list(self.nodes),
            "params": self.fio_params(),
            "prefill": self.prefill,
            "keep_files": self.keep_files,
            "create_image": self.create_image,
            "expected_duration_s": self.expected_duration,
        }


@dataclass(frozen=True)
class CompiledPlan:
    source: str
    iterations: tuple[Iteration | RpcIteration, ...]

    @property
    def total_duration(self) -> float:
        """Iterations run one after another (synchronously on all their nodes)."""
        return sum(it.expected_duration for it in self.iterations)

    def __iter__(self) -> Iterator[Iteration | RpcIteration]:
        return iter(self.iterations)

    def __len__(self) -> int:
        return len(self.iterations)


def iteration_name(
    suite: str,
    group: str | None,
    rw: str,
    bs: int,
    iodepth: int,
    numjobs: int,
    rwmixread: int | None,
    rate_iops: int | None,
) -> str:
    """`ceph-randwrite-4k-qd16`; `-j4` for several jobs, `-r70` for a mix, `-500iops` for a rate."""
    parts = [suite, *([group] if group else []), rw, format_size(bs), f"qd{iodepth}"]
    if numjobs > 1:
        parts.append(f"j{numjobs}")
    if rwmixread is not None:
        parts.append(f"r{rwmixread}")
    if rate_iops is not None:
        parts.append(f"{rate_iops}iops")
    return "-".join(parts)


# Reports "file:line: key.path: message" for a location inside the plan section.
Where = Callable[[tuple[Any, ...], str], str]


def _where_in_file(path: str, lines: dict[tuple[str, ...], int], prefix: tuple[Any, ...]) -> Where:
    def where(loc: tuple[Any, ...], message: str) -> str:
        parts = tuple(str(p) for p in (*prefix, *loc))
        while parts and parts not in lines:
            parts = parts[:-1]
        line = lines.get(parts)
        return f"{path}{f':{line}' if line else ''}: {format_path((*prefix, *loc))}: {message}"

    return where


def load_plan(inventory: Inventory) -> tuple[PlanSection, Where, str]:
    """The validated plan of a lab config, how to point at its lines, and its directory."""
    base_dir = str(Path(inventory.source).parent)
    section = inventory.section("plan", PlanSection)
    where: Where = lambda loc, msg: str(inventory.error(("plan", *loc), msg))  # noqa: E731
    if section is None and (inventory.config.model_extra or {}).get("rpc") is not None:
        # RPC campaigns only (loadgen.rpcplan): no fio suites
        return PlanSection.model_construct(include=None, suites=[]), where, base_dir
    if section is None:
        raise PlanError(
            f"{inventory.source}: no `plan:` section; expected plan: {{suites: [...]}}, "
            "plan: {include: FILE} or rpc: {broker: ..., campaigns: [...]} (see examples/local.yaml)"
        )
    if not section.include:
        return section, where, base_dir
    path = Path(section.include).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.is_file():
        raise inventory.error(("plan", "include"), f"plan file {str(path)!r} does not exist")
    data, lines = _read_yaml(path)
    prefix: tuple[str, ...] = ("plan",) if isinstance(data, dict) and "plan" in data else ()
    raw = data.get("plan") if prefix else data
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: expected a plan mapping (suites: [...]), got {raw!r}")
    if "include" in raw:
        raise PlanError(f"{path}: an included plan cannot include another")
    try:
        section = PlanSection.model_validate(raw, context={"base_dir": str(path.parent)})
    except ValidationError as exc:
        raise PlanError(
            str(from_validation(exc, str(path), lines, prefix=prefix, model=PlanSection))
        ) from None
    return section, _where_in_file(str(path), lines, prefix), str(path.parent)


def compile_plan(inventory: Inventory, *, osd_count: int | None = None) -> CompiledPlan:
    """Validate the lab config's plan and expand it into iterations, in plan order.

    `osd_count`, when known, replaces the QD sweep of profiles that set qd_from_osd_count.
    All problems of the plan are reported together in one PlanError. RPC campaigns (the
    `rpc:` section, `loadgen.rpcplan`) run after the fio suites; either may be absent.
    """
    from loadgen.rpcplan import compile_rpc  # it builds on this module

    rpc = compile_rpc(inventory)
    section, where, base_dir = load_plan(inventory)
    errors: list[str] = []
    iterations: list[Iteration] = []
    suite_names: dict[str, int] = {}
    for i, suite in enumerate(section.suites):
        name = suite.name or (_profile_label(suite.profile) if suite.profile else "fio")
        if name in suite_names:
            errors.append(
                where(
                    ("suites", i, "name"),
                    f"suite name {name!r} is already used by suites[{suite_names[name]}]; "
                    "expected unique names (set `name:`)",
                )
            )
            continue
        suite_names[name] = i
        nodes = _nodes_for(inventory, suite, i, where, errors)
        iterations += _compile_suite(suite, i, name, nodes, base_dir, osd_count, where, errors)
    if errors:
        head = f"invalid plan ({len(errors)} error{'s' * (len(errors) > 1)}):"
        raise PlanError("\n".join([head, *("  " + e for e in errors)]))
    return CompiledPlan(
        inventory.source,
        tuple(replace(it, index=n) for n, it in enumerate([*iterations, *rpc], start=1)),
    )


def _nodes_for(
    inventory: Inventory, suite: Suite, i: int, where: Where, errors: list[str]
) -> tuple[str, ...]:
    names = [n.name for role in suite.roles for n in inventory.nodes_with_role(role)]
    if not names:
        errors.append(
            where(
                ("suites", i, "roles"),
                f"no node in {inventory.source} has role(s) {', '.join(suite.roles)}; "
                f"roles present: {', '.join(inventory.roles())}",
            )
        )
    return tuple(dict.fromkeys(names))


def _compile_suite(
    suite: Suite,
    i: int,
    name: str,
    nodes: tuple[str, ...],
    base_dir: str,
    osd_count: int | None,
    where: Where,
    errors: list[str],
) -> list[Iteration]:
    n_errors = len(errors)

    def fail(key: str, message: str) -> None:
        errors.append(where(("suites", i, key), message))

    profile = load_profile(suite.profile, base_dir) if suite.profile else None
    target = parse_target(suite.target)
    default_engine = "rbd" if target.kind == "rbd" else "libaio"
    p = profile or Profile(groups=[ProfileGroup(rw=suite.rw or ["read"], bs=suite.bs or [4096])])
    # A profile's engine is for block and file targets; an RBD image always takes rbd.
    engine = suite.engine or (p.engine if target.kind != "rbd" else None) or default_engine
    if profile is None and suite.rw is None:
        fail("rw", "expected rw: [...] (the access pattern), or a profile")
    if target.kind == "rbd" and engine != "rbd":
        fail("engine", f"target {target} is an RBD image: expected engine rbd, not {engine}")
    if target.kind != "rbd" and engine == "rbd":
        fail("target", f"engine rbd needs an RBD target rbd:POOL/IMAGE, got {target}")
    for node in nodes:
        try:
            target.for_node(node)
        except ValueError as exc:
            fail("target", f"on node {node!r}: {exc}")
    if target.kind == "file" and suite.size is None:
        fail("size", f"a file target ({target}) needs a size (fio lays the file out), like 10G")
    if suite.create_image and target.kind != "rbd":
        fail("create_image", f"create_image is for RBD targets rbd:POOL/IMAGE, not {target}")
    elif suite.create_image and suite.size is None:
        fail("size", f"create_image needs the size of the image to create ({target}), like 10G")
    if suite.rwmixread is not None and profile is not None:
        rws = suite.rw or [rw for g in profile.groups for rw in g.rw]
        if not MIXED_RW.intersection(rws):
            fail("rwmixread", f"profile {suite.profile!r} has no read/write mix (rw: randrw)")
    if (
        suite.rate_iops is not None
        and profile is not None
        and not any(g.rate_iops for g in profile.groups)
    ):
        fail("rate_iops", f"profile {suite.profile!r} does not sweep rate_iops")
    if (
        suite.rwmixread is not None
        and profile is None
        and not MIXED_RW.intersection(suite.rw or [])
    ):
        fail("rwmixread", "rwmixread needs a mixed rw (rw, readwrite or randrw)")
    if len(errors) > n_errors:
        return []

    qd_sweep = p.qd_sweep
    if osd_count is not None and p.qd_from_osd_count:
        qd_sweep = qd_from_osd_count(osd_count)
    out: dict[str, Iteration] = {}
    for group in p.groups:
        direct = _first(suite.direct, group.direct, p.direct, True)
        axes = {
            "rw": suite.rw or group.rw,
            "bs": suite.bs or group.bs,
            "rwmixread": suite.rwmixread or group.rwmixread or [None],
            "numjobs": suite.numjobs or group.numjobs or [_first(p.numjobs, 1)],
            "iodepth": suite.iodepth or (qd_sweep if group.iodepth == QD_SWEEP else group.iodepth),
            "rate_iops": suite.rate_iops or group.rate_iops or [None],
        }
        options = {**p.options, **group.options, **suite.options}
        for values in itertools.product(*(axes[a] for a in AXES)):
            v = dict(zip(AXES, values, strict=True))
            if v["rw"] in MIXED_RW:
                v["rwmixread"] = DEFAULT_MIX if v["rwmixread"] is None else v["rwmixread"]
            else:
                v["rwmixread"] = None
            if direct and v["bs"] % 512:
                fail(
                    "bs", f"direct I/O needs a block size that is a multiple of 512, got {v['bs']}"
                )
                return []
            it_name = iteration_name(name, group.name if profile else None, **v)
            it = Iteration(
                index=0,
                name=it_name,
                suite=name,
                profile=suite.profile,
                group=group.name,
                roles=tuple(suite.roles),
                nodes=nodes,
                target=target,
                engine=engine,
                size=suite.size,
                runtime=_first(suite.runtime, p.runtime, DEFAULT_RUNTIME_S),
                ramp_time=_first(suite.ramp_time, p.ramp_time, DEFAULT_RAMP_S),
                direct=direct,
                prefill=suite.prefill,
                keep_files=suite.keep_files,
                rbd_client=suite.rbd_client,
                create_image=suite.create_image,
                options=tuple((k, fio_option_value(o)) for k, o in options.items()),
                **v,
            )
            seen = out.get(it_name)
            if seen is None:
                out[it_name] = it
            elif seen != it:
                fail(
                    "profile",
                    f"two iterations would be named {it_name!r} with different settings; "
                    "give the profile's groups distinct names",
                )
                return []
    return list(out.values())


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def format_duration(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m` for tables and ETAs."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plan_table(plan: CompiledPlan) -> Table:
    """One row per iteration: what fio will do, on which roles, and how long it should take.

    What is the same for a whole suite (target, size, engine) goes in the caption. RPC
    iterations have their own table (`loadgen.rpcplan.rpc_table`).
    """
    fio = [it for it in plan.iterations if isinstance(it, Iteration)]
    table = Table(
        title=f"Test plan {plan.source}", show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("#", "iteration", "roles", "rw", "bs", "qd", "jobs", "also", "ramp+run"):
        table.add_column(
            col,
            justify="right" if col in ("#", "bs", "qd", "jobs", "ramp+run") else "left",
            no_wrap=col != "also",
        )
    total = sum(it.expected_duration for it in fio)
    table.add_column("est.", justify="right", footer=format_duration(total))
    table.columns[1].footer = f"{len(fio)} iterations"
    suites: dict[str, str] = {}
    for it in fio:
        extra = {"rwmixread": it.rwmixread, "rate_iops": it.rate_iops, **dict(it.options)}
        if not it.direct:
            extra["direct"] = 0
        table.add_row(
            str(it.index),
            it.name,
            ", ".join(it.roles),
            it.rw,
            format_size(it.bs),
            str(it.iodepth),
            str(it.numjobs),
            " ".join(f"{k}={v}" for k, v in extra.items() if v is not None),
            f"{it.ramp_time}+{it.runtime}s",
            format_duration(it.expected_duration),
        )
        size = f" ({format_size(it.size)})" if it.size else ""
        suites.setdefault(
            it.suite,
            f"{it.suite}: {it.target}{size}, {it.engine}, profile {it.profile or '-'}, "
            f"nodes {', '.join(it.nodes)}",
            # The same for every iteration of a suite: said once, below the table.
        )
    table.caption = "\n".join(suites.values())
    return table

"""Resource costs: user expressions over `ROLE.DEVICE_OR_CLASS.FIELD` terms, per test.

`(storage.disk.reads + storage.disk.writes) / client.ios` is parsed with `ast` against a
whitelist (numbers, + - * /, parentheses, attribute chains; never `eval`). The terms of
all expressions of a test are read together: terms over the same series (disk reads and
writes of the storage nodes) share native aggregations over the test window, sent as
parallel requests and selected through the tag index:
the node role by a regex on the `role` tag's few distinct values (all roles of a node
joined by ","), devices by `device`/`device_role` tag values listed from the index. No
series is pulled to the client and nothing is matched client-side: the seed's "regex
search does not scale for big clusters".

Semantics of a term over a window of T seconds, split into equal time chunks:
- counters: per series (last - first) / (time of last - time of first) over the samples
  inside the window, x T, summed over series: the total in the window even when the
  sampling interval does not divide it (intervals reaching outside the window would mix
  in idle time; a series whose counter went backwards is left out);
- gauges: per series mean, summed over series (a total level, e.g. queue depth;
  `cpu.usage_*` are summed over cores: percent of one core);
- derived: `cpu.busy_seconds` (non-idle, non-iowait core-seconds), `cpu.busy_cores`,
  `disk.ios/bytes/iops/busy_seconds`, `net.bytes/packets`, Ceph latency pairs
  (`X` with `X.sum`, `X.avgcount`: mean seconds per op, weighted by ops);
- `client.[read|write.]FIELD`: the test's fio data: iops, ios, bw_bytes, bytes,
  lat_mean, lat_p50 .. lat_p99_9 (seconds, from fio_hist_fine);
- `seconds`: the window length.
Only native aggregates and first/last selectors are used: InfluxDB 1.x runs subqueries
and derivative() point by point, slower than pulling the points (measured by
bench/analysis_scale.py). The ratio is evaluated on window totals and on each chunk; the
deviation across chunks says whether the cost was steady.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from analysis.summary import latency_of
from analysis.windows import NS, AnalysisError, TestWindow, load_tests, parallel, statement_frame
from collector import discovery, histogram, schema
from collector.influx import (
    InfluxClient,
    quote_ident,
    regex_any_of,
    regex_literal,
)

CLIENT = "client"
ALL_NODES = ("all", "cluster")
SECONDS = "seconds"
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {"storage": ("storage", "ceph-osd")}
DEFAULT_RATIOS: dict[str, str] = {
    "disk_ios_per_client_io": "storage.disk.ios / client.ios",
    "disk_bytes_per_client_byte": "storage.disk.bytes / client.bytes",
    "cpu_s_per_1k_client_ios": "storage.cpu.busy_seconds * 1000 / client.ios",
    "net_bytes_per_client_byte": "storage.net.bytes / client.bytes",
    "net_packets_per_client_byte": "storage.net.packets / client.bytes",
    "osd_op_lat_vs_client_lat": "storage.osd.op_latency / client.lat_mean",
    "testnode_disk_ios_per_client_io": "testnode.disk.ios / client.ios",
    "testnode_cpu_s_per_1k_client_ios": "testnode.cpu.busy_seconds * 1000 / client.ios",
}
# Devices the `disk`/`net` classes leave out (configurable: analysis.exclude_device_roles).
DEFAULT_EXCLUDE = (discovery.LOOPBACK_ROLE,)
DEFAULT_CHUNKS = 5
MIN_CHUNK_S = 2.0

_CLIENT_FIELDS = {"iops", "ios", "bw_bytes", "bytes", "lat_mean"} | {
    f"lat_{k}" for k in ("p50", "p90", "p95", "p99", "p99_9")
}
_DERIVED: dict[str, dict[str, tuple[str, ...]]] = {
    schema.DISKIO.name: {
        "ios": ("reads", "writes"),
        "bytes": ("read_bytes", "write_bytes"),
        "iops": ("reads", "writes"),
        "busy_seconds": ("io_time",),
    },
    schema.NET.name: {
        "bytes": ("bytes_sent", "bytes_recv"),
        "packets": ("packets_sent", "packets_recv"),
    },
    schema.CPU.name: {
        "busy_seconds": ("usage_idle", "usage_iowait"),
        "busy_cores": ("usage_idle", "usage_iowait"),
    },
}


class RatioError(AnalysisError):
    """A bad expression: names it, says what is wrong and where (column, 1-based)."""

    def __init__(self, name: str, expr: str, col: int | None, message: str) -> None:
        self.name, self.expr, self.col, self.reason = name, expr, col, message
        where = f" at column {col}" if col else ""
        caret = f"\n  {expr}\n  {' ' * (col - 1)}^" if col else f"\n  {expr}"
        super().__init__(f"ratio {name!r}{where}: {message}{caret}")


@dataclass(frozen=True)
class Term:
    """One `ROLE.TARGET.FIELD` reference as written, with its column."""

    parts: tuple[str, ...]
    col: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Expression:
    name: str
    text: str
    tree: ast.expr
    terms: tuple[Term, ...]


_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
}


def _chain(node: ast.expr, name: str, expr: str) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts.append(node.value)  # "ceph-osd".disk.writes: a role that is no identifier
    else:
        raise RatioError(name, expr, node.col_offset + 1, "a term must start with a role name")
    return tuple(reversed(parts))


def parse(name: str, expr: str) -> Expression:
    """Parse and whitelist-check an expression; errors name it and point at the column."""
    if not expr or not expr.strip():
        raise RatioError(name, expr, None, "the expression is empty")
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as e:
        text = expr.strip()
        col = e.offset if e.offset and e.offset <= len(text) else len(text) + 1
        msg = "unexpected end of the expression" if col > len(text) else e.msg
        raise RatioError(name, text, col, f"syntax error: {msg}") from None
    expr = expr.strip()
    terms: list[Term] = []

    def walk(node: ast.expr) -> None:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            walk(node.left)
            walk(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            walk(node.operand)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            pass
        elif isinstance(node, ast.Name) and node.id == SECONDS:
            terms.append(Term((SECONDS,), node.col_offset + 1))
        elif isinstance(node, ast.Attribute):
            parts = _chain(node, name, expr)
            if len(parts) < 2:
                raise RatioError(
                    name, expr, node.col_offset + 1, "expected ROLE.DEVICE_OR_CLASS.FIELD"
                )
            terms.append(Term(parts, node.col_offset + 1))
        else:
            what = type(node).__name__
            if isinstance(node, ast.BinOp):
                what = f"operator {type(node.op).__name__}"
            elif isinstance(node, ast.Name):
                what = f"bare name {node.id!r}"
            raise RatioError(
                name,
                expr,
                getattr(node, "col_offset", 0) + 1,
                f"{what} is not allowed: only numbers, + - * /, parentheses and "
                "ROLE.DEVICE_OR_CLASS.FIELD terms",
            )

    walk(tree)
    return Expression(name, expr, tree, tuple(terms))


def evaluate(e: Expression, values: Mapping[str, Any]) -> Any:
    """The expression with term values (floats or numpy arrays); x/0 gives inf/nan."""

    def ev(node: ast.expr) -> Any:
        if isinstance(node, ast.BinOp):
            with np.errstate(divide="ignore", invalid="ignore"):
                return _OPS[type(node.op)](
                    np.asarray(ev(node.left), float), np.asarray(ev(node.right), float)
                )
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[SECONDS]
        return values[".".join(_chain(node, e.name, e.text))]

    return ev(e.tree)


# --- resolving terms to queries -----------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a term's data is: measurement, tag filters, series keys and raw fields."""

    measurement: str
    where: str
    params: dict
    series: tuple[str, ...]
    fields: tuple[str, ...]
    kind: str  # counter | gauge | cpu | latency_pair | client
    combine: str = "sum"  # sum | rate | busy_seconds | busy_cores | a client field


@dataclass
class Catalog:
    """What the database knows, read once from the tag index (never by scanning series)."""

    roles: set[str]
    disk_devices: dict[str, list[str]]  # role -> whole-disk device names (wally_device)
    nic_devices: dict[str, list[str]]
    diskio_devices: set[str]
    diskio_device_roles: set[str]
    net_devices: set[str]
    ceph_collections: set[str]
    ceph_fields: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, client: InfluxClient, exclude_roles: Sequence[str] = DEFAULT_EXCLUDE) -> Catalog:
        def values(m: str, key: str, where: dict | None = None) -> list[str]:
            return client.tag_values(m, key, where) if m in measurements else []

        measurements = set(client.measurements())
        roles = set(values(schema.WALLY_NODE.name, schema.TAG_ROLE))
        for m in (schema.DISKIO.name, schema.CPU.name, schema.NET.name, schema.CEPH.name):
            for v in values(m, schema.TAG_ROLE):
                roles.update(v.split(","))
        disks: dict[str, list[str]] = {}
        nics: dict[str, list[str]] = {}
        wd = schema.WALLY_DEVICE.name
        if wd in measurements:
            # the per-role device lists come from one query per role: roles are few
            for role in roles & set(values(wd, schema.TAG_ROLE)):
                rows = client.query_df(
                    f'SELECT count("size") FROM {quote_ident(wd)} WHERE "role" = $r '
                    'GROUP BY "device", "kind", "device_role"',
                    {"r": role},
                )
                if rows.empty:
                    continue
                keep = ~rows["device_role"].isin(exclude_roles)
                disks[role] = sorted(set(rows.loc[keep & (rows["kind"] == "disk"), "device"]))
                nics[role] = sorted(set(rows.loc[keep & (rows["kind"] == "nic"), "device"]))
        return cls(
            roles=roles,
            disk_devices=disks,
            nic_devices=nics,
            diskio_devices=set(values(schema.DISKIO.name, schema.TAG_DEVICE)),
            diskio_device_roles=set(values(schema.DISKIO.name, schema.TAG_DEVICE_ROLE)),
            net_devices=set(values(schema.NET.name, schema.TAG_DEVICE)),
            ceph_collections=set(values(schema.CEPH.name, "collection")),
            ceph_fields=_field_keys(client, schema.CEPH.name)
            if schema.CEPH.name in measurements
            else set(),
        )


def _field_keys(client: InfluxClient, measurement: str) -> set[str]:
    df = client.query_df(f"SHOW FIELD KEYS FROM {quote_ident(measurement)}")
    return set(df["fieldKey"]) if not df.empty else set()


def _role_regex(roles: Sequence[str]) -> str:
    return regex_literal("(^|,)(" + "|".join(re.escape(r) for r in sorted(roles)) + ")(,|$)")


def _pick(name: str, known: set[str]) -> str | None:
    """`name` as known, or with '_' read as '-' (osd_data -> osd-data)."""
    if name in known:
        return name
    alt = name.replace("_", "-")
    return alt if alt in known else None


class Resolver:
    """Terms to `Source`s against a catalog, with aliases and excluded device roles."""

    def __init__(
        self,
        catalog: Catalog,
        aliases: Mapping[str, Sequence[str]] | None = None,
        exclude_roles: Sequence[str] = DEFAULT_EXCLUDE,
    ) -> None:
        self.catalog = catalog
        self.aliases = {**DEFAULT_ALIASES, **{k: tuple(v) for k, v in (aliases or {}).items()}}
        self.exclude = tuple(exclude_roles)

    def roles_of(self, e: Expression, term: Term) -> list[str] | None:
        """Node roles the term's first part means; None = every node."""
        name = term.parts[0]
        if name in ALL_NODES:
            return None
        if (r := _pick(name, self.catalog.roles)) is not None:
            return [r]
        if name in self.aliases:
            found = sorted(set(self.aliases[name]) & self.catalog.roles)
            if found:
                return found
            raise RatioError(
                e.name,
                e.text,
                term.col,
                f"no node has role {name!r} (it means any of {', '.join(self.aliases[name])})",
            )
        known = ", ".join(sorted(self.catalog.roles | set(self.aliases) | {CLIENT, *ALL_NODES}))
        raise RatioError(e.name, e.text, term.col, f"unknown role {name!r}; known: {known}")

    def source(self, e: Expression, term: Term) -> Source:
        parts = term.parts
        if parts[0] == CLIENT:
            return self._client(e, term)
        roles = self.roles_of(e, term)
        if len(parts) < 3:
            raise RatioError(
                e.name, e.text, term.col, f"{term.text!r}: expected ROLE.DEVICE_OR_CLASS.FIELD"
            )
        target, fld = parts[1], ".".join(parts[2:])
        params: dict = {}
        where = [] if roles is None else [f'"role" =~ {_role_regex(roles)}']
        c = self.catalog

        def devices(names: Sequence[str]) -> None:
            where.append(f'"device" =~ {regex_any_of(names)}')

        if target == "cpu":
            m, series = schema.CPU.name, ("node", "cpu")
            where.append("\"cpu\" != 'cpu-total'")
        elif target == "disk":
            m, series = schema.DISKIO.name, ("node", "device")
            listed = sorted(
                {d for r in (roles or c.disk_devices) for d in c.disk_devices.get(r, [])}
            )
            if listed:
                devices(listed)
            elif self.exclude:
                where.append(f'"device_role" !~ {regex_any_of(self.exclude)}')
        elif target == "net":
            m, series = schema.NET.name, ("node", "device")
            listed = sorted({d for r in (roles or c.nic_devices) for d in c.nic_devices.get(r, [])})
            if listed:
                devices(listed)
            else:
                where.append("\"device\" != 'lo'")
        elif (col := _pick(target, c.ceph_collections)) is not None:
            m, series = schema.CEPH.name, ("node", "type", "id", "collection")
            where.append(f'"collection" = {_bind(params, col)}')
        elif (dr := _pick(target, c.diskio_device_roles)) is not None:
            m, series = schema.DISKIO.name, ("node", "device")
            where.append(f'"device_role" = {_bind(params, dr)}')
        elif (dev := _pick(target, c.diskio_devices)) is not None:
            m, series = schema.DISKIO.name, ("node", "device")
            devices([dev])
        elif (dev := _pick(target, c.net_devices)) is not None:
            m, series = schema.NET.name, ("node", "device")
            devices([dev])
        else:
            raise RatioError(
                e.name,
                e.text,
                term.col + len(parts[0]) + 1,
                f"unknown device or class {target!r} for {parts[0]!r}: expected cpu, disk, "
                "net, a device role, a device name or a Ceph collection",
            )
        return self._fields(e, term, m, " AND ".join(where), params, series, fld)

    def _fields(
        self, e: Expression, term: Term, m: str, where: str, params: dict, series: tuple, fld: str
    ) -> Source:
        meas = schema.get(m)
        derived = _DERIVED.get(m, {})
        col = term.col + len(".".join(term.parts[:2])) + 1
        if m == schema.CPU.name and fld in derived:
            return Source(m, where, params, series, derived[fld], "cpu", fld)
        if fld in derived:
            return Source(
                m,
                where,
                params,
                series,
                derived[fld],
                "counter",
                "rate" if fld == "iops" else "sum",
            )
        if m == schema.CEPH.name and f"{fld}.avgcount" in self.catalog.ceph_fields:
            return Source(
                m, where, params, series, (f"{fld}.sum", f"{fld}.avgcount"), "latency_pair"
            )
        if m == schema.CEPH.name and fld not in self.catalog.ceph_fields:
            raise RatioError(e.name, e.text, col, f"no Ceph counter {fld!r} in the database")
        f = meas.field(fld)
        if f is None or f.kind is schema.Kind.INFO:
            names = sorted(
                [*(n for n, x in meas.fields.items() if x.kind is not schema.Kind.INFO), *derived]
            )
            raise RatioError(
                e.name, e.text, col, f"unknown field {fld!r} of {m}; known: {', '.join(names)}"
            )
        kind = "counter" if f.kind is schema.Kind.COUNTER else "gauge"
        return Source(m, where, params, series, (fld,), kind)

    def _client(self, e: Expression, term: Term) -> Source:
        parts = term.parts[1:]
        op = None
        if len(parts) == 2:
            op, parts = parts[0], parts[1:]
            if op not in ("read", "write", "trim"):
                raise RatioError(
                    e.name,
                    e.text,
                    term.col + 7,
                    f"client direction {op!r}: expected read, write or trim",
                )
        if len(parts) != 1 or parts[0] not in _CLIENT_FIELDS:
            raise RatioError(
                e.name,
                e.text,
                term.col,
                f"{term.text!r}: expected client[.read|.write].FIELD, FIELD one of {', '.join(sorted(_CLIENT_FIELDS))}",
            )
        params: dict = {}
        where = "" if op is None else f'"op" = {_bind(params, op)}'
        raw = "iops" if parts[0] in ("iops", "ios") or parts[0].startswith("lat_") else "bw"
        return Source(schema.FIO.name, where, params, ("node", "op"), (raw,), "client", parts[0])


def _bind(params: dict, value: str) -> str:
    name = f"p{len(params)}"
    params[name] = value
    return f"${name}"


@dataclass(frozen=True)
class Chunks:
    """The window cut into k equal chunks of `step_ns`, aligned on its start."""

    start_ns: int
    end_ns: int
    k: int

    @classmethod
    def of(cls, t: TestWindow, k: int = DEFAULT_CHUNKS) -> Chunks:
        k = max(1, min(k, int(t.duration_s // MIN_CHUNK_S)))
        return cls(t.start_ns, t.end_ns, k)

    @property
    def step_ns(self) -> int:
        return max((self.end_ns - self.start_ns) // self.k, 1)

    @property
    def seconds(self) -> float:
        return self.step_ns * self.k / NS

    def group_by(self) -> str:
        return f"time({self.step_ns}ns, {self.start_ns % self.step_ns}ns)"

    def index(self, times: pd.Series) -> np.ndarray:
        return ((times.to_numpy(np.int64) - self.start_ns) // self.step_ns).astype(np.int64)


@dataclass
class TermValue:
    """A term's total over the window and per chunk (NaN where a chunk had no data)."""

    total: float
    chunks: np.ndarray


def _time(params: dict, lo: int, hi: int) -> str:
    params["s"], params["e"] = lo, hi
    return "time >= $s AND time < $e"


def queries_for(src: Source, ch: Chunks, t: TestWindow) -> tuple[list[str], dict]:
    """A source's statements (and their parameters); only native aggregates and selectors.

    InfluxDB 1.x evaluates subqueries and transformations (derivative) point by point in
    its query engine, which is slower than pulling the points; plain aggregates and
    first/last selectors per series are answered from the storage engine, at a cost
    that grows with series x aggregate calls, so each field is read by as few calls as
    possible. Counters: the first and last sample of the first field (a statement with
    one selector returns that point's time; the fields of a series share their times),
    the first sample of the other fields, and the last sample of each field per chunk
    (the last chunk's is the window's last), a statement per field. Gauges and client data: the mean per series
    and chunk.
    """
    params = dict(src.params)
    m = quote_ident(src.measurement)
    keys = ", ".join(quote_ident(k) for k in src.series)
    win = _time(params, ch.start_ns, ch.start_ns + ch.k * ch.step_ns)
    cond = f" AND {src.where}" if src.where else ""
    if src.kind == "client":
        params["run"], params["test"] = t.run, t.test
        cond += ' AND "run" = $run AND "test" = $test'
    tail = f"FROM {m} WHERE {win}{cond} GROUP BY {keys}"

    def sel(fn: str, fields: range) -> str:
        return ", ".join(f"{fn}({quote_ident(src.fields[i])}) AS v{i}" for i in fields)

    n = len(src.fields)
    if src.kind in ("counter", "latency_pair"):
        statements = [f"SELECT {sel(fn, range(1))} {tail}" for fn in ("first", "last")]
        if n > 1:
            statements.append(f"SELECT {sel('first', range(1, n))} {tail}")
        # the chunk ends read every point: one statement per field, so they run in parallel
        statements += [
            f"SELECT {sel('last', range(i, i + 1))} {tail}, {ch.group_by()}" for i in range(n)
        ]
    else:
        statements = [f"SELECT {sel('mean', range(n))} {tail}, {ch.group_by()}"]
    return statements, params


@dataclass
class _Counters:
    """Per series of a source: first/last sample times, first values and chunk-end values."""

    first: pd.DataFrame  # index: series keys; time_a, time_b, v0 .. (values at time_a)
    ends: dict[str, pd.DataFrame]  # field name -> series x chunk last values (NaN: none)


def _counter_table(frames: list[pd.DataFrame], src: Source, ch: Chunks) -> _Counters | None:
    first_t, last_t, *rest = frames
    if first_t.empty:
        return None
    keys = list(src.series)
    names = [f"v{i}" for i in range(len(src.fields))]
    f = first_t[[*keys, "time", "v0"]].rename(columns={"time": "time_a"})
    f = f.merge(last_t[[*keys, "time"]].rename(columns={"time": "time_b"}), on=keys)
    if len(names) > 1:
        f = f.merge(rest[0][[*keys, *names[1:]]], on=keys, how="left")
    ends = rest[-len(names) :]  # the chunk-end statements, one per field
    pc = ends[0][[*keys, "time", names[0]]]
    for name, other in zip(names[1:], ends[1:], strict=True):
        if not other.empty:
            pc = pc.merge(other[[*keys, "time", name]], on=[*keys, "time"], how="outer")
    pc = pc.copy()
    pc["chunk"] = ch.index(pc["time"])
    pc = pc[(pc["chunk"] >= 0) & (pc["chunk"] < ch.k)]
    f = f.set_index(keys)
    table = pc.pivot_table(index=keys, columns="chunk", values=names, aggfunc="last")
    present = set(table.columns.get_level_values(0))
    by_field = {
        n: table[n].reindex(index=f.index, columns=range(ch.k)) for n in names if n in present
    }
    return _Counters(f, by_field)


def _counter_chunks(
    c: _Counters, names: list[str], ch: Chunks
) -> tuple[np.ndarray, np.ndarray] | None:
    """(window rate per field, per chunk rate per field) of some fields, summed over series.

    Per series (last - first) / (time of last - time of first): the rate over the
    intervals inside the window; the last value is the last chunk-end value seen.
    """
    f = c.first
    span = (f["time_b"] - f["time_a"]).to_numpy(float) / NS
    ok = span > 0
    last = {n: c.ends[n].ffill(axis=1).iloc[:, -1] if n in c.ends else np.nan for n in names}
    delta = np.stack([(last[n] - f[n]).to_numpy(float) for n in names], axis=1)
    ok &= (delta >= 0).all(axis=1)  # a counter reset in the window: the series is left out
    if not ok.any():  # no series has two samples in the window (or all were reset)
        return None
    rate = (delta[ok] / span[ok, None]).sum(axis=0)
    # chunk increments from the chunk-end values (the first from the window's first sample)
    base = f.loc[ok, names]
    lens = np.full(ch.k, ch.step_ns / NS)
    lens[0] -= (float(np.median(f["time_a"][ok])) - ch.start_ns) / NS
    chunk_rate = np.full((ch.k, len(names)), np.nan)
    for j, n in enumerate(names):
        if n not in c.ends:
            continue
        e = c.ends[n][ok].ffill(axis=1)
        prev = pd.concat([base[n], e.iloc[:, :-1]], axis=1).to_numpy(float)
        inc = np.clip(e.to_numpy(float) - prev, 0, None)
        chunk_rate[:, j] = np.nansum(inc, axis=0) / np.maximum(lens, 1e-9)
    return rate, chunk_rate


def _fetch_key(src: Source) -> tuple:
    """Sources with equal keys read the same series: their fields share statements."""
    counter = src.kind in ("counter", "latency_pair")
    return src.measurement, src.where, tuple(sorted(src.params.items())), src.series, counter


def term_values(
    client: InfluxClient, sources: Sequence[Source], ch: Chunks, t: TestWindow
) -> list[TermValue]:
    """Every source's value; sources reading the same series are fetched together once."""
    out: dict[int, TermValue] = {}
    groups: dict[tuple, list[int]] = {}
    for i, src in enumerate(sources):
        if src.kind == "client" and src.combine.startswith("lat_"):
            out[i] = _client_latency(client, src, ch, t)
        else:
            groups.setdefault(_fetch_key(src), []).append(i)
    merged = [
        replace(
            sources[idx[0]], fields=tuple(dict.fromkeys(f for i in idx for f in sources[i].fields))
        )
        for idx in groups.values()
    ]
    plans = [queries_for(m, ch, t) for m in merged]
    calls = [partial(statement_frame, client, q, params) for qs, params in plans for q in qs]
    got = iter(parallel(calls))
    for m, (qs, _), idx in zip(merged, plans, groups.values(), strict=True):
        frames = [next(got) for _ in qs]
        counters = _counter_table(frames, m, ch) if _fetch_key(m)[-1] else None
        for i in idx:
            names = [f"v{m.fields.index(f)}" for f in sources[i].fields]
            out[i] = _reduce(sources[i], names, frames, counters, ch)
    return [out[i] for i in range(len(sources))]


def _reduce(
    src: Source,
    names: list[str],
    frames: list[pd.DataFrame],
    counters: _Counters | None,
    ch: Chunks,
) -> TermValue:
    step_s = ch.step_ns / NS
    if src.kind in ("counter", "latency_pair"):
        got = None if counters is None else _counter_chunks(counters, names, ch)
        if got is None:
            return TermValue(np.nan, np.full(ch.k, np.nan))
        rate, chunk_rate = got
        if src.kind == "latency_pair":
            with np.errstate(divide="ignore", invalid="ignore"):
                return TermValue(float(rate[0] / rate[1]), chunk_rate[:, 0] / chunk_rate[:, 1])
        scale = 1 / 1000.0 if src.fields == ("io_time",) else 1.0  # ms -> s
        total, chunks = rate.sum() * scale, chunk_rate.sum(axis=1) * scale
        if src.combine == "rate":
            return TermValue(float(total), chunks)
        return TermValue(float(total * ch.seconds), chunks * step_s)
    df = frames[0]
    level = np.full(ch.k, np.nan)
    series = np.zeros(ch.k)
    if not df.empty:
        idx = ch.index(df["time"])
        ok = (idx >= 0) & (idx < ch.k) & df[names].notna().all(axis=1).to_numpy()
        vals = df.loc[ok, names].to_numpy(float).sum(axis=1)
        level = np.bincount(idx[ok], vals, minlength=ch.k)[: ch.k]
        series = np.bincount(idx[ok], minlength=ch.k)[: ch.k].astype(float)
        level[series == 0] = np.nan
    if src.kind == "cpu":  # per core % idle and iowait: busy cores = cores - (idle+iowait)/100
        busy = series - level / 100.0
        chunks = busy * step_s if src.combine == "busy_seconds" else busy
        total = _nanmean(chunks) * (ch.k if src.combine == "busy_seconds" else 1)
        return TermValue(total, chunks)
    if src.kind == "client":
        fld = src.combine
        if fld in ("bw_bytes", "bytes"):
            level = level * 1024.0  # fio logs KiB/s
        if fld in ("ios", "bytes"):
            return TermValue(_nanmean(level) * ch.seconds, level * step_s)
    return TermValue(_nanmean(level), level)


def _nanmean(a: np.ndarray) -> float:
    """Mean of the chunks that have data; NaN (without a warning) when none has."""
    a = np.asarray(a, float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else np.nan


def _client_latency(client: InfluxClient, src: Source, ch: Chunks, t: TestWindow) -> TermValue:
    op = src.params.get("p0")
    m = schema.FIO_HIST_FINE.name
    params = {"run": t.run, "test": t.test}
    q = f'SELECT "bins", "coarseness" FROM {quote_ident(m)} WHERE "run" = $run AND "test" = $test'
    q += " AND " + _time(params, ch.start_ns, ch.start_ns + ch.k * ch.step_ns)
    if op:
        params["op"] = op
        q += ' AND "op" = $op'
    df = client.query_df(q, params)
    key = src.combine[len("lat_") :]
    if df.empty:
        return TermValue(np.nan, np.full(ch.k, np.nan))
    coarse = int(df["coarseness"].iloc[0])
    counts = histogram.sparse_decode(list(df["bins"]), histogram.PLAT_NR >> coarse)
    idx = ch.index(df["time"])
    chunks = np.full(ch.k, np.nan)
    for i in range(ch.k):
        lat = latency_of(counts[idx == i].sum(axis=0), coarse)
        chunks[i] = lat.get(key, np.nan) / 1e9
    total = latency_of(counts.sum(axis=0), coarse).get(key, np.nan) / 1e9
    return TermValue(total, chunks)


# --- the table ------------------------------------------------------------------------


@dataclass
class RatioResult:
    test: str
    name: str
    expr: str
    value: float
    deviation: float  # stddev of chunk ratios / |value|
    chunks: list[float] = field(default_factory=list)
    skipped: str = ""


class RatioEngine:
    """Evaluates expressions per test, reading the tag index once per run."""

    def __init__(
        self,
        client: InfluxClient,
        aliases: Mapping[str, Sequence[str]] | None = None,
        exclude_roles: Sequence[str] = DEFAULT_EXCLUDE,
        chunks: int = DEFAULT_CHUNKS,
    ) -> None:
        self.client = client
        self.catalog = Catalog.load(client, exclude_roles)
        self.resolver = Resolver(self.catalog, aliases, exclude_roles)
        self.chunks = chunks

    def compile(self, exprs: Mapping[str, str]) -> dict[str, Expression | RatioError]:
        """Parse every expression; unresolvable ones are kept as their error."""
        out: dict[str, Expression | RatioError] = {}
        for name, text in exprs.items():
            e = parse(name, text)
            try:
                for term in e.terms:
                    if term.parts != (SECONDS,):
                        self.resolver.source(e, term)
                out[name] = e
            except RatioError as err:
                out[name] = err
        return out

    def evaluate(self, e: Expression, t: TestWindow) -> RatioResult:
        return self.evaluate_many([e], t)[0]

    def evaluate_many(self, exprs: Sequence[Expression], t: TestWindow) -> list[RatioResult]:
        """Several expressions over one test: every term is read once, series shared by
        terms (disk reads and writes of the same nodes) in the same statements."""
        ch = Chunks.of(t, self.chunks)
        sources = {
            term.text: self.resolver.source(e, term)
            for e in exprs
            for term in e.terms
            if term.parts != (SECONDS,)
        }
        got = term_values(self.client, list(sources.values()), ch, t)
        terms = dict(zip(sources, got, strict=True))
        terms[SECONDS] = TermValue(ch.seconds, np.full(ch.k, ch.step_ns / NS))
        out = []
        for e in exprs:
            used = {term.text: terms[term.text] for term in e.terms}
            total = float(evaluate(e, {k: v.total for k, v in used.items()}))
            per_chunk = np.asarray(evaluate(e, {k: v.chunks for k, v in used.items()}), float)
            finite = per_chunk[np.isfinite(per_chunk)]
            dev = (
                float(np.std(finite, ddof=1) / abs(total)) if len(finite) > 1 and total else np.nan
            )
            out.append(
                RatioResult(t.test, e.name, e.text, total, dev, [float(x) for x in per_chunk])
            )
        return out


def ratio_table(
    client: InfluxClient,
    run: str,
    exprs: Mapping[str, str] | None = None,
    strict: bool = False,
    tests: list[TestWindow] | None = None,
    **engine_kw: Any,
) -> pd.DataFrame:
    """One row per (test, ratio): value, deviation across chunks, or why it was skipped.

    With `strict` (user-given expressions) an expression that cannot be resolved is an
    error; otherwise (the default set) it is reported as skipped with the reason. All
    ratios of a test are evaluated together (each term read once).
    """
    tests = load_tests(client, run) if tests is None else tests
    engine = RatioEngine(client, **engine_kw)
    compiled = engine.compile(exprs or DEFAULT_RATIOS)
    good = [e for e in compiled.values() if isinstance(e, Expression)]
    done = {
        (t.test, r.name): r
        for t in tests
        if t.end_ns > t.start_ns and good
        for r in engine.evaluate_many(good, t)
    }
    rows = []
    for name, e in compiled.items():
        if isinstance(e, RatioError):
            if strict:
                raise e
            rows += [
                RatioResult(t.test, name, e.expr, np.nan, np.nan, skipped=e.reason) for t in tests
            ]
            continue
        rows += [done[(t.test, name)] for t in tests if t.end_ns > t.start_ns]
    return pd.DataFrame([r.__dict__ for r in rows])

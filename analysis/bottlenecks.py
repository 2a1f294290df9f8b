"""Which resource came closest to saturation in each test, and which saturated first.

The USE method's two numbers per resource and test window: utilisation (the mean level)
and saturation (the share of samples at or past a threshold). Each is a native InfluxDB
aggregate grouped by series, answered by the storage engine, and every aggregate call
reads all the points of its field again: the job makes as few as it can (a mean per
field, one sample count per measurement, one count past each threshold), each its own
statement so that they run in parallel. A per-series percentile or peak is left out on
purpose: at 1000 nodes x 8 disks x 10 minutes a percentile costs more than the rest of
the job together (InfluxDB 1.x streams every point through its query engine for it),
and a max adds a full read of each field for a number the saturated share already
answers (measured by bench/analysis_scale.py).
- disk util: `io_util` (%, Telegraf's and our sensor's gauge); disk queue:
  `iops_in_progress`, the requests in flight at each sample;
- cpu: non-idle share (100 - usage_idle) of `cpu-total` per node; cpu core: per core,
  the hottest core per node is kept;
- nic: (bytes_sent + bytes_recv) mean rate as a share of the link speed, when known;
- osd queue: share of OSD op time spent queued for the PG (ceph_op_stages), per OSD.
Closeness = mean level / threshold. Rows are ranked by the time share spent saturated,
then by closeness: a disk past its threshold a third of the time is a worse bottleneck
than one steadily at 80 %. Broker CPU in RPC tests is the cpu of the nodes with a
rabbitmq role, ranked with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from analysis import ratios, stats
from analysis.summary import fine_histograms
from analysis.windows import NS, TestWindow, load_tests, parallel, statement_frame
from collector import histogram, schema
from collector.influx import InfluxClient, quote_ident, quote_literal, series_to_frame


@dataclass(frozen=True)
class Thresholds:
    """Where a resource counts as saturated (configurable: analysis.thresholds)."""

    disk_util_pct: float = 90.0
    disk_queue: float = 32.0
    cpu_pct: float = 90.0
    core_pct: float = 95.0
    nic_pct: float = 90.0
    osd_queue_share: float = 0.5
    # a test saturates a resource when this share of its window is past the threshold
    saturated_share: float = 0.5
    dirty_mib: float = 64.0
    cache_hit_warn: float = 0.1


@dataclass(frozen=True)
class Resource:
    """A per-sample gauge whose level says how busy something is.

    `invert`: the level is 100 - field (CPU busy from usage_idle), so the statistics are
    taken of the field and mirrored. `only`: the rows of the measurement that are this
    resource, as (tag, value, equal?) — applied client-side to the shared level
    statement and server-side to the saturation count.
    """

    name: str
    measurement: str
    series: tuple[str, ...]
    field: str
    threshold: str  # Thresholds attribute
    unit: str
    invert: bool = False
    only: tuple[str, str, bool] | None = None

    @property
    def condition(self) -> str:
        """`only` as an InfluxQL condition ("" when the resource is every row)."""
        if self.only is None:
            return ""
        tag, value, equal = self.only
        return f"{quote_ident(tag)} {'=' if equal else '!='} {quote_literal(value)}"

    def rows(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.only is None:
            return df
        tag, value, equal = self.only
        return df[(df[tag] == value) == equal]


_DISK = ("node", "role", "device")
_CPU = ("node", "role", "cpu")
_TOTAL = ("cpu", "cpu-total", True)
RESOURCES = (
    Resource("disk util", schema.DISKIO.name, _DISK, "io_util", "disk_util_pct", "%"),
    Resource("disk queue", schema.DISKIO.name, _DISK, "iops_in_progress", "disk_queue", "requests"),
    Resource("cpu", schema.CPU.name, _CPU, "usage_idle", "cpu_pct", "%", True, _TOTAL),
    Resource(
        "cpu core",
        schema.CPU.name,
        _CPU,
        "usage_idle",
        "core_pct",
        "%",
        True,
        ("cpu", "cpu-total", False),
    ),
)


def _window(t: TestWindow) -> tuple[str, dict]:
    return "time >= $s AND time < $e", {"s": t.start_ns, "e": t.end_ns}


def level_queries(rs: list[Resource], t: TestWindow) -> list[tuple[str, dict]]:
    """Statements for resources of one measurement: each field's mean per series in its
    own statement (they run in parallel), the first also counting the samples (the fields
    of a measurement are written together)."""
    m, keys = rs[0].measurement, rs[0].series
    win, params = _window(t)
    group = ", ".join(quote_ident(k) for k in keys)
    fields = list(dict.fromkeys(r.field for r in rs))
    out = []
    for i, name in enumerate(fields):
        f = quote_ident(name)
        cols = f"mean({f}) AS {quote_ident('mean_' + name)}" + (
            f", count({f}) AS n" if i == 0 else ""
        )
        out.append((f"SELECT {cols} FROM {quote_ident(m)} WHERE {win} GROUP BY {group}", params))
    return out


def saturation_query(r: Resource, thr: float, t: TestWindow) -> tuple[str, dict]:
    """The samples at or past the threshold per series (busy >= thr: idle <= 100 - thr)."""
    win, params = _window(t)
    params["thr"] = 100.0 - thr if r.invert else thr
    f = quote_ident(r.field)
    past = "<=" if r.invert else ">="
    group = ", ".join(quote_ident(k) for k in r.series)
    cond = f" AND {r.condition}" if r.condition else ""
    return (
        f"SELECT count({f}) AS sat FROM {quote_ident(r.measurement)} WHERE {win}{cond} "
        f"AND {f} {past} $thr GROUP BY {group}",
        params,
    )


def _merge_on(keys: list[str], frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-series results of several statements side by side."""
    frames = [
        f.drop(columns=["time", "_measurement"], errors="ignore") for f in frames if not f.empty
    ]
    if not frames:
        return pd.DataFrame()
    out = frames[0]
    for f in frames[1:]:
        out = out.merge(f, on=keys, how="outer")
    return out


def _levels(r: Resource, a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """A resource's rows (mean, n, sat) from its level and saturation results."""
    a = r.rows(a)
    if a.empty:
        return a
    keys = list(r.series)
    out = a[keys].assign(mean=a[f"mean_{r.field}"], n=a["n"]).dropna(subset=["mean"])
    if r.invert:
        out["mean"] = 100.0 - out["mean"]
    if b.empty:
        return out.assign(sat=0)
    return out.merge(b[[*keys, "sat"]], on=keys, how="left").fillna({"sat": 0})


def _nic_levels(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """NIC throughput (sent + received) as % of link speed, the window's mean per link.

    From the first and last counter sample per series (native selectors), so the
    saturated share is not known for NICs; links of unknown speed are left out.
    """
    m = quote_ident(schema.NET.name)
    tail = f'FROM {m} WHERE time >= $s AND time < $e AND "device" != \'lo\' GROUP BY "node", "role", "device"'
    q = "; ".join(
        [
            f'SELECT last("speed") AS speed {tail}',
            f'SELECT first("bytes_sent") AS a {tail}',
            f'SELECT last("bytes_sent") AS b {tail}',
            f'SELECT first("bytes_recv") AS a {tail}',
            f'SELECT last("bytes_recv") AS b {tail}',
        ]
    )
    speed, s0, s1, r0, r1 = (
        series_to_frame(r["series"]) for r in client.query(q, {"s": t.start_ns, "e": t.end_ns})
    )
    if speed.empty or s0.empty:
        return pd.DataFrame()
    keys = ["node", "role", "device"]
    f = speed[speed["speed"] > 0][[*keys, "speed"]]
    f = f.merge(s0[[*keys, "time", "a"]], on=keys).merge(s1[[*keys, "time", "b"]], on=keys)
    f = f.merge(r0[[*keys, "a"]].rename(columns={"a": "ra"}), on=keys).merge(
        r1[[*keys, "b"]].rename(columns={"b": "rb"}), on=keys
    )
    span = (f["time_y"] - f["time_x"]) / NS
    bits = ((f["b"] - f["a"]) + (f["rb"] - f["ra"])) * 8 / span.where(span > 0)
    level = bits / (f["speed"] * 1e6) * 100.0
    return f[keys].assign(mean=level, n=1, sat=np.nan)


def _osd_levels(client: InfluxClient, t: TestWindow) -> pd.DataFrame:
    """Per OSD, the share of op time spent queued for its PG (ceph_op_stages), if any."""
    df = client.query_df(
        f'SELECT sum("queue_sum") AS q, sum("duration_sum") AS d FROM '
        f"{quote_ident(schema.CEPH_OP_STAGES.name)} WHERE time >= $s AND time < $e "
        'GROUP BY "node", "role", "id"',
        {"s": t.start_ns, "e": t.end_ns},
    )
    if df.empty:
        return df
    level = df["q"] / df["d"].where(df["d"] > 0)
    return df[["node", "role"]].assign(device="osd." + df["id"], mean=level, n=1, sat=np.nan)


def test_bottlenecks(
    client: InfluxClient, t: TestWindow, th: Thresholds = Thresholds()
) -> pd.DataFrame:
    """Every resource of every node in the test window, most saturated first.

    The statements go out as parallel requests: InfluxDB answers each on one core, and
    their cost is per series and aggregate, so a big cluster keeps several cores busy.
    """
    by_measurement: dict[str, list[Resource]] = {}
    for r in RESOURCES:
        by_measurement.setdefault(r.measurement, []).append(r)
    groups = list(by_measurement.values())
    plans = [level_queries(rs, t) for rs in groups]
    jobs: list[Callable[[], pd.DataFrame]] = [
        partial(statement_frame, client, q, params) for plan in plans for q, params in plan
    ]
    jobs += [
        partial(statement_frame, client, *saturation_query(r, getattr(th, r.threshold), t))
        for r in RESOURCES
    ]
    *got, nic, osd = parallel(
        [*jobs, partial(_nic_levels, client, t), partial(_osd_levels, client, t)]
    )
    results = iter(got)
    level: dict[str, pd.DataFrame] = {}
    for rs, plan in zip(groups, plans, strict=True):
        merged = _merge_on(list(rs[0].series), [next(results) for _ in plan])
        level.update({r.name: merged for r in rs})
    sat = list(results)
    frames = []
    for i, r in enumerate(RESOURCES):
        df = _levels(r, level[r.name], sat[i])
        if df.empty:
            continue
        if r.name == "cpu core":  # the hottest core per node
            df = df.sort_values("mean", ascending=False).drop_duplicates("node")
        df = df.rename(columns={"cpu": "device", "id": "device"})
        frames.append(df.assign(resource=r.name, unit=r.unit, threshold=getattr(th, r.threshold)))
    if not nic.empty:
        frames.append(nic.assign(resource="nic", unit="%", threshold=th.nic_pct))
    if not osd.empty:
        frames.append(osd.assign(resource="osd queue", unit="share", threshold=th.osd_queue_share))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["closeness"] = out["mean"] / out["threshold"]
    out["saturated_share"] = out["sat"] / out["n"]
    out.insert(0, "test", t.test)
    cols = ["test", "resource", "node", "role", "device", "mean", "unit", "threshold"]
    cols += ["closeness", "saturated_share"]
    # a level known only as a window mean (NIC, OSD queue) counts as saturated all the
    # window when that mean is past the threshold
    rank = out["saturated_share"].fillna((out["closeness"] >= 1.0).astype(float))
    order = np.lexsort((-out["closeness"].fillna(-1).to_numpy(), -rank.to_numpy()))
    return out[cols].iloc[order].reset_index(drop=True)


def run_bottlenecks(
    client: InfluxClient,
    run: str,
    th: Thresholds = Thresholds(),
    tests: list[TestWindow] | None = None,
) -> pd.DataFrame:
    tests = load_tests(client, run) if tests is None else tests
    frames = [test_bottlenecks(client, t, th) for t in tests if t.end_ns > t.start_ns]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def first_saturated(
    table: pd.DataFrame, tests: list[TestWindow], th: Thresholds = Thresholds()
) -> pd.DataFrame:
    """Per load family (same parameters but queue depth), the first resource to saturate.

    Tests are walked in QD order; the first one where some resource is past its
    threshold for `saturated_share` of the window (or its mean level is, when the share is
    not counted) names the most saturated resource there (the table's ranking).
    """
    if table.empty:
        return pd.DataFrame()
    fams: dict[tuple, list[TestWindow]] = {}
    for t in tests:
        key = tuple(
            sorted((k, str(v)) for k, v in t.params.items() if k not in ("iodepth", "numjobs"))
        )
        fams.setdefault(key, []).append(t)
    rows = []
    for key, ts in fams.items():
        family = ", ".join(f"{k}={v}" for k, v in key if k in ("rw", "bs"))
        found = None
        for t in sorted(ts, key=lambda x: x.qd or 0):
            sel = table[table["test"] == t.test]
            share = sel["saturated_share"]
            hot = sel[(share >= th.saturated_share) | (share.isna() & (sel["closeness"] >= 1.0))]
            if len(hot):
                found = (t, hot.iloc[0])
                break
        if found is None:
            rows.append({"family": family, "qd": None, "test": None, "resource": "none saturated"})
            continue
        t, r = found
        rows.append(
            {
                "family": family,
                "qd": t.qd,
                "test": t.test,
                "resource": f"{r['resource']} {r['node']}:{r['device']}",
                "closeness": r["closeness"],
                "saturated_share": r["saturated_share"],
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Check:
    test: str
    check: str
    status: str  # ok | warn | skipped
    value: float | None
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def cache_hits(
    client: InfluxClient, t: TestWindow, engine: ratios.RatioEngine, th: Thresholds
) -> list[Check]:
    """Client reads served without device reads: 1 - device reads / client reads.

    The devices are the one holding the test target on the test nodes (a /dev path, or
    the device whose mountpoint is the longest prefix of the target's path) plus every
    disk of storage nodes. The second estimate is the share of completions in the
    fastest latency mode (KDE peaks of the fine histogram): cache hits are an order of
    magnitude faster than device reads.
    """
    name = "cache hits"
    if "read" not in t.rw:
        return [Check(t.test, name, "skipped", None, f"rw={t.rw} has no reads")]
    dev = target_device(client, t)
    terms = [f"testnode.{dev}.reads"] if dev and dev in engine.catalog.diskio_devices else []
    if set(engine.resolver.aliases.get("storage", ())) & engine.catalog.roles:
        terms.append("storage.disk.reads")
    if not terms:
        return [Check(t.test, name, "skipped", None, "the target's device is unknown")]
    e = ratios.parse(name, f"({' + '.join(terms)}) / client.read.ios")
    r = engine.evaluate(e, t)
    hist, coarse = fine_histograms(client, t, window=True)
    counts = hist.get("read")
    out = []
    if np.isfinite(r.value):
        hit = float(np.clip(1.0 - r.value, 0.0, 1.0))
        status = "warn" if hit > th.cache_hit_warn else "ok"
        out.append(
            Check(
                t.test,
                name,
                status,
                hit,
                f"{r.value:.3f} device reads per client read: {hit:.0%} served from cache",
            )
        )
    else:
        out.append(
            Check(t.test, name, "skipped", None, "no client reads or no disk data in the window")
        )
    if counts is not None and counts.any():
        edges = histogram.bin_edges(coarse)
        mids = (edges[:-1] + edges[1:]) / 2
        modes, share = stats.kde_modes(mids, counts)
        detail = ", ".join(f"{m / 1e3:.1f} us ({s:.0%})" for m, s in zip(modes, share, strict=True))
        fast = float(share[0]) if len(modes) > 1 else 0.0
        out.append(
            Check(
                t.test,
                "latency modes",
                "ok",
                fast,
                f"modes: {detail}; fastest mode share {fast:.0%}",
            )
        )
    return out


def target_device(client: InfluxClient, t: TestWindow) -> str | None:
    """The device holding a test's target on its nodes, from wally_device mountpoints."""
    target = str(t.params.get("target", ""))
    if target.startswith("/dev/"):
        return target.rsplit("/", 1)[1]
    if not target.startswith("/"):
        return None
    params = {f"n{i}": n for i, n in enumerate(t.nodes)}
    nodes = " OR ".join(f'"node" = ${k}' for k in params)
    df = client.query_df(
        f'SELECT last("mountpoint") AS mp FROM {quote_ident(schema.WALLY_DEVICE.name)} '
        f'WHERE ({nodes}) GROUP BY "device"',
        params,
    )
    best, length = None, -1
    for dev, mps in zip(df.get("device", []), df.get("mp", []), strict=False):
        for mp in str(mps or "").split(","):
            inside = target == mp or target.startswith(mp.rstrip("/") + "/")
            if mp and inside and len(mp) > length:
                best, length = dev, len(mp)
    return best


def flushed(
    client: InfluxClient, t: TestWindow, engine: ratios.RatioEngine, th: Thresholds
) -> list[Check]:
    """Written data reached the storage before the test ended.

    Page cache: dirty memory of the test nodes at the end of the window vs its start.
    Ceph: bytes the OSDs took in (`osd.op_in_bytes`) vs client bytes written; skipped,
    with the reason, when the window has no Ceph data.
    """
    if "write" not in t.rw and "rw" not in t.rw:
        return [Check(t.test, "flushed", "skipped", None, f"rw={t.rw} writes nothing")]
    out = []
    params = {"s": t.start_ns, "e": t.end_ns}
    nodes = " OR ".join(f'"node" = $n{i}' for i in range(len(t.nodes)))
    params.update({f"n{i}": n for i, n in enumerate(t.nodes)})
    d = client.query_df(
        f'SELECT first("dirty") AS a, last("dirty") AS b FROM {quote_ident(schema.MEM.name)} '
        f'WHERE time >= $s AND time <= $e AND ({nodes}) GROUP BY "node"',
        params,
    )
    if d.empty:
        out.append(
            Check(t.test, "page cache flushed", "skipped", None, "no mem data for the test nodes")
        )
    else:
        grown = float((d["b"] - d["a"]).max()) / 2**20
        end = float(d["b"].max()) / 2**20
        status = "warn" if end > th.dirty_mib and grown > 0 else "ok"
        out.append(
            Check(
                t.test,
                "page cache flushed",
                status,
                end,
                f"dirty at end {end:.1f} MiB ({grown:+.1f} MiB in the window)",
            )
        )
    if "osd" not in engine.catalog.ceph_collections:
        out.append(
            Check(
                t.test,
                "ceph flushed",
                "skipped",
                None,
                "no Ceph data (ceph osd perf counters) in the database",
            )
        )
        return out
    e = ratios.parse("ceph flushed", "all.osd.op_in_bytes / client.write.bytes")
    try:
        r = engine.evaluate(e, t)
    except ratios.RatioError as err:
        out.append(Check(t.test, "ceph flushed", "skipped", None, err.reason))
        return out
    if not np.isfinite(r.value):
        out.append(
            Check(t.test, "ceph flushed", "skipped", None, "no Ceph data in the test window")
        )
    else:
        status = "warn" if r.value < 0.9 else "ok"
        out.append(
            Check(
                t.test,
                "ceph flushed",
                status,
                r.value,
                f"OSDs took in {r.value:.2f} bytes per client byte written",
            )
        )
    return out


def run_checks(
    client: InfluxClient,
    run: str,
    th: Thresholds = Thresholds(),
    tests: list[TestWindow] | None = None,
    **engine_kw: Any,
) -> pd.DataFrame:
    """Cache hit and flush checks of every fio test (engine_kw: see RatioEngine)."""
    tests = load_tests(client, run) if tests is None else tests
    engine = ratios.RatioEngine(client, **engine_kw)
    rows = []
    for t in tests:
        if t.kind != "fio" or t.end_ns <= t.start_ns:
            continue
        rows += cache_hits(client, t, engine, th) + flushed(client, t, engine, th)
    return pd.DataFrame([c.to_dict() for c in rows])

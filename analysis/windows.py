"""Which tests a run has and the time window each one's numbers are taken from.

Every later job selects sensor data by these windows (never by a run tag), so data from
Telegraf agents is analysed the same way as data from our own sensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd

from collector import schema
from collector.influx import InfluxClient, quote_ident, series_to_frame

NS = 1_000_000_000
QUERY_WORKERS = 4  # concurrent requests of one analysis job: InfluxDB runs each on a core
T = TypeVar("T")


class AnalysisError(ValueError):
    """Input the analysis cannot work with; the message names what and what was expected."""


class RunNotFound(AnalysisError):
    pass


@dataclass(frozen=True)
class TestWindow:
    """One test iteration: its nodes, parameters and the reliable window [start, end)."""

    run: str
    test: str
    kind: str
    status: str
    iteration: int
    nodes: tuple[str, ...]
    params: dict = field(hash=False)
    ramp_s: float
    first_start_ns: int
    last_end_ns: int
    start_ns: int  # latest node start + ramp
    end_ns: int  # earliest node stop

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / NS

    @property
    def qd(self) -> int | None:
        qd = self.params.get("iodepth")
        return None if qd is None else int(qd) * int(self.params.get("numjobs", 1) or 1)

    @property
    def rw(self) -> str:
        return str(self.params.get("rw", ""))

    @property
    def bs(self) -> str:
        return str(self.params.get("bs", ""))


def reliable_window(
    starts_ns: list[int],
    ends_ns: list[int],
    ramp_s: float,
    active: dict[int, tuple[int, int]] | None = None,
) -> tuple[int, int]:
    """From the latest node's start plus ramp to the earliest node's stop.

    Only there did every node run its load past warm-up. `active` (node index -> first
    and last second fio logged, as [start, end]) narrows a node's span to when its I/O
    really ran: process start-up and teardown are not load. An empty window
    (end <= start) is returned as is and flagged by the caller.
    """
    starts = [s + int(ramp_s * NS) for s in starts_ns]
    ends = list(ends_ns)
    for i, (a, b) in (active or {}).items():
        starts[i], ends[i] = max(starts[i], a), min(ends[i], b)
    return max(starts), min(ends)


def _fio_activity(client: InfluxClient, run: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(test, node) -> [start of the first logged second, end of the last one]."""
    m = quote_ident(schema.FIO.name)
    q = f'SELECT first("iops") FROM {m} WHERE "run" = $run GROUP BY "test", "node"'
    res = client.query(f"{q}; {q.replace('first(', 'last(')}", {"run": run})
    first, last = (series_to_frame(r["series"]) for r in res)
    if first.empty:
        return {}
    span = first.merge(last, on=["test", "node"], suffixes=("_a", "_b"))
    return {
        (r.test, r.node): (int(r.time_a) - NS, int(r.time_b)) for r in span.itertuples(index=False)
    }


def runs(client: InfluxClient) -> list[str]:
    """Run ids known to the database (from the tag index)."""
    return client.tag_values(schema.WALLY_TEST.name, "run")


def load_tests(client: InfluxClient, run: str) -> list[TestWindow]:
    """Every test of a run in execution order; a run id with no records is an error."""
    m = schema.WALLY_TEST.name
    df = client.query_df(
        f'SELECT "start", "end", "iteration", "params", "ramp" FROM {quote_ident(m)} '
        f'WHERE "run" = $run GROUP BY "test", "node", "kind", "status"',
        {"run": run},
    )
    if df.empty:
        known = runs(client)
        hint = f"; known runs: {', '.join(known[-10:])}" if known else "; the database has no runs"
        raise RunNotFound(f"run {run!r} not found in database {client.database!r}{hint}")
    activity = _fio_activity(client, run)
    out = []
    for test, g in df.groupby("test", sort=False):
        g = g.sort_values("time").drop_duplicates("node", keep="last")
        ramp = float(g["ramp"].fillna(0).max())
        active = {i: activity[(test, n)] for i, n in enumerate(g["node"]) if (test, n) in activity}
        start, end = reliable_window(
            [int(v) for v in g["start"]], [int(v) for v in g["end"]], ramp, active
        )
        out.append(
            TestWindow(
                run=run,
                test=str(test),
                kind=str(g["kind"].iloc[0]),
                status=",".join(sorted(set(g["status"]))),
                iteration=int(g["iteration"].iloc[0]),
                nodes=tuple(sorted(g["node"])),
                params=json.loads(g["params"].iloc[0] or "{}"),
                ramp_s=ramp,
                first_start_ns=int(g["start"].min()),
                last_end_ns=int(g["end"].max()),
                start_ns=start,
                end_ns=end,
            )
        )
    return sorted(out, key=lambda t: (t.iteration, t.test))


def windows_frame(tests: list[TestWindow]) -> pd.DataFrame:
    """The tests as a table (for reports and --json)."""
    return pd.DataFrame(
        [
            {
                "test": t.test,
                "kind": t.kind,
                "status": t.status,
                "nodes": len(t.nodes),
                "rw": t.rw,
                "bs": t.bs,
                "qd": t.qd,
                "start_ns": t.start_ns,
                "end_ns": t.end_ns,
                "duration_s": t.duration_s,
            }
            for t in tests
        ]
    )


def statement_frame(client: InfluxClient, q: str, params: dict) -> pd.DataFrame:
    """One statement's result as a long frame (the unit `parallel` runs)."""
    res = client.query(q, params)
    return series_to_frame(res[0]["series"]) if res else pd.DataFrame()


def parallel(calls: Sequence[Callable[[], T]], workers: int = QUERY_WORKERS) -> list[T]:
    """Results of independent queries, run as concurrent requests, in the calls' order.

    A query's first error is raised; the calls not started yet are cancelled (Ctrl+C
    too), the running ones finish first since a request cannot be interrupted.
    """
    if len(calls) <= 1:
        return [c() for c in calls]
    ex = ThreadPoolExecutor(max_workers=min(workers, len(calls)))
    try:
        futures = [ex.submit(c) for c in calls]
        return [f.result() for f in futures]
    finally:
        ex.shutdown(wait=True, cancel_futures=True)

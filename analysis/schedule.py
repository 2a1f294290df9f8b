"""`analysis schedule`: on every tick, a report of what happened in the last window.

A tick writes DIR/<UTC stamp>/: one report per run with tests in the window (only those
tests; the cluster sections cover the whole window) or, when nothing ran, one report of
the cluster's load; plus an index.html linking them, and DIR/index.html linking every
tick. Ticks never overlap: each holds an exclusive lock on DIR/.lock (flock, released
by the kernel even if the process dies), a tick that finds it held is skipped and
logged, and ticks missed while a long one ran are skipped rather than run in a burst.
Every tick appends one JSON line to DIR/ticks.jsonl (start, end, reports, skipped).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from analysis import page, report
from analysis.config import AnalysisSection
from analysis.page import Block, Section
from analysis.windows import NS, TestWindow, load_tests
from collector import schema
from collector.influx import InfluxClient, quote_ident

LOCK = ".lock"
TICKS = "ticks.jsonl"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str = "duration") -> float:
    """'90', '90s', '15m', '1h', '2d' -> seconds; anything else is a clear error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{what}: {text!r} is not a duration; expected e.g. 90s, 15m, 1h, 2d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def recent_tests(client: InfluxClient, lo_ns: int, hi_ns: int) -> dict[str, list[TestWindow]]:
    """Tests whose run overlaps [lo, hi], by run id (tests started up to a window earlier
    are looked at, so a long test still running into the window is found)."""
    m = quote_ident(schema.WALLY_TEST.name)
    df = client.query_df(
        f'SELECT last("start") AS s FROM {m} WHERE time >= $lo AND time <= $hi GROUP BY "run"',
        {"lo": lo_ns - (hi_ns - lo_ns), "hi": hi_ns},
    )
    out: dict[str, list[TestWindow]] = {}
    for run in df.get("run", []):
        tests = [
            t
            for t in load_tests(client, run)
            if t.last_end_ns >= lo_ns and t.first_start_ns <= hi_ns
        ]
        if tests:
            out[str(run)] = tests
    return out


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[bool]:
    """Hold DIR/.lock for the block; yields False (without waiting) if someone holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def _links_page(title: str, help_text: str, links: list[tuple[str, str]]) -> str:
    block = Block("links", items=links) if links else Block("empty", text="nothing yet")
    return page.render(title, [], [Section("reports", "Reports", help_text, [block])])


def tick(
    client: InfluxClient,
    out_dir: Path,
    window_s: float,
    section: AnalysisSection | None = None,
    now_ns: int | None = None,
) -> list[Path]:
    """One tick's reports (see the module doc); returns their paths."""
    hi = now_ns or time.time_ns()
    lo = hi - int(window_s * NS)
    stamp = datetime.fromtimestamp(hi / NS, UTC).strftime("%Y%m%d-%H%M%S")
    tick_dir = out_dir / stamp
    paths = []
    runs = recent_tests(client, lo, hi)
    for run, tests in runs.items():
        data = report.collect(
            client,
            tests,
            section,
            run=run,
            span=(lo, hi),
            title=f"Wally report: run {run}, {stamp}",
        )
        paths.append(report.write(data, tick_dir / f"{run}.html"))
    if not runs:
        data = report.collect(
            client, [], section, span=(lo, hi), title=f"Wally cluster load, {stamp}"
        )
        paths.append(report.write(data, tick_dir / "cluster.html"))
    (tick_dir / "index.html").write_text(
        _links_page(
            f"Wally reports {stamp}",
            f"Activity in the {window_s:g} s before {stamp} UTC.",
            [(p.name, p.name) for p in paths],
        ),
        encoding="utf-8",
    )
    ticks = sorted(
        (d.name for d in out_dir.iterdir() if (d / "index.html").is_file()), reverse=True
    )
    (out_dir / "index.html").write_text(
        _links_page(
            "Wally scheduled reports",
            "One entry per tick, newest first.",
            [(t, f"{t}/index.html") for t in ticks],
        ),
        encoding="utf-8",
    )
    return paths


def _log_tick(out_dir: Path, started: int, reports: list[Path], skipped: bool) -> None:
    line = {
        "started_ns": started,
        "ended_ns": time.time_ns(),
        "reports": [str(p) for p in reports],
        "skipped": skipped,
    }
    with (out_dir / TICKS).open("a") as f:
        f.write(json.dumps(line) + "\n")


def run_once(
    client: InfluxClient,
    out_dir: Path,
    window_s: float,
    section: AnalysisSection | None = None,
    log: Callable[[str], None] = print,
) -> list[Path] | None:
    """One tick under the lock; None when another tick holds it (skipped)."""
    started = time.time_ns()
    with exclusive(out_dir) as mine:
        if not mine:
            log(f"skipped: a report is still being written (lock {out_dir / LOCK} held)")
            _log_tick(out_dir, started, [], True)
            return None
        paths = tick(client, out_dir, window_s, section, started)
        _log_tick(out_dir, started, paths, False)
    log(f"wrote {', '.join(str(p) for p in paths)}")
    return paths


def run_schedule(
    client: InfluxClient,
    out_dir: Path,
    every_s: float,
    window_s: float,
    section: AnalysisSection | None = None,
    ticks: int | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Tick every `every_s` until Ctrl+C (or `ticks` ticks); returns the ticks run.

    A tick that overruns the period makes the missed ticks be skipped (logged), so
    reports are never written back to back to catch up.
    """
    next_at = time.monotonic()
    done = 0
    while ticks is None or done < ticks:
        wait = next_at - time.monotonic()
        if wait > 0:
            sleep(wait)
        run_once(client, out_dir, window_s, section, log)
        done += 1
        next_at += every_s
        late = time.monotonic() - next_at
        if late > 0 and (ticks is None or done < ticks):
            missed = math.ceil(late / every_s)
            next_at += missed * every_s
            log(f"the tick took longer than --every: {missed} tick(s) skipped")
    return done

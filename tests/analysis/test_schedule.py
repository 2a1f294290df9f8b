"""analysis schedule: ticks write reports of recent activity and never overlap."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from analysis import schedule


def _cmd(short_runs, *args):
    return [sys.executable, "-m", "analysis", "schedule", *args, *short_runs.db_args()]


def _ticks(out):
    path = out / schedule.TICKS
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_two_ticks_write_two_reports_without_overlap(short_runs, tmp_path):
    out = tmp_path / "reports"
    r = subprocess.run(
        _cmd(short_runs, "--every", "1s", "--window", "30m", "--out", str(out), "--ticks", "2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    ticks = _ticks(out)
    assert len(ticks) == 2 and not any(t["skipped"] for t in ticks)
    assert ticks[0]["ended_ns"] <= ticks[1]["started_ns"]
    runs = {r.run_id for r in short_runs.runs}
    dirs = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(dirs) == 2
    for d, t in zip(dirs, ticks, strict=True):
        assert {p.split("/")[-1] for p in t["reports"]} == {f"{run}.html" for run in runs}
        for run in runs:
            text = (d / f"{run}.html").read_text()
            assert "rep-randread-4k-qd1" in text and 'id="cluster"' in text
        assert all(f"{run}.html" in (d / "index.html").read_text() for run in runs)
    index = (out / "index.html").read_text()
    assert all(f"{d.name}/index.html" in index for d in dirs)


def test_a_tick_is_skipped_while_another_holds_the_lock(short_runs, tmp_path):
    out = tmp_path / "reports"
    with schedule.exclusive(out) as mine:
        assert mine
        r = subprocess.run(
            _cmd(short_runs, "--once", "--window", "5m", "--out", str(out)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    assert "skipped: a report is still being written" in r.stderr
    assert [t["skipped"] for t in _ticks(out)] == [True]
    assert not [d for d in out.iterdir() if d.is_dir()]


def test_quiet_window_reports_the_cluster(influx, tmp_path):
    paths = schedule.tick(influx, tmp_path, 600)
    assert [p.name for p in paths] == ["cluster.html"]
    text = paths[0].read_text()
    assert "No tests in this span" in text and "Wally cluster load" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_loop(short_runs, tmp_path, sig):
    out = tmp_path / "reports"
    proc = subprocess.Popen(
        _cmd(short_runs, "--every", "1h", "--window", "1m", "--out", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run in the background would hand SIGINT down ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not _ticks(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ticks(out), "the first tick did not finish"
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert len(_ticks(out)) == 1


@pytest.mark.parametrize("text", ["", "1x", "-5m", "0", "h"])
def test_bad_durations_are_named(text):
    with pytest.raises(ValueError, match=r"--every: .* is not a duration"):
        schedule.parse_duration(text, "--every")


def test_durations():
    assert schedule.parse_duration("90") == 90
    assert schedule.parse_duration("15m") == 900
    assert schedule.parse_duration("1h") == 3600
    assert schedule.parse_duration("1.5d") == 129600

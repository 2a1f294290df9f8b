"""The HTML report of a real run: written by `loadgen run`, opened in headless Chromium,
self-contained, escaped, exported; its figures carry the run's numbers."""

import asyncio
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from analysis import report, summary
from analysis.cli import main
from analysis.windows import RunNotFound
from collector import fio

NETWORK = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


def _cli(args, short_runs, **kw):
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args, *short_runs.db_args()],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


class _Resources(HTMLParser):
    """Every URL the markup would load or link to, and every element id."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self._style = False
        self.css = ""

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "action", "data", "poster", "srcset") and v is not None:
                self.urls.append(v)
            if k == "href" and v:
                self.hrefs.append(v)
            if k == "id" and v:
                self.ids.add(v)
            if k == "style" and v:
                self.css += v
        self._style = tag == "style"

    def handle_data(self, data):
        if self._style:
            self.css += data


@pytest.fixture(scope="module")
def written(short_runs, tmp_path_factory):
    """`analysis report` of the first run with its run dir and exports."""
    tmp = tmp_path_factory.mktemp("report")
    run = short_runs.runs[0]
    out, exports = tmp / "report.html", tmp / "exports"
    r = _cli(
        [
            *("report", run.run_id, "--out", str(out)),
            *("--run-dir", str(run.run_dir), "--export", str(exports)),
        ],
        short_runs,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return run, out, exports, r


def test_loadgen_run_writes_the_report_into_the_run_dir(short_runs):
    for run in short_runs.runs:
        page = run.run_dir / "report.html"
        assert f"report: {page}" in run.stderr
        text = page.read_text()
        assert run.run_id in text
        for sid in report.SECTION_IDS:
            assert f'id="{sid}"' in text, sid


def test_terminal_tables_and_files(written):
    _, out, _, r = written
    assert "tests (IOPS mean ±95% CI" in r.stdout
    assert "rep-randread" in r.stdout
    assert f"report: {out}" in r.stderr
    assert out.stat().st_size > 1_000_000  # plotly.js is inside


def test_every_section_in_the_menu_and_no_network_resource(written):
    _, out, *_ = written
    parsed = _Resources()
    parsed.feed(out.read_text())
    for sid in report.SECTION_IDS:
        assert sid in parsed.ids, sid
        assert f"#{sid}" in parsed.hrefs, f"menu has no link to {sid}"
    assert parsed.urls, "the menu links were not seen"
    remote = [u for u in parsed.urls if NETWORK.match(u)]
    assert not remote, remote
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", parsed.css)
    assert "@import" not in parsed.css
    text = out.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"<link[^>]*\bhref=", text)


def test_report_in_headless_chromium(written, chromium, tmp_path):
    """Renders with no console error and no request but the file itself; hover shows
    values; a legend click hides a series; the screenshot is a real image."""
    _, out, *_ = written
    shot = tmp_path / "report.png"

    async def go():
        async with chromium.page() as page:
            await page.open(out.resolve().as_uri())
            await page.pump(1.0)
            plots = await page.eval("document.querySelectorAll('.js-plotly-plot').length")
            drawn = await page.eval("document.querySelectorAll('.js-plotly-plot .main-svg').length")
            anchors = await page.eval(
                "Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))"
            )
            await page.eval("document.getElementById('qd').scrollIntoView()")
            await page.pump(0.3)
            box = await page.eval(
                "(() => { const p = document.querySelector('#qd .js-plotly-plot "
                ".scatterlayer .trace .points path'); const r = p.getBoundingClientRect();"
                " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
            )
            await page.mouse("mouseMoved", *box)
            await page.pump(0.5)
            hover = await page.eval(
                "Array.from(document.querySelectorAll('#qd .hoverlayer .hovertext'))"
                ".map(e => e.textContent).join(' | ')"
            )
            legend = await page.eval(
                "(() => { const e = document.querySelector('#qd .legend .traces');"
                " const r = e.getBoundingClientRect(); return [r.x + 20, r.y + r.height / 2]; })()"
            )
            await page.click(*legend)
            await page.pump(0.8)
            hidden = await page.eval(
                "document.querySelector('#qd .js-plotly-plot')._fullData[0].visible"
            )
            await page.eval("window.scrollTo(0, 0)")
            await page.screenshot(shot)
            return plots, drawn, anchors, hover, hidden, page.errors, page.requests

    plots, drawn, anchors, hover, hidden, errors, requests = asyncio.run(go())
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    assert plots >= 6 and drawn >= plots  # every plot rendered (some draw several svgs)
    assert [a.lstrip("#") for a in anchors] == list(report.SECTION_IDS)
    assert re.search(r"QD \d+: [\d,.]+", hover), hover  # the value under the mouse
    assert hidden == "legendonly"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_exports_hold_the_analysis_numbers(written, short_runs):
    run, _, exports, _ = written
    numbers = pd.read_csv(exports / "numbers.csv")
    expected = summary.numbers_frame(summary.run_numbers(short_runs.client, run.run_id))
    merged = numbers.merge(expected, on=["test", "op"], suffixes=("", "_truth"))
    assert len(merged) == len(expected) == 2
    assert (merged["iops_mean"] - merged["iops_mean_truth"]).abs().max() < 1e-6
    doc = json.loads((exports / "report.json").read_text())
    ydoc = yaml.safe_load((exports / "report.yaml").read_text())
    assert doc["run"] == ydoc["run"] == run.run_id
    assert {r["test"] for r in doc["tests"]} == {r["test"] for r in ydoc["tests"]}
    assert {r["test"] for r in doc["tests"]} == {"rep-randread-4k-qd1", "rep-randread-4k-qd4"}
    for name in ("ratios", "bottlenecks", "checks", "best_iops", "vs_qd", "nodes", "devices"):
        assert (exports / f"{name}.csv").is_file(), name
        assert name in doc


def test_figures_carry_every_completion_fio_counted(short_runs):
    """The latency heatmap holds each I/O once: its total is fio's own total_ios."""
    run = short_runs.runs[0]
    client = short_runs.client
    data = report.collect(client, report.run_tests(client, run.run_id), run=run.run_id)
    assert data.errors == {}
    for test, heat in data.latency_heatmaps.items():
        doc = fio.read_json(run.run_dir / "iterations" / test / "local" / "out.json")
        total = sum(j["read"]["total_ios"] for j in doc["jobs"])
        assert heat["count"].sum() == pytest.approx(total, rel=0.01), test
        assert len(data.throughput[test]) >= 1
        assert data.latency[test]["p50"].gt(0).all()
    assert set(data.load["metric"]) >= {"cpu busy %", "disk IOPS"}
    assert set(data.load["role"]) == {"testnode"}
    assert not data.resource_heatmaps["cpu"].empty


def test_user_strings_are_escaped_and_secrets_left_out(short_runs, tmp_path):
    run = short_runs.runs[0]
    hostile = tmp_path / "run"
    shutil.copytree(run.run_dir, hostile)
    cfg = yaml.safe_load((hostile / "config.yaml").read_text())
    cfg["influx"] = {"url": "http://127.0.0.1:1", "username": "u", "password": "hunter2-secret"}
    cfg["nodes"][0]["name"] = "<script>alert('node')</script>"
    (hostile / "config.yaml").write_text(yaml.safe_dump(cfg))
    with (hostile / "plan.txt").open("a") as f:
        f.write('<img src=x onerror=alert(1)>\tlocal\t{"rw": "</script><b>"}\n')
    client = short_runs.client
    data = report.collect(
        client, report.run_tests(client, run.run_id), run=run.run_id, run_dir=hostile
    )
    text = report.render(data)
    assert "hunter2-secret" not in text and "&lt;redacted&gt;" in text
    assert "<script>alert(" not in text and "&lt;script&gt;alert(" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "</script><b>" not in text


def test_unknown_run_says_how_to_find_runs(short_runs):
    r = CliRunner().invoke(main, ["report", "no-such-run", *short_runs.db_args()])
    assert r.exit_code == 2
    assert "run 'no-such-run' not found" in r.stderr
    assert 'SHOW TAG VALUES FROM wally_test WITH KEY = "run"' in r.stderr
    assert short_runs.runs[0].run_id in r.stderr  # the known runs are listed
    with pytest.raises(RunNotFound):
        report.run_tests(short_runs.client, "no-such-run")


def test_a_span_without_tests_shows_the_cluster_only(influx):
    import time

    now = time.time_ns()
    data = report.collect(influx, [], span=(now - 60 * 10**9, now))
    text = report.render(data)
    assert "No tests in this span" in text
    for sid in report.SECTION_IDS:
        assert f'id="{sid}"' in text
    with pytest.raises(ValueError, match="needs a time span"):
        report.collect(influx, [])

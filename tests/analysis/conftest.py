"""Two real short runs of one plan (fio on a local file through `loadgen run`), shared by
the report, compare and schedule tests: each run costs ~15 s, so they are made once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from collector.influx import InfluxClient, InfluxConfig


@dataclass
class ShortRun:
    run_id: str
    run_dir: Path
    doc: dict  # loadgen run --json
    stderr: str


@dataclass
class ShortRuns:
    client: InfluxClient
    runs: list[ShortRun]

    def db_args(self) -> list[str]:
        return ["--influx-url", self.client.url, "--database", self.client.database]


def _plan(tmp: Path) -> Path:
    suite = {
        "name": "rep",
        "target": str(tmp / "testfile"),
        "size": "16m",
        "engine": "libaio",
        "direct": True,
        "runtime": 2,
        "ramp_time": 0,
        "prefill": "skip",
        "rw": ["randread"],
        "bs": "4k",
        "iodepth": [1, 4],
    }
    plan = tmp / "lab.yaml"
    plan.write_text(
        yaml.safe_dump(
            {"nodes": [{"uri": "local", "roles": ["testnode"]}], "plan": {"suites": [suite]}}
        )
    )
    return plan


@pytest.fixture(scope="session")
def short_runs(influxd, tmp_path_factory) -> ShortRuns:
    """The plan (randread 4k at QD 1 and 4, 2 s each) run twice into one fresh database."""
    tmp = tmp_path_factory.mktemp("short-runs")
    client = InfluxClient(InfluxConfig(url=influxd.url, database=f"rep_{uuid.uuid4().hex[:10]}"))
    client.create_database()
    plan = _plan(tmp)
    runs = []
    for _ in range(2):
        r = subprocess.run(
            [
                *(sys.executable, "-m", "loadgen", "run", str(plan), "--json"),
                *(
                    "--runs-dir",
                    str(tmp),
                    "--influx-url",
                    client.url,
                    "--database",
                    client.database,
                ),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "WALLY_STATE_DIR": str(tmp / "state")},
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        runs.append(ShortRun(doc["run_id"], Path(doc["run_dir"]), doc, r.stderr))
    yield ShortRuns(client, runs)
    client.execute(f'DROP DATABASE "{client.database}"')

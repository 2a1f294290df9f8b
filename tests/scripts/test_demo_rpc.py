"""`make demo-rpc` (scripts/demo_rpc.py) for real: private RabbitMQ, examples/rpc.yaml,
the embedded InfluxDB under a temp state dir; the post-mortem counts what the plan sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def test_demo_rpc_runs_the_example_and_writes_its_post_mortem(tmp_path: Path) -> None:
    runs, state = tmp_path / "runs", tmp_path / "state"
    try:
        r = subprocess.run(
            [
                sys.executable,
                "scripts/demo_rpc.py",
                "--runs-dir",
                str(runs),
                "--state-dir",
                str(state),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "collector", "db", "stop", "--state-dir", str(state)],
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (run_dir,) = runs.iterdir()
    assert f"RPC post-mortem (opens offline): {run_dir / 'rpc' / 'rpc.html'}" in r.stdout
    table = pd.read_csv(run_dir / "rpc" / "rpc.csv")
    # examples/rpc.yaml: 300 calls per client with 1, 2, 4 clients; 2 clients x 100/s x 3 s
    assert list(table["sent_ok"]) == [300, 600, 1200, 600]
    assert list(table["received_ok"]) == list(table["sent_ok"])
    assert (table["sent_fail"] == 0).all()

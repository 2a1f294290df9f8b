"""The RPC side of the demo: a private RabbitMQ on loopback, examples/rpc.yaml pointed at
it and run for real by `loadgen run` (results in the embedded InfluxDB, like `make demo`,
and the run's RPC post-mortem in RUN_DIR/rpc/). The broker is stopped by PID on the way
out, also after an error or Ctrl+C (which `loadgen run` handles itself: this script waits
for it).

Run: `python scripts/demo_rpc.py [--runs-dir runs] [--state-dir .wally]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from loadgen.rpc.broker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "rpc.yaml"


def lab_for(broker: LocalBroker, example: Path = EXAMPLE) -> dict:
    """The example lab with its broker and management URLs on `broker`."""
    lab = yaml.safe_load(example.read_text())
    lab["rabbitmq"].update(url=broker.api, user=broker.user)
    lab["rpc"]["broker"].update(url=f"rabbit://127.0.0.1:{broker.amqp_port}/", user=broker.user)
    return lab


def run(args: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # it got the same Ctrl+C and is stopping its agents: let it finish
        raise


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    p.add_argument("--state-dir", type=Path, help="embedded InfluxDB's directory [./.wally]")
    args = p.parse_args()
    env = dict(os.environ)
    if args.state_dir is not None:
        env["WALLY_STATE_DIR"] = str(args.state_dir)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    before = set(args.runs_dir.iterdir())
    with (
        tempfile.TemporaryDirectory(prefix="wally-demo-rpc-") as tmp,
        LocalBroker(base=Path(tmp) / "rabbit") as broker,
    ):
        lab = Path(tmp) / "rpc.yaml"
        lab.write_text(yaml.safe_dump(lab_for(broker), sort_keys=False))
        env["WALLY_RABBIT_PASSWORD"] = broker.password
        rc = run(["loadgen", "run", str(lab), "--runs-dir", str(args.runs_dir)], env)
    new = sorted(set(args.runs_dir.iterdir()) - before)
    page = new[-1] / "rpc" / "rpc.html" if new else None
    if rc != 0 or page is None or not page.is_file():
        print(f"demo-rpc: the run failed (exit {rc}); see the messages above")
        return rc or 1
    print(f"\nRPC post-mortem (opens offline): {page}")
    print("The embedded InfluxDB keeps running; stop it with: collector db stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())

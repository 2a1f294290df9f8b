"""The run directory: everything a run measured, and what it left on its nodes.

```
runs/<run_id>/
  run.json                  state: iterations and their status, what lives on each node
  config.yaml               the lab config and plan as given (resume reads it back)
  plan.txt                  the compiled test list
  iterations/<name>/<node>/ job.fio, out.json (fio's own json+), fio-stream.json, fio logs
  report.html               written at the end by analysis
```

`run.json` is rewritten atomically after every change, so an interrupted run can be resumed
(`loadgen resume`) or cleaned (`loadgen cleanup`) from it alone.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass
class NodeLeftovers:
    """What a run created on one node; `cleanup` removes exactly this."""

    workdir: str = ""
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    prefilled: list[str] = field(default_factory=list)
    # RBD images (POOL/IMAGE) the run created: removed with `rbd rm` at cleanup.
    rbd_images: list[str] = field(default_factory=list)


@dataclass
class IterationState:
    name: str
    status: str = PENDING
    attempts: int = 0
    nodes: list[str] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunState:
    run_id: str
    config: str
    influx_url: str = ""
    database: str = ""
    status: str = RUNNING
    started_ns: int = 0
    ended_ns: int = 0
    # OSDs counted on the Ceph root node when the plan's QD sweep came from it (resume
    # compiles the same iterations with it).
    osd_count: int | None = None
    iterations: dict[str, IterationState] = field(default_factory=dict)
    nodes: dict[str, NodeLeftovers] = field(default_factory=dict)

    def node(self, name: str) -> NodeLeftovers:
        return self.nodes.setdefault(name, NodeLeftovers())


class RunDir:
    def __init__(self, path: Path, state: RunState) -> None:
        self.path = path
        self.state = state

    @classmethod
    def create(cls, root: Path, config_text: str, config_name: str) -> RunDir:
        run_id = new_run_id()
        path = root / run_id
        path.mkdir(parents=True)
        (path / "config.yaml").write_text(config_text)
        rd = cls(path, RunState(run_id=run_id, config=config_name, started_ns=time.time_ns()))
        rd.save()
        return rd

    @classmethod
    def load(cls, path: Path) -> RunDir:
        state_file = path / "run.json"
        try:
            raw = json.loads(state_file.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{state_file}: not a run directory (no run.json)") from None
        except ValueError as e:
            raise ValueError(f"{state_file}: not valid JSON: {e}") from None
        raw["iterations"] = {k: IterationState(**v) for k, v in raw.get("iterations", {}).items()}
        raw["nodes"] = {k: NodeLeftovers(**v) for k, v in raw.get("nodes", {}).items()}
        return cls(path, RunState(**raw))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def iteration_dir(self, name: str, node: str) -> Path:
        d = self.path / "iterations" / name / node
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save(self) -> None:
        tmp = self.path / "run.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state), indent=1, sort_keys=True))
        os.replace(tmp, self.path / "run.json")

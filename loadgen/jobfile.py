"""fio job files: one compiled iteration on one node, with every log the parsers read.

The job file is plain INI with a `[global]` section holding everything and one job
section named after the iteration (so fio's JSON `jobname` says which test it was). The
options that make the results usable are fixed here, not left to profiles:

- `time_based`, `runtime`, `ramp_time`: a fixed window, so nodes finish together;
- `write_bw_log`, `write_iops_log` and `write_hist_log` with `log_avg_msec=1000`,
  `log_hist_msec=1000`, `log_unix_epoch=1`, `per_job_logs=1`: per-second, epoch-stamped
  rates and clat histograms per job, what `collector.fio` re-grids and merges across
  nodes (percentiles come from the histograms, so averaged lat logs are not written);
- `group_reporting=0`: per-job sections in the JSON (the parsers merge jobs themselves);
- `thread=1`: all jobs in one fio process, so the runner stops one PID;
- `randrepeat=0`: nodes and repeats do not replay the same offsets (caches would flatter);
- `norandommap=1`, `fadvise_hint=0`: no offset bookkeeping, no page cache hints.

Paths (the job file, the JSON output, the log prefix) live in the per-iteration directory
the runner gives; every string written to the file passes `plan.check_fio_text`, and the
command line is given both as argv and shell-quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from loadgen.plan import Iteration, Target, check_fio_text, format_size

JOB_FILE = "job.fio"
JSON_FILE = "fio.json"
LOG_PREFIX = "fio"
LOG_MSEC = 1000

FIXED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("time_based", "1"),
    ("thread", "1"),
    ("randrepeat", "0"),
    ("norandommap", "1"),
    ("fadvise_hint", "0"),
    ("group_reporting", "0"),
    ("per_job_logs", "1"),
    ("log_unix_epoch", "1"),
    ("log_avg_msec", str(LOG_MSEC)),
    ("log_hist_msec", str(LOG_MSEC)),
)


@dataclass(frozen=True)
class JobFile:
    """A rendered job file and where fio will put its outputs (paths on the node)."""

    iteration: str
    node: str
    text: str
    path: str
    json_path: str
    log_prefix: str
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        """The argv as one shell-quoted command line (for SSH)."""
        return shlex.join(self.argv)

    def log_glob(self, kind: str) -> str:
        """`{prefix}_{kind}.*.log` (kind: bw, iops, clat_hist), one file per job."""
        return f"{self.log_prefix}_{kind}.*.log"


def fio_argv(job_path: str, json_path: str, fio: str = "fio") -> tuple[str, ...]:
    """The full command: json+ (per-job clat bins) into a file, so stdout stays free."""
    return (fio, "--output-format=json+", f"--output={json_path}", job_path)


def target_options(target: Target, rbd_client: str, base_dir: str) -> list[tuple[str, str]]:
    if target.kind == "rbd":
        return [("pool", target.pool), ("rbdname", target.image), ("clientname", rbd_client)]
    return [("filename", check_fio_text(target.resolve(base_dir), "target", filename=True))]


def render(it: Iteration, node: str, workdir: str, base_dir: str) -> JobFile:
    """The job file of `it` on `node`, writing its outputs into `workdir` (absolute, on the node).

    A relative file target is resolved against `base_dir` (the run directory on the node,
    so all iterations of a run share one test file and prefill it once).
    """
    work = PurePosixPath(check_fio_text(workdir, "workdir"))
    if not work.is_absolute():
        raise ValueError(f"workdir: expected an absolute path on the node, got {workdir!r}")
    target = it.target.for_node(node)
    prefix = str(work / LOG_PREFIX)
    options: list[tuple[str, str]] = [
        ("ioengine", it.engine),
        *target_options(target, it.rbd_client, base_dir),
    ]
    if it.size is not None:
        options.append(("size", format_size(it.size)))
    options += [
        ("direct", str(int(it.direct))),
        ("rw", it.rw),
        ("bs", format_size(it.bs)),
        ("iodepth", str(it.iodepth)),
        ("numjobs", str(it.numjobs)),
    ]
    if it.rwmixread is not None:
        options.append(("rwmixread", str(it.rwmixread)))
    if it.rate_iops is not None:
        options.append(("rate_iops", str(it.rate_iops)))
    options += [
        ("runtime", str(it.runtime)),
        ("ramp_time", str(it.ramp_time)),
        *FIXED_OPTIONS,
        ("write_bw_log", prefix),
        ("write_iops_log", prefix),
        ("write_hist_log", prefix),
        *it.options,
    ]
    job_path = str(work / JOB_FILE)
    json_path = str(work / JSON_FILE)
    argv = fio_argv(job_path, json_path)
    lines = [
        f"; Wally iteration {it.name} on node {_comment(node)}: suite {it.suite}, "
        f"profile {it.profile or '-'}, group {it.group or '-'}",
        f"; run: {_comment(shlex.join(argv))}",
        "[global]",
        *(f"{k}={check_fio_text(v, k)}" for k, v in options),
        "",
        f"[{check_fio_text(it.name, 'iteration name')}]",
        "",
    ]
    return JobFile(it.name, node, "\n".join(lines), job_path, json_path, prefix, argv)


def _comment(text: str) -> str:
    """Comment text on one line (node names and paths are checked elsewhere; be safe here)."""
    return " ".join(text.split())


def render_all(iterations: Sequence[Iteration], root: str) -> list[JobFile]:
    """Every iteration's job file for each of its nodes, in `root/ITERATION/NODE/`.

    What `loadgen plan --jobs DIR` writes; relative file targets resolve against `root`.
    The runner calls `render` with its own directories.
    """
    return [
        render(it, node, str(PurePosixPath(root) / it.name / node), root)
        for it in iterations
        for node in it.nodes
    ]

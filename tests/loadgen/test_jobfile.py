"""fio job files: a golden file, real fio accepting every built-in profile, a real short run.

`fio --parse-only` (Debian's fio) must accept every job file compiled from every built-in
profile, for file, block device and RBD targets. A real 1 s run of a compiled job file
shows fio writes what `collector.fio` reads: json+ with per-job sections named after the
iteration, and epoch-stamped per-second bw/iops and clat histogram logs under the prefix.

Run `python tests/loadgen/test_jobfile.py` to rewrite the golden file after a deliberate
change to the compiler (and review the diff).
"""

from __future__ import annotations

import glob
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from collector import fio
from collector.inventory import inventory_from_dict, load_inventory
from loadgen.jobfile import JOB_FILE, render, render_all
from loadgen.plan import builtin_profiles, check_fio_text, compile_plan

DATA = Path(__file__).resolve().parents[1] / "data" / "loadgen"
GOLDEN = DATA / "golden_lat_vs_iops.fio"
GOLDEN_CONFIG = """\
nodes:
  - uri: local
    roles: [testnode]
plan:
  suites:
    - profile: lat_vs_iops
      target: data/testfile
      size: 2g
      runtime: 20
      rw: randread
      rate_iops: 1000
      options: {randseed: 42, rate_process: linear}
"""


def write_lab(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def golden_job() -> str:
    inv = inventory_from_dict(yaml.safe_load(GOLDEN_CONFIG), "golden.yaml", check_files=False)
    (it,) = compile_plan(inv).iterations
    return render(it, "local", "/var/lib/wally/run1/x/local", "/var/lib/wally/run1").text


def fio_bin() -> str:
    path = shutil.which("fio")
    if path is None:
        raise RuntimeError("fio is not installed: apt-get install fio (scripts/apt-packages.txt)")
    return path


def parse_only(paths: list[str]) -> None:
    """fio --parse-only on all files in one call (fast); on failure, find the guilty file."""
    r = subprocess.run(
        [fio_bin(), "--parse-only", *paths], capture_output=True, text=True, timeout=60
    )
    if r.returncode == 0 and not r.stderr.strip():
        return
    for path in paths:
        r = subprocess.run(
            [fio_bin(), "--parse-only", path], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0 and not r.stderr.strip(), f"{path}:\n{r.stdout}{r.stderr}"
    raise AssertionError(f"fio rejects the files together but each alone: {r.stderr}")


def test_parse_only_catches_a_bad_file(tmp_path):
    """The check above is only worth something if fio --parse-only fails on a bad option."""
    good, bad = tmp_path / "good.fio", tmp_path / "bad.fio"
    good.write_text("[global]\nrw=read\n[j]\n")
    bad.write_text("[global]\nrw=sideways\n[j]\n")
    parse_only([str(good)])
    with pytest.raises(AssertionError, match=r"bad\.fio"):
        parse_only([str(good), str(bad)])


def test_golden_job_file():
    assert golden_job() == GOLDEN.read_text()
    # docs/fio-tasks.md shows it as the example: keep them in step.
    docs = (Path(__file__).resolve().parents[2] / "docs" / "fio-tasks.md").read_text()
    assert f"```ini\n{GOLDEN.read_text().rstrip()}\n```" in docs


@pytest.mark.parametrize("profile", builtin_profiles())
@pytest.mark.parametrize(
    "target", ["/srv/wally/{node}.dat", "/dev/vdb", "rbd:rbd/wally-{node}", "rel/testfile"]
)
def test_fio_parses_every_builtin_profile(tmp_path, profile, target):
    size = "size: 1g" if not target.startswith(("/dev", "rbd")) else ""
    lab = write_lab(
        tmp_path,
        "nodes:\n  - {uri: local, roles: [testnode]}\n  - {uri: a@h:22, name: n2, roles: [testnode]}\n"
        f"plan:\n  suites:\n    - profile: {profile}\n      target: '{target}'\n      {size}\n",
    )
    plan = compile_plan(load_inventory(lab, check_files=False))
    jobs = render_all(plan.iterations, str(tmp_path / "jobs"))
    assert len(jobs) == 2 * len(plan)
    for job in jobs:
        Path(job.path).parent.mkdir(parents=True, exist_ok=True)
        Path(job.path).write_text(job.text)
    parse_only([job.path for job in jobs])
    for job in jobs:
        options = dict(
            line.split("=", 1) for line in job.text.splitlines() if "=" in line and line[0] != ";"
        )
        if target.startswith("rbd"):
            assert options["rbdname"] == f"wally-{job.node}" and options["ioengine"] == "rbd"
        elif target.startswith("rel"):
            assert options["filename"] == str(tmp_path / "jobs" / "rel" / "testfile")
        else:
            assert options["filename"] == target.replace("{node}", job.node)
        assert options["write_hist_log"] == job.log_prefix


def test_real_run_writes_what_the_parsers_read(tmp_path):
    lab = write_lab(
        tmp_path,
        f"""\
nodes:
  - uri: local
    roles: [testnode]
plan:
  suites:
    - name: t
      target: {tmp_path}/target.dat
      size: 8m
      engine: psync
      direct: false
      runtime: 2
      ramp_time: 0
      rw: randwrite
      bs: 4k
      numjobs: 2
""",
    )
    (it,) = compile_plan(load_inventory(lab)).iterations
    work = tmp_path / "run" / it.name / "local"
    work.mkdir(parents=True)
    job = render(it, "local", str(work), str(tmp_path / "run"))
    Path(job.path).write_text(job.text)
    assert Path(job.path).name == JOB_FILE
    started = time.time()
    subprocess.run(shlex.split(job.command), check=True, capture_output=True, timeout=60)
    (tmp_path / "target.dat").unlink()

    doc = fio.read_json(job.json_path)
    assert [j["jobname"] for j in doc["jobs"]] == [it.name, it.name]  # group_reporting=0
    summary = fio.summary_frame(doc, job.json_path)
    assert list(summary["op"]) == ["write"] and list(summary["bs"]) == ["4k"]
    iops = sorted(glob.glob(job.log_glob("iops")))
    bw = sorted(glob.glob(job.log_glob("bw")))
    hist = sorted(glob.glob(job.log_glob("clat_hist")))
    assert len(iops) == len(bw) == len(hist) == 2  # per_job_logs=1
    logs = [fio.read_log(p) for p in iops]
    assert all(len(f) for f in logs)
    # log_unix_epoch=1: epoch milliseconds, within the run.
    t0 = min(int(f["time_ms"].min()) for f in logs)
    assert started - 1 < t0 / 1000 < time.time()
    # log_avg_msec=1000: one averaged sample per second per job.
    assert all(int(f["time_ms"].diff().dropna().min()) >= 900 for f in logs if len(f) > 1)
    rates = fio.rates_frame({"local": logs}, {"local": [fio.read_log(p) for p in bw]}, 1000)
    assert (rates["iops"] > 0).all()
    merged = fio.merge_hist_logs({"local": [fio.read_hist_log(p) for p in hist]})
    assert merged.counts.sum() > 0


@pytest.mark.parametrize(
    "text", ["a\nb", "a;b", "a#b", "$HOME", "a=b", " lead", "trail ", "", "a\rb"]
)
def test_text_that_would_change_a_job_line_is_rejected(text):
    with pytest.raises(ValueError, match="workdir"):
        check_fio_text(text, "workdir")


def test_workdir_must_be_absolute_and_command_is_shell_quoted(tmp_path):
    lab = write_lab(tmp_path, GOLDEN_CONFIG)
    it = compile_plan(load_inventory(lab, check_files=False)).iterations[0]
    with pytest.raises(ValueError, match="absolute"):
        render(it, "local", "relative/dir", "/base")
    with pytest.raises(ValueError, match="comment"):
        render(it, "local", "/tmp/a;b", "/base")
    job = render(it, "local", "/tmp/with space/it's", "/base")
    assert shlex.split(job.command) == list(job.argv)
    assert job.argv[1:3] == ("--output-format=json+", f"--output={job.json_path}")
    assert job.argv[-1] == job.path == "/tmp/with space/it's/job.fio"


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(golden_job())
    print(f"wrote {GOLDEN}", file=sys.stderr)

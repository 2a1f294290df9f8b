"""Plan validation and compilation: built-in profiles, sweep order, overrides, bad input.

Error tests check the message names the file, the line (found in the YAML text itself,
not hard-coded), the key path and what was expected.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from collector.inventory import InventoryError, load_inventory
from loadgen.cli import main
from loadgen.plan import (
    AXES,
    MIXED_RW,
    OVERHEAD_S,
    PlanError,
    builtin_profiles,
    compile_plan,
    format_duration,
    format_size,
    load_profile,
    parse_size,
    qd_from_osd_count,
)

ROOT = Path(__file__).resolve().parents[2]
NODES = """\
nodes:
  - uri: local
    roles: [testnode]
  - uri: alice@127.0.0.1:2222
    name: n2
    roles: [testnode, storage]
  - uri: bob@127.0.0.1:2223
    roles: [other]
"""


def lab(tmp_path: Path, plan: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(NODES + textwrap.dedent(plan))
    return path


def compiled(tmp_path: Path, plan: str, **kw):
    return compile_plan(load_inventory(lab(tmp_path, plan), check_files=False), **kw)


def line_of(path: Path, needle: str, after: str | None = None) -> int:
    """1-based line of the first line containing `needle` (after the line containing `after`)."""
    lines = path.read_text().splitlines()
    start = next(i for i, s in enumerate(lines) if after in s) if after else 0
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def plan_error(tmp_path: Path, plan: str, name: str = "lab.yaml") -> tuple[str, Path]:
    path = lab(tmp_path, plan, name)
    with pytest.raises(InventoryError) as exc:
        compile_plan(load_inventory(path, check_files=False))
    return str(exc.value), path


def expected_count(profile_name: str) -> int:
    """Iterations a profile yields, from its data: per group the product of its axes."""
    p = load_profile(profile_name)
    total = 0
    for g in p.groups:
        qd = p.qd_sweep if g.iodepth == "qd_sweep" else g.iodepth
        for rw in g.rw:
            mix = len(g.rwmixread or [None]) if rw in MIXED_RW else 1
            total += len(g.bs) * mix * len(g.numjobs or [1]) * len(qd) * len(g.rate_iops or [None])
    return total


# --- built-in profiles -----------------------------------------------------------------


def test_the_documented_profiles_are_shipped():
    assert {
        "ceph",
        "hdd",
        "cinder_iscsi",
        "check_linearity",
        "lat_vs_iops",
        "mixed",
        "sync",
    } <= set(builtin_profiles())


@pytest.mark.parametrize("profile", builtin_profiles())
def test_every_builtin_profile_compiles(tmp_path, profile):
    plan = compiled(
        tmp_path,
        f"""
        plan:
          suites:
            - profile: {profile}
              target: /tmp/wally/file
              size: 1g
        """,
    )
    assert len(plan) == expected_count(profile)
    names = [it.name for it in plan]
    assert len(set(names)) == len(names)
    assert [it.index for it in plan] == list(range(1, len(plan) + 1))
    p = load_profile(profile)
    for it in plan:
        assert re.fullmatch(
            rf"{profile}(-[a-z]+)?-[a-z]+-\d+[kmg]?-qd\d+(-j\d+)?(-r\d+)?(-\d+iops)?", it.name
        )
        assert it.nodes == ("local", "n2") and it.roles == ("testnode",)
        assert it.runtime == p.runtime and it.ramp_time == p.ramp_time
        assert it.expected_duration == p.runtime + p.ramp_time + OVERHEAD_S
        assert (it.rwmixread is not None) == (it.rw in MIXED_RW)
    assert plan.total_duration == sum(it.expected_duration for it in plan)


def test_ceph_profile_sweeps_qd_and_has_large_sequential_io(tmp_path):
    plan = compiled(tmp_path, "plan: {suites: [{profile: ceph, target: 'rbd:rbd/img'}]}\n")
    by_name = {it.name: it for it in plan}
    sweep = load_profile("ceph").qd_sweep
    assert [by_name[f"ceph-randwrite-4k-qd{q}"].iodepth for q in sweep] == sweep
    assert sweep[0] == 1 and sweep[-1] >= 64
    assert {(it.rw, it.bs) for it in plan} >= {("write", 1 << 20), ("read", 16 << 20)}
    # Stable order: randwrite over the whole QD sweep first, QD varying fastest.
    assert [it.name for it in plan][: len(sweep)] == [f"ceph-randwrite-4k-qd{q}" for q in sweep]
    rbd = plan.iterations[0]
    assert (rbd.engine, rbd.target.pool, rbd.target.image) == ("rbd", "rbd", "img")


def test_qd_sweep_follows_the_osd_count_when_known(tmp_path):
    plan_text = "plan: {suites: [{profile: ceph, target: 'rbd:rbd/img'}]}\n"
    plan = compiled(tmp_path, plan_text, osd_count=3)
    qds = [it.iodepth for it in plan if it.rw == "randwrite"]
    assert qds == qd_from_osd_count(3)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32, 100, 5000])
def test_qd_from_osd_count_is_a_power_of_two_ladder(n):
    qds = qd_from_osd_count(n)
    assert qds[0] == 1 and all(b == 2 * a for a, b in itertools.pairwise(qds))
    assert 16 <= qds[-1] <= 1024
    assert qds[-1] >= min(4 * n, 1024)


def test_user_profile_by_path_with_its_own_errors(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "description: mine\nruntime: 7\ngroups:\n  - rw: randread\n    bs: [4k, 64k]\n"
    )
    plan = compiled(tmp_path, "plan: {suites: [{profile: ./mine.yaml, target: /t/f, size: 1m}]}\n")
    assert [it.name for it in plan] == ["mine-randread-4k-qd1", "mine-randread-64k-qd1"]
    assert plan.iterations[0].runtime == 7

    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - rw: randread\n    bs: 4q\n")
    msg, path = plan_error(
        tmp_path, "plan: {suites: [{profile: bad.yaml, target: /t/f, size: 1m}]}\n"
    )
    assert f"{path}:{line_of(path, 'profile:')}: plan.suites[0].profile" in msg
    assert f"{bad}:3: groups[0].bs[0]" in msg and "fio units" in msg


# --- sweeps, overrides, names --------------------------------------------------------


def test_custom_suite_sweeps_in_the_documented_order(tmp_path):
    plan = compiled(
        tmp_path,
        """
        plan:
          suites:
            - name: s
              target: rel/file
              size: 64m
              rw: [randwrite, randrw]
              bs: [4k, 64k]
              rwmixread: [30, 70]
              numjobs: [1, 2]
              iodepth: [1, 8]
              rate_iops: 100
        """,
    )
    axes = {
        "rw": ["randwrite", "randrw"],
        "bs": [4096, 65536],
        "rwmixread": [30, 70],
        "numjobs": [1, 2],
        "iodepth": [1, 8],
        "rate_iops": [100],
    }
    want = []
    for values in itertools.product(*(axes[a] for a in AXES)):
        v = dict(zip(AXES, values, strict=True))
        v["rwmixread"] = v["rwmixread"] if v["rw"] in MIXED_RW else None
        if v not in want:
            want.append(v)
    assert [{a: getattr(it, a) for a in AXES} for it in plan] == want
    assert plan.iterations[0].name == "s-randwrite-4k-qd1-100iops"
    assert "s-randrw-64k-qd8-j2-r70-100iops" in {it.name for it in plan}


def test_suite_keys_override_the_profile(tmp_path):
    plan = compiled(
        tmp_path,
        """
        plan:
          suites:
            - profile: ceph
              target: /dev/vdb
              runtime: 2m
              ramp_time: 0
              iodepth: [1, 4]
              direct: false
              engine: io_uring
              options: {randseed: 7}
              roles: storage
              prefill: skip
              keep_files: true
        """,
    )
    assert {it.iodepth for it in plan} == {1, 4}
    for it in plan:
        assert (it.runtime, it.ramp_time, it.direct, it.engine) == (120, 0, False, "io_uring")
        assert ("randseed", "7") in it.options and it.nodes == ("n2",)
        assert (it.prefill, it.keep_files, it.target.kind, it.size) == ("skip", True, "block", None)


def test_iteration_names_are_unique_across_suites(tmp_path):
    msg, path = plan_error(
        tmp_path,
        """
        plan:
          suites:
            - {profile: mixed, target: /t/a, size: 1m}
            - {profile: mixed, target: /t/b, size: 1m}
        """,
    )
    assert f"{path}:{line_of(path, '/t/b')}: plan.suites[1]" in msg
    assert "already used by suites[0]" in msg


def test_plan_include_file(tmp_path):
    (tmp_path / "plans").mkdir()
    inc = tmp_path / "plans" / "p.yaml"
    inc.write_text("suites:\n  - profile: sync\n    target: /t/f\n    size: 1m\n    bs: 4q\n")
    msg, _ = plan_error(tmp_path, "plan: {include: plans/p.yaml}\n")
    assert f"{inc}:5: suites[0].bs[0]" in msg and "4q" in msg

    inc.write_text("plan:\n  suites:\n    - profile: sync\n      target: /t/f\n      size: 1m\n")
    plan = compiled(tmp_path, "plan: {include: plans/p.yaml}\n")
    assert len(plan) == expected_count("sync")


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("bs", "4q", "expected a size in fio units"),
        ("size", "10X", "expected a size in fio units"),
        ("runtime", "-5", "must not be negative"),
        ("runtime", "0", "positive duration"),
        ("ramp_time", "soon", "expected a duration"),
        ("profile", "cepj", "unknown profile 'cepj'; expected one of the built-in profiles"),
        ("engine", "libaoi", "Input should be 'libaio'"),
        ("rw", "randomwrite", "Input should be 'read'"),
        ("iodepth", "0", "greater than or equal to 1"),
        ("rwmixread", "120", "less than or equal to 100"),
        ("prefill", "sometimes", "'auto', 'force' or 'skip'"),
        ("iodepth", "[1, 2, 1]", "duplicate values in the sweep: 1"),
        ("target", "/tmp/a:b", "must not contain ':'"),
        ("target", "'/tmp/a;b'", "comment"),
        ("target", "rbd:pool", "rbd:POOL/IMAGE"),
        ("options", "{filename: /x}", "use the suite key `target`"),
        ("options", "{write_bw_log: x}", "the job compiler sets it"),
        ("options", "{randseed: '1=2'}", "key/value separator"),
        ("options", "{'Bad Name': 1}", "not a fio option name"),
        ("colour", "blue", "unknown key; expected one of:"),
    ],
)
def test_bad_values_name_the_key_and_line(tmp_path, key, value, expect):
    suite = {"target": "/tmp/t/file", "size": "1g", "rw": "randread", key: value}
    body = "\n      ".join(f"{k}: {v}" for k, v in suite.items())
    msg, path = plan_error(tmp_path, f"plan:\n  suites:\n    - {body}\n")
    assert f"{path}:{line_of(path, f'{key}: {value}')}: plan.suites[0].{key}" in msg
    assert expect in msg


@pytest.mark.parametrize(
    ("suite", "key", "expect"),
    [
        ("{profile: ceph, target: /t/f}", "size", "needs a size"),
        ("{profile: ceph, target: 'rbd:p/i', engine: libaio}", "engine", "expected engine rbd"),
        ("{profile: ceph, target: /dev/sdb, engine: rbd}", "target", "needs an RBD target"),
        ("{profile: ceph, target: /dev/sdb, rwmixread: 70}", "rwmixread", "no read/write mix"),
        ("{profile: mixed, target: /dev/sdb, rate_iops: 70}", "rate_iops", "does not sweep"),
        ("{target: /dev/sdb}", "rw", "expected rw"),
        ("{target: /dev/sdb, rw: read, rwmixread: 10}", "rwmixread", "needs a mixed rw"),
        ("{target: /dev/sdb, rw: read, bs: 1000}", "bs", "multiple of 512"),
        ("{target: /dev/sdb, rw: read, create_image: true}", "create_image", "for RBD targets"),
        ("{target: 'rbd:p/i', rw: read, create_image: true}", "size", "size of the image"),
        ("{target: /dev/sdb, rw: read, roles: [nobody]}", "roles", "roles present: testnode"),
        (
            "{target: '/t/{node}', size: 1m, rw: read, roles: other}",
            "target",
            "on node '127.0.0.1:2223'",
        ),
    ],
)
def test_inconsistent_suites_are_reported_at_their_key(tmp_path, suite, key, expect):
    msg, path = plan_error(tmp_path, f"plan:\n  suites:\n    - {suite}\n")
    assert f"{path}:{line_of(path, '- {')}: plan.suites[0].{key}: " in msg
    assert expect in msg
    assert isinstance(PlanError(msg), ValueError)


def test_all_errors_of_a_plan_come_together(tmp_path):
    msg, _ = plan_error(
        tmp_path,
        """
        plan:
          suites:
            - {profile: ceph, target: /t/f}
            - {target: /dev/sdb, rw: read, roles: nobody}
        """,
    )
    assert "invalid plan (2 errors)" in msg
    assert "suites[0].size" in msg and "suites[1].roles" in msg


def test_missing_plan_section(tmp_path):
    path = lab(tmp_path, "")
    with pytest.raises(PlanError, match=r"no `plan:` section"):
        compile_plan(load_inventory(path, check_files=False))


# --- values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("4k", 4096),
        ("4K", 4096),
        ("4KiB", 4096),
        ("1m", 1 << 20),
        ("16m", 16 << 20),
        ("10G", 10 << 30),
        ("512", 512),
        (4096, 4096),
    ],
)
def test_fio_units(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["4q", "4kb", "-4k", "0", "1.5m", "", "k", True, 0, -1])
def test_bad_fio_units(text):
    with pytest.raises(ValueError, match="fio units"):
        parse_size(text)


@given(st.integers(min_value=1, max_value=1 << 52))
def test_format_size_round_trips(n):
    assert parse_size(format_size(n)) == n


# --- the command ---------------------------------------------------------------------


def test_plan_command_on_the_example(tmp_path):
    example = ROOT / "examples" / "local.yaml"
    r = CliRunner().invoke(main, ["plan", str(example), "--json", "--jobs", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    its = doc["iterations"]
    assert doc["count"] == len(its) == 4
    assert {(i["params"]["rw"], i["params"]["bs"], i["params"]["iodepth"]) for i in its} == {
        (rw, "4k", qd) for rw in ("randwrite", "randread") for qd in (1, 8)
    }
    assert all(i["nodes"] == ["local"] and i["params"]["size"] == "64m" for i in its)
    assert all(i["params"]["runtime"] <= 5 for i in its)
    assert doc["total_duration_s"] == sum(i["expected_duration_s"] for i in its)
    for i in its:
        job = Path(i["job_files"]["local"])
        assert job == tmp_path / i["name"] / "local" / "job.fio" and job.is_file()

    r = CliRunner().invoke(main, ["plan", str(example)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for i in its:
        assert i["name"] in r.output
    assert "4 iterations" in r.output


def test_plan_command_reports_bad_input_and_exits_2(tmp_path):
    path = lab(tmp_path, "plan: {suites: [{target: /t/f, size: 1m, rw: read, bs: 4q}]}\n")
    r = CliRunner().invoke(main, ["plan", str(path)])
    assert r.exit_code == 2
    assert f"{path}:{line_of(path, 'bs: 4q')}: plan.suites[0].bs" in r.output


def test_docs_profile_table_matches_the_profiles(tmp_path):
    """docs/fio-tasks.md lists every built-in profile with its real count and duration."""
    doc = (ROOT / "docs" / "fio-tasks.md").read_text()
    rows = {
        m[1]: (int(m[2]), m[3])
        for m in re.finditer(r"^\| `(\w+)` \|[^|]*\| (\d+) \| (\w+) \|$", doc, re.MULTILINE)
    }
    assert set(rows) == set(builtin_profiles())
    for name, (count, duration) in rows.items():
        plan = compiled(
            tmp_path, f"plan: {{suites: [{{profile: {name}, target: /t/f, size: 1g}}]}}\n"
        )
        assert (len(plan), format_duration(plan.total_duration)) == (count, duration), name

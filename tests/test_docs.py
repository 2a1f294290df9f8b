import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_are_current():
    """docs/schema.md and docs/cli.md are generated from the code; regenerate after changes."""
    r = subprocess.run(
        [sys.executable, "scripts/gendocs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_every_command_has_help_with_an_example():
    from click.testing import CliRunner

    from analysis.cli import main as analysis_main
    from collector.cli import main as collector_main
    from dashboards.cli import main as dashboards_main
    from loadgen.cli import main as loadgen_main

    def walk(cmd, path):
        yield cmd, path
        for name in getattr(cmd, "commands", {}):
            yield from walk(cmd.commands[name], [*path, name])

    for top in (collector_main, loadgen_main, dashboards_main, analysis_main):
        for _cmd, path in walk(top, []):
            out = CliRunner().invoke(top, [*path, "--help"]).output
            assert "Example" in out, f"{top.name} {' '.join(path)} --help shows no example"

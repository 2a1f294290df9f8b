import json

from click.testing import CliRunner

from collector.cli import main
from collector.influx import InfluxClient, InfluxConfig
from collector.influxd import EmbeddedInfluxd


def test_embedded_start_reuse_stop(tmp_path):
    server = EmbeddedInfluxd(tmp_path)
    url = server.start()
    try:
        assert InfluxClient(InfluxConfig(url=url)).ping().startswith("1.")
        pid = server.status()["pid"]
        assert server.start() == url  # reused, not started twice
        assert server.status()["pid"] == pid
    finally:
        assert server.stop()
    assert not server.status()["running"]
    assert not server.stop()


def test_db_cli_status_json(tmp_path):
    runner = CliRunner()
    env = {"WALLY_STATE_DIR": str(tmp_path)}
    assert (
        json.loads(runner.invoke(main, ["db", "status", "--json"], env=env).output)["running"]
        is False
    )
    started = runner.invoke(main, ["db", "start"], env=env)
    assert started.exit_code == 0, started.output
    try:
        status = json.loads(runner.invoke(main, ["db", "status", "--json"], env=env).output)
        assert status["running"] is True
        assert status["database"] == "wally"
        InfluxClient(InfluxConfig(url=status["url"])).ping()
        assert "wally" in InfluxClient(InfluxConfig(url=status["url"])).databases()
    finally:
        assert runner.invoke(main, ["db", "stop"], env=env).exit_code == 0
    assert (
        json.loads(runner.invoke(main, ["db", "status", "--json"], env=env).output)["running"]
        is False
    )

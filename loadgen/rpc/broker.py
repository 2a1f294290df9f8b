"""A private RabbitMQ broker on loopback, and a pre-flight check of a broker URL.

Tests and benchmarks need a real broker that does not collide with a system one or with
other users of the machine: its own node name, AMQP/management/distribution ports,
data, logs, plugins file, Erlang cookie and even its own `epmd`, all under one temp dir.
Everything started is tracked by PID and stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


class BrokerError(RuntimeError):
    """The broker could not be started, reached or logged into; the message says which."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class AmqpUrl:
    host: str
    port: int
    user: str
    password: str
    vhost: str


def parse_url(url: str) -> AmqpUrl:
    """Split an oslo.messaging `rabbit://user:pass@host:port/vhost` transport URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("rabbit", "amqp"):
        raise BrokerError(f"broker URL {url!r}: expected scheme rabbit:// (or amqp://)")
    if not parts.hostname:
        raise BrokerError(f"broker URL {url!r}: no host")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return AmqpUrl(
        parts.hostname,
        parts.port or 5672,
        unquote(parts.username or "guest"),
        unquote(parts.password or "guest"),
        vhost,
    )


def check_url(url: str, timeout: float = 5.0) -> None:
    """Connect and log in once, so a dead broker or bad credentials fail fast and clearly.

    oslo.messaging retries such errors forever in the background; a load test must not
    start (or hang) against a broker it cannot use.
    """
    import amqp  # oslo.messaging's rabbit driver depends on it

    u = parse_url(url)
    safe = f"{u.user}@{u.host}:{u.port}"
    conn = amqp.Connection(
        f"{u.host}:{u.port}",
        userid=u.user,
        password=u.password,
        virtual_host=u.vhost,
        connect_timeout=timeout,
    )
    try:
        conn.connect()
    except amqp.exceptions.AccessRefused as exc:
        raise BrokerError(
            f"broker {safe}: login refused (wrong user or password?): {exc}"
        ) from None
    except amqp.exceptions.NotAllowed as exc:
        raise BrokerError(f"broker {safe}: vhost {u.vhost!r} not allowed: {exc}") from None
    except (OSError, amqp.exceptions.AMQPError) as exc:
        raise BrokerError(f"broker {safe} does not answer: {exc}") from None
    finally:
        conn.collect()


@dataclass
class LocalBroker:
    """One private RabbitMQ node; `start()`, `restart()`, `stop()`."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wally-rabbit-")))
    amqp_port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    user: str = "guest"
    password: str = "guest"
    startup_timeout: float = 90.0
    server: subprocess.Popen | None = None
    epmd: subprocess.Popen | None = None

    @property
    def nodename(self) -> str:
        return f"wally{self.amqp_port}@localhost"

    @property
    def url(self) -> str:
        return f"rabbit://{self.user}:{self.password}@127.0.0.1:{self.amqp_port}/"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def env(self) -> dict[str, str]:
        b = self.base
        env = dict(os.environ)
        env.update(
            HOME=str(b),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_CONFIG_FILE=str(b / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(b / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(b / "advanced.config"),
            RABBITMQ_MNESIA_BASE=str(b / "mnesia"),
            RABBITMQ_LOG_BASE=str(b / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(b / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(b / "plugins-expand"),
            RABBITMQ_PID_FILE=str(b / "rabbit.pid"),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _write_config(self) -> None:
        b = self.base
        b.mkdir(parents=True, exist_ok=True)
        cookie = b / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        (b / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            # fresher management counters, so tests can compare them sooner
            "collect_statistics_interval = 500\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        (b / "rabbitmq-env.conf").write_text("")
        (b / "advanced.config").write_text("[].\n")
        (b / "enabled_plugins").write_text("[rabbitmq_management].\n")

    def start(self) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise BrokerError(
                f"{RABBIT_BIN / 'rabbitmq-server'} not found: apt-get install rabbitmq-server"
            )
        self._write_config()
        env = self.env()
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        out = open(self.base / "server.out", "ab")  # noqa: SIM115 - owned by the child
        self.server = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=env,
            cwd=self.base,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                tail = (self.base / "server.out").read_text(errors="replace")[-2000:]
                raise BrokerError(f"rabbitmq-server exited with {self.server.returncode}:\n{tail}")
            try:
                r = requests.get(
                    f"{self.api}/api/overview", auth=(self.user, self.password), timeout=2
                )
                if r.status_code == 200 and r.json().get("node") == self.nodename:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"RabbitMQ {self.nodename} not ready after {self.startup_timeout} s")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node and return its output."""
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise BrokerError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def stop_server(self) -> None:
        """Stop the broker's process group by PID (SIGTERM is a clean shutdown)."""
        proc, self.server = self.server, None
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.1)
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start the same node (same data, ports): a broker outage for fault tests."""
        self.stop_server()
        self.start()

    def stop(self) -> None:
        self.stop_server()
        proc, self.epmd = self.epmd, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _group_alive(proc: subprocess.Popen) -> bool:
    """True while any process of the child's group (beam, helpers) is still running."""
    proc.poll()  # reap the wrapper script so it does not count as alive
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)

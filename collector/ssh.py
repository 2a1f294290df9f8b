"""Agentless access to nodes: run commands, stream long-lived processes, copy files.

`connect(node)` returns a `NodeConnection`; SSH nodes go through asyncssh, the `local`
node through asyncio subprocesses, with the same interface so the collector engine and the
load generator never care which is which. Every long-lived process is started through a
wrapper that prints its PID first: it runs in its own process group (sshd makes the login
shell a session leader; locally we ask for a new session) and `NodeProcess.kill` signals
that whole group by number, never by name.

Errors name the node and say what to do: wrong key, unknown host key, unreachable port.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import random
import shlex
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import asyncssh

from collector.inventory import Node

Command = str | Sequence[str]
_STDERR_TAIL = 8192
_SKEW_LOOP = "while read -r _; do date +%s.%N; done"


class SshError(RuntimeError):
    """Anything that went wrong reaching or using a node; `node` says which."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"node {node}: {message}")
        self.node = node


class AuthError(SshError):
    """The node refused our credentials: a permanent error, retrying will not help."""


class HostKeyError(SshError):
    """The node's host key is not in known_hosts (or differs): permanent, never retried."""


class UnreachableError(SshError):
    """Nothing answered on the port (refused, timed out, no route): may be transient."""


class ConnectionLostError(SshError):
    """An established connection dropped: the engine reconnects with backoff."""


class CommandError(SshError):
    """A command failed (non-zero exit with check=True, or it timed out)."""


class ClockSkewError(SshError):
    """The node's clock is too far from ours: every time window would be shifted."""


_TRANSIENT = (UnreachableError, ConnectionLostError)


def _brief(cmd: str, limit: int = 80) -> str:
    """A command as error messages show it: on one line, shortened (scripts are long)."""
    text = " ".join(cmd.split())
    return text if len(text) <= limit else text[:limit] + " …"


def quote(value: object) -> str:
    """Shell-quote one config value before it enters a command line."""
    return shlex.quote(str(value))


def to_shell(cmd: Command) -> str:
    """A command given as an argument list is joined with quoting; a string is used as is."""
    return cmd if isinstance(cmd, str) else shlex.join(str(a) for a in cmd)


def _pid_wrapper(cmd: Command) -> str:
    return f"echo $$; exec sh -c {shlex.quote(to_shell(cmd))}"


class RunResult(NamedTuple):
    rc: int
    out: str
    err: str


# --- processes -----------------------------------------------------------------------


class NodeProcess:
    """A long-lived command on a node: stream its stdout, feed its stdin, kill it by PID."""

    def __init__(
        self,
        conn: NodeConnection,
        command: str,
        pid: int,
        stdout: asyncio.StreamReader | asyncssh.SSHReader[bytes],
        stderr: asyncio.StreamReader | asyncssh.SSHReader[bytes],
        stdin: asyncio.StreamWriter | asyncssh.SSHWriter[bytes],
        wait: Callable[[], Awaitable[int | None]],
    ) -> None:
        self.conn = conn
        self.command = command
        self.pid = pid
        self._stdout = stdout
        self._stdin = stdin
        self._wait = wait
        self._stderr = b""
        # Drain stderr continuously: a full pipe/window would stall the process.
        self._stderr_task = asyncio.create_task(self._drain(stderr))
        self.returncode: int | None = None

    async def _drain(self, stream: asyncio.StreamReader | asyncssh.SSHReader[bytes]) -> None:
        with contextlib.suppress(Exception):
            while chunk := await stream.read(4096):
                self._stderr = (self._stderr + chunk)[-_STDERR_TAIL:]

    @property
    def node(self) -> str:
        return self.conn.node.name

    @property
    def stderr_tail(self) -> str:
        """The last few KB the process wrote to stderr, for error messages."""
        return self._stderr.decode(errors="replace")

    async def readline(self) -> bytes:
        """One line including its newline; b"" at end of stream."""
        try:
            return await self._stdout.readline()
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLostError(self.node, f"reading from {self.command!r}: {exc}") from exc

    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` bytes as they arrive; b"" at end of stream."""
        try:
            return await self._stdout.read(n)
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLostError(self.node, f"reading from {self.command!r}: {exc}") from exc

    async def lines(self) -> AsyncIterator[str]:
        """Decoded stdout lines without their newline, until the process ends."""
        while line := await self.readline():
            yield line.decode(errors="replace").rstrip("\n")

    async def chunks(self, n: int = 65536) -> AsyncIterator[bytes]:
        while chunk := await self.read(n):
            yield chunk

    async def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        try:
            self._stdin.write(data)
            await self._stdin.drain()
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLostError(self.node, f"writing to {self.command!r}: {exc}") from exc

    def close_stdin(self) -> None:
        """Signal end of input (a reader loop fed a script over stdin starts on EOF)."""
        with contextlib.suppress(Exception):
            if isinstance(self._stdin, asyncssh.SSHWriter):
                self._stdin.write_eof()
            else:
                self._stdin.close()

    async def wait(self, timeout: float | None = None) -> int | None:
        """Exit status (None if killed by a signal over SSH); TimeoutError if still running."""
        rc = await asyncio.wait_for(self._wait(), timeout)
        self.returncode = rc
        await asyncio.wait({self._stderr_task}, timeout=1.0)
        return rc

    async def kill(self, signame: str = "TERM") -> None:
        """Signal the process group by the PID we recorded at start."""
        sig = quote(signame)
        await self.conn.run(
            f"kill -s {sig} -- -{self.pid} 2>/dev/null || kill -s {sig} {self.pid} 2>/dev/null"
        )

    async def stop(self, grace: float = 3.0) -> int | None:
        """TERM, wait up to `grace` s, then KILL: how every started process is cleaned up."""
        if self.returncode is not None:
            return self.returncode
        self.close_stdin()
        with contextlib.suppress(SshError):
            await self.kill("TERM")
        try:
            return await self.wait(grace)
        except TimeoutError:
            with contextlib.suppress(SshError):
                await self.kill("KILL")
            return await self.wait(grace)


async def _read_pid(conn: NodeConnection, cmd: str, stdout, stderr) -> int:
    try:
        first = await asyncio.wait_for(stdout.readline(), conn.node.connect_timeout)
    except TimeoutError:
        first = b""
    text = first.decode(errors="replace").strip() if isinstance(first, bytes) else str(first)
    if not text.isdigit():
        err = b""
        with contextlib.suppress(Exception):
            err = await asyncio.wait_for(stderr.read(4096), 1.0)
        raise CommandError(
            conn.node.name,
            f"could not start {_brief(cmd)!r}: expected its PID on the first line, got {text!r}"
            f" (stderr: {err.decode(errors='replace').strip()!r})",
        )
    return int(text)


# --- connections ---------------------------------------------------------------------


class NodeConnection(abc.ABC):
    """What the collector and load generator do on a node, SSH or local."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def run(
        self,
        cmd: Command,
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> RunResult:
        """Run a command to completion; `check` raises CommandError on a non-zero exit."""
        shell = to_shell(cmd)
        result = await self._run(shell, input, timeout)
        if check and result.rc != 0:
            raise CommandError(
                self.node.name,
                f"{shell!r} exited with {result.rc}: {result.err.strip()[-500:]!r}",
            )
        return result

    async def start(self, cmd: Command) -> NodeProcess:
        """Start a long-lived command; its PID is known before any output is read."""
        return await self._start(to_shell(cmd))

    async def forward_back(self, port: int) -> tuple[int, Callable[[], None]]:
        """A port on the node's loopback that reaches `port` on our loopback, and how to
        close it. Over SSH this is reverse port forwarding, so node processes reach a server
        of ours through any firewall; the local node is us: the same port, nothing to close."""
        return port, lambda: None

    @abc.abstractmethod
    async def _run(self, shell: str, input: str | None, timeout: float | None) -> RunResult: ...

    @abc.abstractmethod
    async def _start(self, shell: str) -> NodeProcess: ...

    @abc.abstractmethod
    async def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file to the node."""

    @abc.abstractmethod
    async def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        """Copy a file from the node."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    async def __aenter__(self) -> NodeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timed_out(self, cmd: str, timeout: float | None) -> CommandError:
        return CommandError(self.node.name, f"{_brief(cmd)!r} did not finish within {timeout} s")


class LocalConnection(NodeConnection):
    """The collector's own machine, through asyncio subprocesses (no sshd needed)."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self._closed = False

    async def _run(self, shell: str, input: str | None, timeout: float | None) -> RunResult:
        proc = await asyncio.create_subprocess_shell(
            shell,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None), timeout
            )
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise self._timed_out(shell, timeout) from None
        except BaseException:
            _kill_group(proc.pid)
            raise
        rc = proc.returncode or 0
        # A signal shows as a negative returncode; report it the way a shell would.
        return RunResult(
            128 - rc if rc < 0 else rc, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def _start(self, shell: str) -> NodeProcess:
        proc = await asyncio.create_subprocess_shell(
            _pid_wrapper(shell),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout and proc.stderr and proc.stdin
        pid = await _read_pid(self, shell, proc.stdout, proc.stderr)
        return NodeProcess(self, shell, pid, proc.stdout, proc.stderr, proc.stdin, proc.wait)

    async def put(self, local: str | os.PathLike[str], remote: str) -> None:
        await asyncio.to_thread(shutil.copyfile, local, remote)

    async def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        await asyncio.to_thread(shutil.copyfile, remote, local)

    async def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)


class SshConnection(NodeConnection):
    """A node over one multiplexed SSH connection (channels per command, one SFTP session)."""

    def __init__(self, node: Node, conn: asyncssh.SSHClientConnection) -> None:
        super().__init__(node)
        self._conn = conn
        self._sftp: asyncssh.SFTPClient | None = None

    @contextlib.contextmanager
    def _lost(self, what: str) -> Iterator[None]:
        try:
            yield
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, ConnectionError) as exc:
            raise ConnectionLostError(self.node.name, f"{what}: {exc}") from exc

    async def _run(self, shell: str, input: str | None, timeout: float | None) -> RunResult:
        with self._lost(f"running {shell!r}"):
            try:
                res = await asyncio.wait_for(
                    self._conn.run(shell, input=input, check=False, errors="replace"), timeout
                )
            except TimeoutError:
                raise self._timed_out(shell, timeout) from None
        return RunResult(_exit_code(res), str(res.stdout or ""), str(res.stderr or ""))

    async def _start(self, shell: str) -> NodeProcess:
        with self._lost(f"starting {shell!r}"):
            proc = await self._conn.create_process(_pid_wrapper(shell), encoding=None)
        pid = await _read_pid(self, shell, proc.stdout, proc.stderr)

        async def wait() -> int | None:
            return (await proc.wait()).exit_status

        return NodeProcess(self, shell, pid, proc.stdout, proc.stderr, proc.stdin, wait)

    async def forward_back(self, port: int) -> tuple[int, Callable[[], None]]:
        try:
            with self._lost(f"forwarding a port back to local port {port}"):
                listener = await self._conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", port)
        except asyncssh.ChannelListenError as exc:
            raise CommandError(
                self.node.name,
                f"sshd refused reverse port forwarding ({exc}); allow it (AllowTcpForwarding)",
            ) from None
        return listener.get_port(), listener.close

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            with self._lost("starting SFTP"):
                self._sftp = await self._conn.start_sftp_client()
        return self._sftp

    async def put(self, local: str | os.PathLike[str], remote: str) -> None:
        sftp = await self._sftp_client()
        with self._lost(f"copying {local} to {remote}"):
            await sftp.put(os.fspath(local), remote)

    async def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        sftp = await self._sftp_client()
        with self._lost(f"copying {remote} to {local}"):
            await sftp.get(remote, os.fspath(local))

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()

    @property
    def closed(self) -> bool:
        return self._conn.is_closed()


def _exit_code(res: asyncssh.SSHCompletedProcess) -> int:
    """Exit status, or 128 + signal number like a shell when the command was killed."""
    if res.exit_signal:
        name = res.exit_signal[0]
        try:
            return 128 + signal.Signals[f"SIG{name}"].value
        except KeyError:
            return 128
    return res.exit_status if res.exit_status is not None and res.exit_status >= 0 else 128


# asyncssh's own order, AES-GCM first: with AES-NI it costs the node's sshd and this
# process (one AEAD call per packet) a fraction of chacha20-poly1305, which asyncssh
# prefers and computes in several calls per packet. A node without GCM negotiates another.
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


def _connect_options(node: Node) -> dict[str, object]:
    opts: dict[str, object] = {"encryption_algs": list(_CIPHERS), **node.ssh_options}
    opts["port"] = node.port
    opts["connect_timeout"] = node.connect_timeout
    if node.user:
        opts["username"] = node.user
    if node.key_file:
        opts["client_keys"] = [node.key_file]
    if not node.use_agent:
        opts["agent_path"] = None
    if node.ssh_config:
        opts["config"] = [node.ssh_config]
    if not node.host_key_checking:
        opts["known_hosts"] = None
    elif node.known_hosts:
        opts["known_hosts"] = node.known_hosts
    return opts


def _credentials(node: Node) -> str:
    parts = [f"user {node.user or '(default)'}"]
    parts.append(f"key {node.key_file}" if node.key_file else "default keys")
    if node.use_agent:
        parts.append("ssh-agent" if os.environ.get("SSH_AUTH_SOCK") else "no ssh-agent running")
    return ", ".join(parts)


async def connect(node: Node) -> NodeConnection:
    """Open a connection to `node`; errors say which node and what to fix."""
    if node.is_local:
        return LocalConnection(node)
    where = f"{node.host}:{node.port}"
    try:
        conn = await asyncssh.connect(node.host, **_connect_options(node))
    except asyncssh.PermissionDenied as exc:
        raise AuthError(
            node.name,
            f"authentication failed at {where} ({_credentials(node)}): {exc.reason}",
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        known = node.known_hosts or "~/.ssh/known_hosts"
        raise HostKeyError(
            node.name,
            f"host key of {where} not trusted by {known}: {exc.reason}. Add it "
            f"(ssh-keyscan -p {node.port} {node.host} >> {known}) or set "
            "host_key_checking: false",
        ) from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, FileNotFoundError) as exc:
        raise AuthError(node.name, f"cannot load key file {node.key_file}: {exc}") from None
    except TimeoutError:
        raise UnreachableError(
            node.name, f"{where}: no answer within {node.connect_timeout} s"
        ) from None
    except asyncssh.DisconnectError as exc:
        raise ConnectionLostError(node.name, f"{where} closed the connection: {exc}") from None
    except OSError as exc:
        # asyncio's message only says "Connect call failed"; the errno says why.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UnreachableError(node.name, f"cannot reach {where}: {reason}") from None
    return SshConnection(node, conn)


# --- reconnecting --------------------------------------------------------------------


def backoff_delays(
    initial: float = 0.5, factor: float = 2.0, max_delay: float = 30.0, jitter: float = 0.1
) -> Iterator[float]:
    """Exponential delays with a little jitter, so 200 nodes do not retry in lockstep."""
    delay = initial
    while True:
        yield delay * random.uniform(1 - jitter, 1 + jitter)
        delay = min(delay * factor, max_delay)


async def connect_with_retry(
    node: Node,
    *,
    attempts: int | None = None,
    deadline: float | None = None,
    delays: Iterable[float] | None = None,
    on_retry: Callable[[int, float, SshError], None] | None = None,
) -> NodeConnection:
    """Connect, retrying transient failures with backoff; auth and host-key errors fail at once.

    `attempts` bounds the tries, `deadline` the total seconds (either may be None for no
    bound); `on_retry(attempt, delay, error)` lets the engine show the gap as it happens.
    """
    start = time.monotonic()
    delay_iter = iter(delays if delays is not None else backoff_delays())
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect(node)
        except _TRANSIENT as exc:
            delay = next(delay_iter)
            out_of_tries = attempts is not None and attempt >= attempts
            late = deadline is not None and time.monotonic() - start + delay > deadline
            if out_of_tries or late:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            await asyncio.sleep(delay)


async def connect_all(nodes: Iterable[Node]) -> dict[str, NodeConnection | SshError]:
    """Connect to many nodes at once; one failing node does not stop the others."""
    nodes = list(nodes)
    results = await asyncio.gather(*(connect(n) for n in nodes), return_exceptions=True)
    out: dict[str, NodeConnection | SshError] = {}
    for node, res in zip(nodes, results, strict=True):
        if isinstance(res, BaseException) and not isinstance(res, SshError):
            raise res
        out[node.name] = res
    return out


# --- clock skew ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClockSkew:
    """Node clock minus collector clock, measured at the midpoint of the fastest round trip."""

    offset: float
    error: float

    def __float__(self) -> float:
        return self.offset


async def measure_skew(conn: NodeConnection, samples: int = 5) -> ClockSkew:
    """Ask the node's clock `samples` times over one channel; keep the tightest round trip.

    One long-lived loop avoids counting channel setup in the round trip; the node's time
    lies somewhere inside [send, receive], so half the round trip bounds the error.
    """
    proc = await conn.start(_SKEW_LOOP)
    best: ClockSkew | None = None
    try:
        for _ in range(samples):
            t0 = time.time()
            await proc.write(b"\n")
            line = await asyncio.wait_for(proc.readline(), conn.node.connect_timeout)
            t1 = time.time()
            text = line.decode(errors="replace").strip()
            try:
                node_time = float(text)
            except ValueError:
                raise CommandError(
                    conn.node.name,
                    f"clock query returned {text!r}, expected seconds since the epoch "
                    f"(GNU date +%s.%N); stderr: {proc.stderr_tail.strip()!r}",
                ) from None
            sample = ClockSkew(node_time - (t0 + t1) / 2, (t1 - t0) / 2)
            if best is None or sample.error < best.error:
                best = sample
    finally:
        proc.close_stdin()
        try:
            await proc.wait(2.0)
        except TimeoutError:
            await proc.stop()
    assert best is not None
    return best


def check_skew(node: Node, skew: ClockSkew, limit: float | None = None) -> None:
    """Refuse a node whose clock is certainly further off than `max_clock_skew`."""
    limit = node.max_clock_skew if limit is None else limit
    if abs(skew.offset) - skew.error > limit:
        raise ClockSkewError(
            node.name,
            f"clock is {skew.offset:+.3f} s (±{skew.error:.3f} s) off the collector's, above "
            f"max_clock_skew {limit} s; sync it (chrony/ntp) or raise max_clock_skew",
        )

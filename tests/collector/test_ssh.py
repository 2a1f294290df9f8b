"""SSH transport against real sshd nodes (and the local node through the same interface).

The sshd nodes run on this machine, so /proc and the clock are ground truth for what the
connections report: a PID must be a live process with our command line, the skew must be
zero within the measured error bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from collector import ssh
from collector.inventory import InventoryError, Node, inventory_from_dict
from tests.fixtures.sshd import SshdCluster, _free_port


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def nodes(cluster: SshdCluster, **defaults: Any) -> tuple[Node, ...]:
    return inventory_from_dict(cluster.lab_config(**defaults)).nodes


def local_node() -> Node:
    return inventory_from_dict({"nodes": [{"uri": "local", "roles": ["testnode"]}]}).nodes[0]


def both(cluster: SshdCluster) -> list[Node]:
    return [nodes(cluster)[0], local_node()]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_run_on_several_nodes_quotes_arguments(sshd_nodes: SshdCluster) -> None:
    tricky = 'it\'s a $HOME; `x` "y"'

    async def main() -> list[ssh.RunResult]:
        conns = await ssh.connect_all(nodes(sshd_nodes))
        assert all(isinstance(c, ssh.NodeConnection) for c in conns.values()), conns
        try:
            return await asyncio.gather(
                *(c.run(["printf", "%s|", tricky, "b c"]) for c in conns.values())
            )
        finally:
            for c in conns.values():
                await c.close()

    results = run(main())
    assert len(results) == 3
    for res in results:
        assert res == (0, f"{tricky}|b c|", "")


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_exit_codes_check_and_timeout(sshd_nodes: SshdCluster, kind: str) -> None:
    node = both(sshd_nodes)[kind == "local"]

    async def main() -> None:
        async with await ssh.connect(node) as conn:
            res = await conn.run("echo out; echo err >&2; exit 3")
            assert res == ssh.RunResult(3, "out\n", "err\n")
            assert (await conn.run("cat", input="fed\n")).out == "fed\n"
            with pytest.raises(ssh.CommandError, match=rf"node {node.name}: 'false' exited with 1"):
                await conn.run("false", check=True)
            with pytest.raises(ssh.CommandError, match=r"did not finish within 0\.3 s"):
                await conn.run("sleep 5", timeout=0.3)

    run(main())


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_started_process_pid_streams_and_kill(sshd_nodes: SshdCluster, kind: str) -> None:
    node = both(sshd_nodes)[kind == "local"]

    async def main() -> None:
        async with await ssh.connect(node) as conn:
            # A compound command: the PID is the process group that holds all of it.
            proc = await conn.start("while read -r x; do echo got:$x; done; echo bye >&2")
            await proc.write("a\nb\n")
            assert await proc.readline() == b"got:a\n"
            assert await proc.readline() == b"got:b\n"
            # the PID printed before exec is the PID of the command itself
            assert cmdline(proc.pid)[:2] == ["sh", "-c"]
            proc.close_stdin()
            assert [line async for line in proc.lines()] == []
            assert await proc.wait(5) == 0
            assert proc.stderr_tail == "bye\n"

            sleeper = await conn.start(["sh", "-c", "sleep 60 | cat; echo never"])
            await asyncio.sleep(0.2)
            assert Path(f"/proc/{sleeper.pid}").exists()
            await sleeper.stop(grace=3)
            assert not Path(f"/proc/{sleeper.pid}").exists()
            with pytest.raises(TimeoutError):
                proc2 = await conn.start("sleep 30")
                await proc2.wait(0.2)
            await proc2.stop()

    run(main())


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_put_and_get(sshd_nodes: SshdCluster, kind: str, tmp_path: Path) -> None:
    node = both(sshd_nodes)[kind == "local"]
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)

    async def main() -> None:
        async with await ssh.connect(node) as conn:
            await conn.put(src, str(tmp_path / "remote.bin"))
            await conn.get(str(tmp_path / "remote.bin"), tmp_path / "back.bin")

    run(main())
    assert (tmp_path / "remote.bin").read_bytes() == src.read_bytes()
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_clock_skew_is_zero_within_its_bound_on_the_same_clock(
    sshd_nodes: SshdCluster, kind: str
) -> None:
    node = both(sshd_nodes)[kind == "local"]

    async def main() -> ssh.ClockSkew:
        async with await ssh.connect(node) as conn:
            return await ssh.measure_skew(conn)

    skew = run(main())
    # Node and collector share one clock, so the true skew is 0 and lies inside the bound
    # (plus float rounding of epoch seconds).
    assert abs(skew.offset) <= skew.error + 1e-5
    assert 0 < skew.error < 1.0
    ssh.check_skew(node, skew)


def test_check_skew_refuses_a_node_certainly_too_far_off() -> None:
    node = local_node()
    ssh.check_skew(node, ssh.ClockSkew(offset=0.6, error=0.2))
    with pytest.raises(ssh.ClockSkewError, match=r"node local: clock is \+0\.800 s .*0\.5 s"):
        ssh.check_skew(node, ssh.ClockSkew(offset=0.8, error=0.1))
    with pytest.raises(ssh.ClockSkewError, match=r"-2\.000 s"):
        ssh.check_skew(node, ssh.ClockSkew(offset=-2.0, error=0.1), limit=1.0)


# --- faults -------------------------------------------------------------------------


def connect_error(node: Node) -> ssh.SshError:
    with pytest.raises(ssh.SshError) as err:
        run(ssh.connect(node))
    return err.value


def test_wrong_key_is_an_auth_error(sshd_nodes: SshdCluster) -> None:
    node = nodes(sshd_nodes, key_file=str(sshd_nodes.wrong_key_path))[1]
    err = connect_error(node)
    assert isinstance(err, ssh.AuthError)
    assert str(err).startswith(f"node {node.name}: authentication failed at 127.0.0.1:")
    assert str(sshd_nodes.wrong_key_path) in str(err)


def test_unknown_and_changed_host_keys_are_refused(sshd_nodes: SshdCluster, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    node = nodes(sshd_nodes, known_hosts=str(empty))[0]
    err = connect_error(node)
    assert isinstance(err, ssh.HostKeyError)
    assert f"node {node.name}: host key of 127.0.0.1:{node.port} not trusted by {empty}" in str(err)
    assert "host_key_checking: false" in str(err)

    other = Path(f"{sshd_nodes.other_host_key}.pub").read_text().strip()
    changed = tmp_path / "changed"
    changed.write_text(f"[127.0.0.1]:{node.port} {other}\n")
    assert isinstance(
        connect_error(nodes(sshd_nodes, known_hosts=str(changed))[0]), ssh.HostKeyError
    )

    # Turning checking off is explicit, and then the same node connects.
    unchecked = nodes(sshd_nodes, known_hosts=str(empty), host_key_checking=False)[0]

    async def unchecked_run() -> str:
        async with await ssh.connect(unchecked) as conn:
            return (await conn.run("echo in")).out

    assert run(unchecked_run()) == "in\n"


def test_unreachable_port(sshd_nodes: SshdCluster) -> None:
    port = _free_port()
    node = inventory_from_dict(
        {
            "defaults": sshd_nodes.lab_config()["defaults"],
            "nodes": [{"uri": f"root@127.0.0.1:{port}", "roles": ["testnode"]}],
        }
    ).nodes[0]
    err = connect_error(node)
    assert isinstance(err, ssh.UnreachableError)
    assert f"node 127.0.0.1:{port}: cannot reach 127.0.0.1:{port}" in str(err)
    assert "refused" in str(err).lower()


def test_malformed_uri_names_the_node() -> None:
    with pytest.raises(InventoryError, match=r"nodes\[1\]\.uri: expected 'local' or an SSH URI"):
        inventory_from_dict(
            {"nodes": [{"uri": "local", "roles": ["a"]}, {"uri": "root@host:ssh", "roles": ["a"]}]}
        )


def test_auth_errors_are_not_retried(sshd_nodes: SshdCluster) -> None:
    node = nodes(sshd_nodes, key_file=str(sshd_nodes.wrong_key_path))[0]
    retries: list[int] = []
    with pytest.raises(ssh.AuthError):
        run(ssh.connect_with_retry(node, attempts=5, on_retry=lambda a, d, e: retries.append(a)))
    assert retries == []


def test_killed_sshd_drops_connections_and_reconnect_succeeds_after_restart(
    sshd_nodes: SshdCluster,
) -> None:
    all_nodes = nodes(sshd_nodes)
    victim = all_nodes[2]
    retries: list[tuple[int, str]] = []

    async def main() -> None:
        conns = {n.name: await ssh.connect(n) for n in all_nodes}
        reader = await conns[victim.name].start("while :; do echo tick; sleep 0.1; done")
        assert await reader.readline() == b"tick\n"
        sshd_nodes.stop(2)
        with pytest.raises(ssh.ConnectionLostError, match=f"node {victim.name}"):
            for _ in range(100):
                await reader.readline()
                await conns[victim.name].run("true")
        # The other nodes are not disturbed.
        for n in all_nodes[:2]:
            assert (await conns[n.name].run("echo ok")).out == "ok\n"

        asyncio.get_running_loop().call_later(0.8, sshd_nodes.start, 2)
        conn = await ssh.connect_with_retry(
            victim,
            deadline=20,
            delays=[0.2, 0.4, 0.8, 1.6, 3.2, 6.4],
            on_retry=lambda a, d, e: retries.append((a, type(e).__name__)),
        )
        assert (await conn.run("echo back")).out == "back\n"
        for c in [*conns.values(), conn]:
            await c.close()

    run(main())
    assert retries and all(name == "UnreachableError" for _, name in retries)


def test_retry_gives_up_after_attempts(sshd_nodes: SshdCluster) -> None:
    port = _free_port()
    node = Node("gone", ("testnode",), host="127.0.0.1", port=port, connect_timeout=2)
    seen: list[float] = []
    with pytest.raises(ssh.UnreachableError, match="node gone"):
        run(
            ssh.connect_with_retry(
                node, attempts=3, delays=[0.01, 0.02, 0.04], on_retry=lambda a, d, e: seen.append(d)
            )
        )
    assert seen == [0.01, 0.02]


def test_backoff_delays_grow_to_the_cap() -> None:
    gen = ssh.backoff_delays(initial=1, factor=2, max_delay=5, jitter=0)
    assert [next(gen) for _ in range(5)] == [1, 2, 4, 5, 5]

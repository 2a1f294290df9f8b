"""RPC agents on nodes: the command that starts one, the node's Python check, clock pairs.

Nothing is installed on a node. Like the collector's reader, an agent arrives as source with
its command (`python3 -c BOOT ARGS`): the boot script turns the shipped sources of
`loadgen.rpc.stats` and `loadgen.rpc.agent` into modules and runs the agent's `main`. So a
node runs exactly the loadgen's version of the agent, nothing is left behind to remove, and
no SFTP subsystem or writable directory is needed. What the node needs is a Python 3 with
oslo.messaging and hdrhistogram (and eventlet for that executor); `check_python` says which
one lacks what.

The local node (and a side without nodes) runs agents as local processes with the loadgen's
own interpreter, as `python -m loadgen.rpc.agent`.

One-way latency (rpc-cast, rpc-fanout, notify; the server side of rpc-call) is the
receiver's clock minus the sender's stamp, so a clock difference between their nodes adds
to every message. `clock_pairs` gives each sending/receiving node pair's difference from
the nodes' skews against the loadgen machine (`collector.ssh.measure_skew`).
"""

from __future__ import annotations

import inspect
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from collector.ssh import ClockSkew, NodeConnection, quote
from loadgen.rpc import agent, stats
from loadgen.rpc.controller import Placed

# What an agent imports on the node: module name -> pip name; eventlet-executor agents
# also import eventlet.
NEEDED = {"oslo_messaging": "oslo.messaging", "hdrh": "hdrhistogram"}
GREEN = {"eventlet": "eventlet"}
_MISSING_RC = 3

_BOOT = """import linecache, sys, types
def _module(name, source):
    m = types.ModuleType(name)
    m.__file__ = "<wally %s>" % name
    if source is None:
        m.__path__ = []
    sys.modules[name] = m
    if source is not None:
        linecache.cache[m.__file__] = (len(source), None, source.splitlines(True), m.__file__)
        exec(compile(source, m.__file__, "exec"), m.__dict__)
    return m
"""

_CHECK = f"""import sys
bad = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception as e:
        bad.append("%s (%s: %s)" % (name, type(e).__name__, e))
print("; ".join(bad))
sys.exit({_MISSING_RC} if bad else 0)
"""


def boot_script() -> str:
    """The agent's package as one script: each module from its shipped source, then `main`."""
    parts = [_BOOT, '_module("loadgen", None)', '_module("loadgen.rpc", None)']
    for mod in (stats, agent):
        parts.append(f"_module({mod.__name__!r}, {inspect.getsource(mod)!r})")
    parts.append('sys.modules["loadgen.rpc.agent"].main_and_exit(sys.argv[1:])')
    return "\n".join(parts) + "\n"


def agent_command(args: Sequence[str], python: str | None) -> str:
    """Shell command starting one agent, its output merged into stdout (which the run keeps
    as the agent's log). `python` None: a local process with the loadgen's interpreter."""
    if python is None:
        head = [sys.executable, "-m", "loadgen.rpc.agent"]
    else:
        head = [python, "-c", boot_script()]
    return f"exec {shlex.join([*head, *args])} 2>&1"


def modules_for(executors: Iterable[str]) -> dict[str, str]:
    """What agents with these executors import on a node (module -> pip name)."""
    return {**NEEDED, **(GREEN if "eventlet" in executors else {})}


async def check_python(
    conn: NodeConnection, python: str, modules: Mapping[str, str] = NEEDED
) -> str | None:
    """None if `python` on the node imports `modules`; else what is wrong, saying which
    interpreter lacks which module and how to fix it."""
    res = await conn.run(f"{quote(python)} -c {quote(_CHECK)} {' '.join(modules)}", timeout=120)
    if res.rc == 0:
        return None
    if res.rc == _MISSING_RC:
        missing = [m for m in modules if f"{m} (" in res.out]
        pip = " ".join(modules[m] for m in missing)
        return (
            f"{python} cannot import what RPC agents need: {res.out.strip()}; install them "
            f"for that interpreter (pip install {pip}) or set rpc.agents.python/node_python"
        )
    err = (res.err or res.out).strip()[-300:]
    return (
        f"cannot run RPC agents' python {python!r} (exit {res.rc}: {err!r}); "
        "set rpc.agents.python or rpc.agents.node_python to a Python 3 with oslo.messaging"
    )


@dataclass(frozen=True)
class ClockPair:
    """Receiver node's clock minus sender node's, with the error bound of the measurement."""

    sender: str
    receiver: str
    offset: float
    error: float

    @property
    def bound(self) -> float:
        """The most the pair's clocks may differ by: what one-way latencies are uncertain by."""
        return abs(self.offset) + self.error

    def too_far(self, limit: float) -> bool:
        """Certainly further apart than `limit` (as `collector.ssh.check_skew` decides)."""
        return abs(self.offset) - self.error > limit

    def describe(self, limit: float) -> str:
        return (
            f"clocks of sender node {self.sender} and receiver node {self.receiver} differ by "
            f"{self.offset * 1e3:+.3f} ms (±{self.error * 1e3:.3f} ms), above "
            f"rpc.agents.max_clock_skew {limit * 1e3:g} ms: one-way latencies would be off by "
            "that much; sync the clocks (chrony/ntp) or raise the limit"
        )


def clock_pairs(placed: Mapping[str, Placed], skews: Mapping[str, ClockSkew]) -> list[ClockPair]:
    """Every (sender node, receiver node) pair of different nodes whose agents share a topic,
    with their clock difference; `skews` are the nodes' skews against the loadgen machine."""
    send = {(p.node, p.topic) for p in placed.values() if p.sender}
    recv = {(p.node, p.topic) for p in placed.values() if not p.sender}
    pairs = sorted({(s, r) for s, ts in send for r, tr in recv if ts == tr and s != r})
    return [
        ClockPair(s, r, skews[r].offset - skews[s].offset, skews[r].error + skews[s].error)
        for s, r in pairs
    ]

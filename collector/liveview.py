"""The live terminal view: a rich table on a TTY, plain progress lines otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from collector.engine import NodeStatus


def node_table(status: Mapping[str, NodeStatus], title: str = "collector") -> Table:
    table = Table(title=title, expand=False)
    for col, justify in (
        ("node", "left"),
        ("state", "left"),
        ("samples", "right"),
        ("points", "right"),
        ("last sample", "right"),
        ("reconnects", "right"),
        ("last error", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    now = time.time_ns()
    for name, st in sorted(status.items()):
        age = f"{(now - st.last_sample_ns) / 1e9:.1f} s ago" if st.last_sample_ns else "-"
        state = "[green]up[/]" if st.connected else "[red]down[/]"
        table.add_row(
            name,
            state,
            str(st.samples),
            str(st.points),
            age,
            str(st.reconnects),
            st.last_error[-80:],
        )
    return table


def plain_lines(status: Mapping[str, NodeStatus]) -> list[str]:
    return [
        f"{name}: {'up' if st.connected else 'down'} samples={st.samples} points={st.points}"
        f" reconnects={st.reconnects}"
        + (f" last_error={st.last_error[-120:]!r}" if st.last_error else "")
        for name, st in sorted(status.items())
    ]


async def show_while(
    work: Awaitable[None],
    render: Callable[[], RenderableType],
    lines: Callable[[], list[str]],
    console: Console | None = None,
    plain_every: float = 10.0,
) -> None:
    """Run `work`, refreshing the view until it finishes (a TTY gets a live table)."""
    console = console or Console(stderr=True)
    task = asyncio.ensure_future(work)
    try:
        if console.is_terminal:
            with Live(render(), console=console, refresh_per_second=2, transient=False) as live:
                while not task.done():
                    await asyncio.wait({task}, timeout=0.5)
                    live.update(render())
        else:
            while not task.done():
                await asyncio.wait({task}, timeout=plain_every)
                for line in lines():
                    console.print(line, markup=False, highlight=False)
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

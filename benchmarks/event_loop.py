"""One event loop serving many conversations: ``python -m benchmarks.event_loop [--conversations 1 100 1000]``.

One process, one ``asyncio`` loop, N concurrent conversations of ``--turns`` turns each, streamed with
``stream_async`` on a model that awaits a simulated latency and streams its reply in chunks
(``ScriptedModel(delay, chunks, chunk_delay)``), against a throwaway ``valkey-server`` on loopback. A ticker
task measures the loop's lag (how late a 1 ms sleep wakes: p50, p99, max); each turn's time and the turns per
second are measured too, for each way of keeping the sessions:

- ``none``: no session manager (the limit);
- ``sync client``: ``ValkeySessionManager`` on a ``valkey.Valkey`` (its hooks block the loop for each round trip);
- ``sync in to_thread``: the same, each hook and the construction run by ``asyncio.to_thread`` (what AgentCore's
  ``async_mode`` does);
- ``asyncio client``: ``await ValkeySessionManager.open(...)`` on a ``valkey.asyncio.Valkey`` (hooks await);
- ``GLIDE asyncio client``: the same on an asyncio ``glide.GlideClient`` (the ``glide`` extra), made on the loop;
- ``FileSessionManager`` (the SDK's, on local disk);
- ``SnapshotSessionManager`` over ``ValkeyStorage``.

Every conversation opens its session, builds its agent, then runs its turns. Prints one table; the ratios to
``none`` are what to quote (the machine is shared: absolute figures move with its load).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from typing import Any

import valkey
import valkey.asyncio
from strands import Agent
from strands.hooks import AgentInitializedEvent, HookRegistry, MultiAgentInitializedEvent
from strands.session import FileSessionManager, SnapshotSessionManager

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.connection import glide_configuration
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

from .timing import percentile

#: The simulated model: this long before the reply starts, then this many chunks, this far apart.
LATENCY, CHUNKS, CHUNK_DELAY = 0.05, 8, 0.002
#: Connections the asyncio clients may open (a web worker caps its pool too).
POOL = 64


class ToThreadManager(ValkeySessionManager):
    """The synchronous manager with each hook run by ``asyncio.to_thread``, as AgentCore's ``async_mode`` does."""

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        """Register the manager's hooks, each (but the initializations, which must stay sync) in a worker thread."""
        manager = self

        class Threaded:
            def add_callback(self, event_type: Any, callback: Callable[[Any], Any]) -> None:
                if event_type in (AgentInitializedEvent, MultiAgentInitializedEvent):
                    registry.add_callback(event_type, callback)
                    return

                async def hook(event: Any) -> None:
                    await asyncio.to_thread(callback, event)

                registry.add_callback(event_type, hook)

        ValkeySessionManager.register_hooks(manager, Threaded(), **kwargs)  # type: ignore[arg-type]


Opener = Callable[[str], Awaitable[Any]]


def openers(port: int, files: str) -> dict[str, Opener]:
    """How each configuration opens a conversation's session manager (``None``: no manager)."""
    sync_client = valkey.Valkey(port=port)
    async_client = valkey.asyncio.Valkey(
        connection_pool=valkey.asyncio.BlockingConnectionPool(port=port, max_connections=POOL)
    )
    storage = ValkeyStorage(valkey.asyncio.Valkey(port=port))

    async def none(session_id: str) -> Any:
        return None

    async def sync(session_id: str) -> Any:
        return ValkeySessionManager(session_id, sync_client)

    async def to_thread(session_id: str) -> Any:
        return await asyncio.to_thread(ToThreadManager, session_id, sync_client)

    async def asyncio_client(session_id: str) -> Any:
        return await ValkeySessionManager.open(session_id, async_client, agent_ids=["assistant"])

    glide_client: list[Any] = []  # made on the benchmark's loop, by the first conversation (GLIDE's belongs to it)
    glide_made = asyncio.Lock()

    async def glide_asyncio(session_id: str) -> Any:
        async with glide_made:
            if not glide_client:
                import glide

                glide_client.append(await glide.GlideClient.create(glide_configuration(f"valkey://127.0.0.1:{port}")))
        return await ValkeySessionManager.open(session_id, glide_client[0], agent_ids=["assistant"])

    async def file(session_id: str) -> Any:
        return FileSessionManager(session_id, storage_dir=files)

    async def snapshot(session_id: str) -> Any:
        return SnapshotSessionManager(session_id, storage=storage)

    return {
        "none": none,
        "sync client": sync,
        "sync in to_thread": to_thread,
        "asyncio client": asyncio_client,
        **({"GLIDE asyncio client": glide_asyncio} if find_spec("glide") is not None else {}),
        "FileSessionManager": file,
        "SnapshotSessionManager + ValkeyStorage": snapshot,
    }


async def run(opener: Opener, conversations: int, turns: int, tag: str, latency: float = LATENCY) -> dict[str, float]:
    """Run the conversations concurrently with a ticker on the loop; return the lag, turn time and throughput."""
    lags: list[float] = []
    turn_times: list[float] = []
    done = False

    async def tick() -> None:
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - before - 0.001)

    async def conversation(n: int) -> None:
        manager = await opener(f"{tag}-{n}")
        model = ScriptedModel(delay=latency, chunks=CHUNKS, chunk_delay=CHUNK_DELAY)
        agent = Agent(agent_id="assistant", model=model, session_manager=manager, callback_handler=None)
        for turn in range(turns):
            start = time.perf_counter()
            async for _ in agent.stream_async(f"turn {turn} of conversation {n}"):
                pass
            turn_times.append(time.perf_counter() - start)

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await asyncio.gather(*(conversation(n) for n in range(conversations)))
    elapsed = time.perf_counter() - started
    done = True
    await ticker
    return {
        "lag p50 ms": percentile(lags, 50) * 1000,
        "lag p99 ms": percentile(lags, 99) * 1000,
        "lag max ms": max(lags) * 1000,
        "turns/s": len(turn_times) / elapsed,
        "turn p99 ms": percentile(turn_times, 99) * 1000,
    }


def measure(
    counts: list[int], turns: int, only: list[str] | None = None, latency: float = LATENCY
) -> list[tuple[int, str, dict[str, float]]]:
    """Run every configuration at every count, side by side in this run, against one throwaway server."""
    results = []
    with LocalValkey() as server, tempfile.TemporaryDirectory() as files:
        for count in counts:
            for name, opener in openers(server.port, files).items():
                if only and name not in only:
                    continue
                results.append((count, name, asyncio.run(run(opener, count, turns, f"{name[:4]}-{count}", latency))))
                valkey.Valkey(port=server.port).flushall()
    return results


def table(results: list[tuple[int, str, dict[str, float]]]) -> str:
    """Return a markdown table, with each figure's ratio to ``none`` at the same N."""
    base = {count: figures for count, name, figures in results if name == "none"}
    lines = [
        "| N | sessions kept by | lag p50 | lag p99 (x none) | lag max | turns/s (x none) | turn p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, name, f in results:
        limit = base.get(count)
        lag_ratio = f" ({f['lag p99 ms'] / limit['lag p99 ms']:.2f}x)" if limit and limit["lag p99 ms"] else ""
        rate_ratio = f" ({f['turns/s'] / limit['turns/s']:.2f}x)" if limit else ""
        lines.append(
            f"| {count} | {name} | {f['lag p50 ms']:.2f} ms | {f['lag p99 ms']:.2f} ms{lag_ratio} | "
            f"{f['lag max ms']:.1f} ms | {f['turns/s']:.0f}{rate_ratio} | {f['turn p99 ms']:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="configurations to run (default: all)")
    parser.add_argument("--latency", type=float, default=LATENCY, help="seconds the model waits before its reply")
    arguments = parser.parse_args()
    print(table(measure(arguments.conversations, arguments.turns, arguments.only, arguments.latency)))


if __name__ == "__main__":
    main()

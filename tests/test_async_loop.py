"""With an asyncio client, no session operation waits for the server on the caller's event loop thread.

The server sits behind a real TCP proxy that holds every reply back ``HOLD`` seconds, and a ticker task on the
caller's loop measures how late a 1 ms sleep wakes while an agent is opened, built, and streams turns. With the
asyncio client the loop stays free (its lag far below the hold); with the synchronous client every session
write stops it for the hold at least: the same measure fails there, which shows it can fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import valkey
import valkey.asyncio
from helpers import CommandCounter
from strands import Agent
from strands.agent.conversation_manager import SlidingWindowConversationManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Seconds the proxy holds every reply of the server back.
HOLD = 0.2


class HoldingProxy:
    """A TCP proxy on its own loop thread: requests go through at once, each reply ``HOLD`` seconds late."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
            try:
                while data := await reader.read(65536):
                    if hold:
                        await asyncio.sleep(hold)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(client_reader, server_writer, 0), pump(server_reader, client_writer, HOLD))

    async def _stop(self) -> None:
        self.server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def proxy(server: LocalValkey, client: valkey.Valkey) -> Iterator[HoldingProxy]:
    holding = HoldingProxy(server.port)
    yield holding
    holding.close()


async def lag_while(work: Any) -> tuple[float, Any]:
    """Run ``work()`` with a ticker on this loop; return the worst lateness of its 1 ms sleeps, and the result."""
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    try:
        result = await work()
    finally:
        done = True
        await ticker
    return worst, result


async def converse(manager: ValkeySessionManager, turns: int = 2) -> list[Any]:
    agent = Agent(
        agent_id="talker", model=ScriptedModel(["hi", "again"]), session_manager=manager, callback_handler=None
    )
    for turn in range(turns):
        async for _ in agent.stream_async(f"turn {turn}"):
            pass
    return agent.messages


@pytest.mark.parametrize("lock", [False, True], ids=["no lock", "lock"])
def test_with_the_asyncio_client_no_hook_blocks_the_loop_while_the_server_holds_its_replies(
    proxy: HoldingProxy, client: valkey.Valkey, lock: bool
) -> None:
    options: dict[str, Any] = {"lock_timeout": 5} if lock else {}

    async def run() -> tuple[float, Any]:
        remote = valkey.asyncio.Valkey(port=proxy.port)

        async def work() -> Any:
            manager = await ValkeySessionManager.open("s", remote, **options)
            messages = await converse(manager)
            again = await ValkeySessionManager.open("s", remote, **options)  # a second request resumes it
            messages += await converse(again, turns=1)
            await again.delete_session_async("s")
            return messages

        try:
            return await lag_while(work)
        finally:
            await remote.aclose()

    started = time.perf_counter()
    worst, messages = asyncio.run(run())

    assert time.perf_counter() - started > 6 * HOLD  # the replies were held indeed: many round trips of HOLD each
    assert len(messages) == 4 + 6  # the second request restored the first's four messages, then added two
    assert client.keys("*") == []  # deleted on logout
    assert worst < HOLD / 4, worst  # the loop never waited for a reply


def test_the_synchronous_client_blocks_the_loop_for_every_held_reply(proxy: HoldingProxy) -> None:
    async def run() -> tuple[float, Any]:
        remote = valkey.Valkey(port=proxy.port)

        async def work() -> Any:
            return await converse(ValkeySessionManager("s", remote))

        try:
            return await lag_while(work)
        finally:
            remote.close()

    worst, messages = asyncio.run(run())

    assert len(messages) == 4
    assert worst >= HOLD * 0.9, worst  # the measure above catches a hook that waits on the loop


def test_after_open_building_the_agent_sends_nothing_even_when_its_window_slid(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    def build(manager: ValkeySessionManager) -> Agent:
        window = SlidingWindowConversationManager(window_size=4)  # the restore lists from the messages it removed
        return Agent(
            agent_id="talker",
            model=ScriptedModel(),
            conversation_manager=window,
            session_manager=manager,
            callback_handler=None,
        )

    first = build(ValkeySessionManager("s", client))
    for turn in range(4):
        first(f"turn {turn}")

    async def reopen() -> tuple[dict[str, int], Any]:
        remote = valkey.asyncio.Valkey(port=server.port)
        manager = await ValkeySessionManager.open("s", remote)
        with CommandCounter(client) as counter:
            restored = build(manager)
        await remote.aclose()
        return counter.counts, restored.messages

    counts, messages = asyncio.run(reopen())

    assert counts == {}  # every read was done, awaited, by open()
    assert messages == first.messages and len(messages) == 4

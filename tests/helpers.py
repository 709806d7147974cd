"""Test helpers shared by the test files: command counting and waiting on conditions."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
import valkey
import valkey.asyncio
from strands.types.session import SessionMessage
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import codec
from strands_valkey_session_manager.keys import KeySchema

#: For a test of what happens with a system ``valkey-server`` on PATH (without one, the embedded Valkey serves).
NEEDS_VALKEY_SERVER_ON_PATH = pytest.mark.skipif(
    shutil.which("valkey-server") is None, reason="no valkey-server on PATH: this test is about one found there"
)


def command_counts(client: valkey.Valkey | ValkeyCluster) -> dict[str, int]:
    """Calls per command from ``INFO commandstats`` (commands run inside scripts included).

    On a cluster: the sum over every primary (replicas only replay what their primary ran).
    """
    if isinstance(client, ValkeyCluster):
        per_node = list(client.info("commandstats", target_nodes=ValkeyCluster.PRIMARIES).values())
    else:
        per_node = [client.info("commandstats")]
    counts: dict[str, int] = {}
    for stats in per_node:
        for name, value in stats.items():
            counts[name.removeprefix("cmdstat_")] = counts.get(name.removeprefix("cmdstat_"), 0) + int(value["calls"])
    return counts


class CommandCounter:
    """Count the server commands run inside a ``with`` block (``INFO`` itself excluded)."""

    def __init__(self, client: valkey.Valkey | ValkeyCluster) -> None:
        self.client = client
        self.counts: dict[str, int] = {}

    def __enter__(self) -> CommandCounter:
        self.before = command_counts(self.client)
        return self

    def __exit__(self, *exc: object) -> None:
        after = command_counts(self.client)
        self.counts = {
            name: calls - self.before.get(name, 0)
            for name, calls in after.items()
            if calls - self.before.get(name, 0) and name != "info"
        }

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def calls(self, *names: str) -> int:
        return sum(self.counts.get(name, 0) for name in names)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def counting_client(port: int) -> valkey.Valkey:
    """A client whose connections count round trips in ``CountingConnection.round_trips``."""
    pool = valkey.ConnectionPool(port=port, connection_class=CountingConnection, decode_responses=True)
    client = valkey.Valkey(connection_pool=pool)
    client.ping()  # connect now: the handshake is not a round trip of ours
    return client


class CountingConnection(valkey.Connection):
    """A real connection that counts the requests it sends: one per round trip (a pipeline is one)."""

    round_trips = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)


class AsyncCountingConnection(valkey.asyncio.Connection):
    """:class:`CountingConnection` for ``valkey.asyncio``: its round trips add to the same count."""

    async def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        await super().send_packed_command(command, check_health)


def populate(client: valkey.Valkey, count: int, prefix: str = "unrelated") -> None:
    """Fill the server with ``count`` unrelated string keys (like DEBUG POPULATE, on any server)."""
    for start in range(0, count, 10_000):
        client.mset({f"{prefix}:{i}": "x" for i in range(start, min(start + 10_000, count))})


def add_messages(client: valkey.Valkey, count: int, session_id: str, agent_id: str) -> None:
    """Give an agent ``count`` more messages in one pipeline, stored as the library stores them (the session's
    deadline, ids in the agent's ZSET): a session with many keys, in a fraction of the time turns would take."""
    keys = KeySchema()
    ids_key = keys.messages(session_id, agent_id)
    first = client.zcard(ids_key)
    deadline = client.pexpiretime(keys.session(session_id))
    pipe = client.pipeline(transaction=False)
    for message_id in range(first, first + count):
        message = SessionMessage.from_message({"role": "user", "content": [{"text": f"m{message_id}"}]}, message_id)
        pipe.set(
            keys.message(session_id, agent_id, message_id),
            codec.encode(message),
            pxat=deadline if deadline > 0 else None,
        )
        pipe.zadd(ids_key, {str(message_id): message_id})
    pipe.execute()


def fails_first_time(reply: str) -> Callable[[Any], str]:
    """A ScriptedModel reply function whose first call raises (a model outage), then replies ``reply``."""
    calls = {"n": 0}

    def script(messages: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model unavailable")
        return reply

    return script


def two_node_graph(session_manager: Any, model_a: Any, model_b: Any) -> Any:
    """A Graph A -> B of two agents on the given models, persisted by ``session_manager``."""
    from strands import Agent
    from strands.multiagent import GraphBuilder

    builder = GraphBuilder()
    builder.add_node(Agent(name="A", agent_id="A", model=model_a, callback_handler=None), "A")
    builder.add_node(Agent(name="B", agent_id="B", model=model_b, callback_handler=None), "B")
    builder.add_edge("A", "B")
    builder.set_entry_point("A")
    builder.set_max_node_executions(10)
    builder.set_session_manager(session_manager)
    return builder.build()


class RecordingConnection(valkey.Connection):
    """A real connection that records every command it sends (its arguments) in its class's ``sent``."""

    sent: list[tuple[Any, ...]] = []

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(args)
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> list[bytes]:
        commands = list(commands)
        self.sent.extend(tuple(command) for command in commands)
        return super().pack_commands(commands)


def recording_client(port: int) -> tuple[valkey.Valkey, list[tuple[Any, ...]]]:
    """A client on ``port`` and the list of every command its connections send from now on."""
    sent: list[tuple[Any, ...]] = []
    connection_class = type("Recording", (RecordingConnection,), {"sent": sent})
    pool = valkey.ConnectionPool(port=port, connection_class=connection_class, decode_responses=True)
    return valkey.Valkey(connection_pool=pool), sent


def has_ifeq(client: valkey.Valkey) -> bool:
    """Whether the server takes ``SET ... IFEQ`` (Valkey 8.1+; no Redis OSS release does)."""
    version = client.info("server").get("valkey_version")
    return version is not None and tuple(int(part) for part in str(version).split(".")[:2]) >= (8, 1)

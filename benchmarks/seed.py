"""Write a session of N messages into each store, fast and untimed, through each store's own layout."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import valkey
from strands.agent.conversation_manager import NullConversationManager
from strands.session.file_session_manager import FileSessionManager
from strands.types.session import Session, SessionAgent, SessionMessage, SessionType

from strands_valkey_session_manager import ValkeySessionManager

from .stores import PREFIX, TTL, BareRepository, NaiveValkeySessionManager, message_json

AGENT_ID = "a"
BATCH = 1000


@dataclass
class Context:
    """What every scenario gets: its sizes, the server, a client, a directory for files, a logger."""

    config: Any
    server: Any
    client: valkey.Valkey
    file_dir: Path
    log: Any
    extra: dict[str, Any] = field(default_factory=dict)


def empty(context: Context) -> None:
    """Empty the server and wait until memory freed in the background (lazyfree) is really freed."""
    context.client.execute_command("FLUSHALL", "SYNC")
    deadline = time.monotonic() + 120
    while int(context.client.info("memory").get("lazyfree_pending_objects", 0)):
        if time.monotonic() > deadline:
            raise TimeoutError("the server still frees memory from an earlier FLUSHALL after 120 s")
        time.sleep(0.05)


def session_agent() -> SessionAgent:
    """Build an agent record that a ``NullConversationManager`` agent restores from (it keeps every message)."""
    return SessionAgent(agent_id=AGENT_ID, state={}, conversation_manager_state=NullConversationManager().get_state())


def seed_library(client: valkey.Valkey, session_id: str, records: list[SessionMessage]) -> ValkeySessionManager:
    """Write a library session of ``records`` through the library's batch append (one script per 1000)."""
    manager = ValkeySessionManager(session_id=session_id, client=client, ttl=TTL)
    manager.create_agent(session_id, session_agent())
    payloads = [(record.message_id, message_json(record).encode()) for record in records]
    for first in range(0, len(payloads), BATCH):
        batch = payloads[first : first + BATCH]
        manager._runner.now(lambda io, batch=batch: manager.store.append(io, session_id, AGENT_ID, batch))
    return manager


def library_keys(client: valkey.Valkey, manager: ValkeySessionManager, session_id: str) -> list[str]:
    """Every key of a library session, found through its own index (for the floor's plain DEL)."""
    keys = manager.keys
    ids = client.zrange(keys.messages(session_id, AGENT_ID), 0, -1)
    members = [keys.session(session_id), keys.index(session_id), keys.agent(session_id, AGENT_ID)]
    members.append(keys.messages(session_id, AGENT_ID))
    return members + [keys.message(session_id, AGENT_ID, int(message_id)) for message_id in ids]


def seed_naive(client: valkey.Valkey, session_id: str, records: list[SessionMessage]) -> NaiveValkeySessionManager:
    """Write a naive-store session: session and agent records, then one SET per message (pipelined)."""
    manager = NaiveValkeySessionManager(session_id, client)
    manager.create_agent(session_id, session_agent())
    _pipelined_sets(client, [(manager._message_key(session_id, AGENT_ID, r.message_id), r) for r in records])
    return manager


def seed_bare(client: valkey.Valkey, session_id: str, records: list[SessionMessage]) -> BareRepository:
    """Write a same-writes-floor session: session and agent records, then one SET per message (pipelined)."""
    repository = BareRepository(client)
    repository.create_session(Session(session_id=session_id, session_type=SessionType.AGENT))
    repository.create_agent(session_id, session_agent())
    _pipelined_sets(client, [(repository._message_key(session_id, AGENT_ID, r.message_id), r) for r in records])
    repository.counts[AGENT_ID] = len(records)
    return repository


def floor_keys(session_id: str, count: int) -> list[str]:
    """List the floor's message keys: it knows them, which is what makes it the floor."""
    return [f"{PREFIX['floor']}:{session_id}:agent:{AGENT_ID}:message:{index}" for index in range(count)]


def seed_floor(client: valkey.Valkey, session_id: str, records: list[SessionMessage]) -> list[str]:
    """Write the floor's messages (one SET EX each, pipelined); returns their keys."""
    keys = floor_keys(session_id, len(records))
    _pipelined_sets(client, list(zip(keys, records, strict=True)))
    return keys


def seed_file(directory: Path, session_id: str, records: list[SessionMessage]) -> FileSessionManager:
    """Write a FileSessionManager session of ``records`` (one file per message, as it writes them)."""
    manager = FileSessionManager(session_id=session_id, storage_dir=str(directory))
    manager.create_agent(session_id, session_agent())
    for record in records:
        manager.create_message(session_id, AGENT_ID, record)
    return manager


def _pipelined_sets(client: valkey.Valkey, items: list[tuple[str, SessionMessage]]) -> None:
    for first in range(0, len(items), BATCH):
        pipe = client.pipeline(transaction=False)
        for key, record in items[first : first + BATCH]:
            pipe.set(key, message_json(record), ex=TTL)
        pipe.execute()


def decode_all(values: list[Any]) -> list[Any]:
    """Decode as the floor does: ``json.loads`` of each value."""
    return [json.loads(value) for value in values]

"""The alternatives measured against this library, and the factory that builds each as a session manager.

- ``library``: ``ValkeySessionManager`` (this package).
- ``file``: the SDK's own ``FileSessionManager`` (what users pick without Valkey).
- ``naive``: :class:`NaiveValkeySessionManager`, the common hand-written Valkey store: one key per
  record like ours, but messages found with ``SCAN MATCH <agent-key>:message:*`` and read with one
  ``GET`` each, and sessions deleted by ``SCAN <session-key>*``.
- ``bare``: the same-writes floor, the SDK's own ``RepositorySessionManager`` over
  :class:`BareRepository`, whose every call is one bare command (``SET ... EX``, ``GET``, ``MGET``,
  ``DEL``): the same repository calls as the library, with nothing the contract adds. ``bare-script``:
  the same, with every write one script call that only SETs (:class:`ScriptedBareRepository`).
- ``floor``: raw valkey-py doing the minimum: one ``SET ... EX`` per message, one ``MGET`` of keys it
  already knows per restore, one ``DEL`` per delete. It keeps no index, so it is not a usable store:
  it is the physical floor of what any Valkey store must pay.
- ``none``: the agent without a session manager (the per-turn baseline).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import valkey
from strands.session.file_session_manager import FileSessionManager
from strands.session.repository_session_manager import RepositorySessionManager
from strands.session.session_manager import SessionManager
from strands.session.session_repository import SessionRepository
from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage

from strands_valkey_session_manager import ValkeySessionManager

TTL = 3600
#: Key prefixes: each store has its own, so they can share one server without touching each other.
PREFIX = {"library": "session", "naive": "naive", "bare": "bare", "floor": "floor"}
#: SCAN page size of the naive store. The server default (10) would make it far slower still; 1000
#: is what a careful hand-written store uses, so the comparison flatters the baseline, not us.
SCAN_COUNT = 1000


def message_json(record: SessionMessage) -> str:
    """Encode a message as every Valkey store here writes it: the SDK's ``to_dict()``, compact JSON."""
    return json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))


class BareRepository(SessionRepository):
    """The same-writes floor: a repository whose every call is one bare command, under the SDK's own manager.

    ``RepositorySessionManager(session_id, BareRepository(client))`` makes exactly the repository calls the
    library's manager makes (2 messages a turn, the agent whenever its state changed), each one command:
    ``SET ... EX`` to create or update, ``GET`` to read, one ``MGET`` of the message keys it knows to list
    them, one ``DEL`` of the keys it knows to delete. No index, no conflict check, no shared deadline: not a
    usable store (a new process cannot list messages it did not write, unless told how many there are in
    ``counts``), only the bar for what the library does per call.
    """

    def __init__(
        self, client: valkey.Valkey, prefix: str = PREFIX["bare"], counts: dict[str, int] | None = None
    ) -> None:
        """Write under ``prefix``; ``counts``: messages per agent id already stored (what ``list_messages`` reads)."""
        self.client = client
        self.prefix = prefix
        self.counts: dict[str, int] = dict(counts or {})

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}:{session_id}"

    def _agent_key(self, session_id: str, agent_id: str) -> str:
        return f"{self._session_key(session_id)}:agent:{agent_id}"

    def _message_key(self, session_id: str, agent_id: str, message_id: int) -> str:
        return f"{self._agent_key(session_id, agent_id)}:message:{message_id}"

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.client.get(key)
        return None if raw is None else json.loads(raw)

    def _set(self, key: str, data: dict[str, Any]) -> None:
        self.client.set(key, json.dumps(data, ensure_ascii=False, separators=(",", ":")), ex=TTL)

    def create_session(self, session: Session, **kwargs: Any) -> Session:
        """SET the session record."""
        self._set(self._session_key(session.session_id), session.to_dict())
        return session

    def read_session(self, session_id: str, **kwargs: Any) -> Session | None:
        """GET the session record."""
        data = self._get(self._session_key(session_id))
        return None if data is None else Session.from_dict(data)

    def delete_session(self, session_id: str, **kwargs: Any) -> None:
        """DEL the session record and every agent and message key this repository knows, in one command."""
        keys = [self._session_key(session_id)]
        for agent_id, count in self.counts.items():
            keys.append(self._agent_key(session_id, agent_id))
            keys += [self._message_key(session_id, agent_id, message_id) for message_id in range(count)]
        if not self.client.delete(*keys):
            raise SessionException(f"Session {session_id} does not exist")

    def create_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """SET the agent record."""
        self.counts.setdefault(session_agent.agent_id, 0)
        self._set(self._agent_key(session_id, session_agent.agent_id), session_agent.to_dict())

    def read_agent(self, session_id: str, agent_id: str, **kwargs: Any) -> SessionAgent | None:
        """GET the agent record."""
        data = self._get(self._agent_key(session_id, agent_id))
        return None if data is None else SessionAgent.from_dict(data)

    def update_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """SET the agent record (no check that it exists, ``created_at`` not kept)."""
        self.create_agent(session_id, session_agent)

    def create_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """SET the message record."""
        message_id = session_message.message_id
        self.counts[agent_id] = max(self.counts.get(agent_id, 0), message_id + 1)
        self._set(self._message_key(session_id, agent_id, message_id), session_message.to_dict())

    def read_message(self, session_id: str, agent_id: str, message_id: int, **kwargs: Any) -> SessionMessage | None:
        """GET one message."""
        data = self._get(self._message_key(session_id, agent_id, message_id))
        return None if data is None else SessionMessage.from_dict(data)

    def update_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """SET the message record (no check that it exists)."""
        self.create_message(session_id, agent_id, session_message)

    def list_messages(
        self, session_id: str, agent_id: str, limit: int | None = None, offset: int = 0, **kwargs: Any
    ) -> list[SessionMessage]:
        """MGET the message keys it knows (``counts``), from ``offset``, then decode each."""
        count = self.counts.get(agent_id, 0)
        stop = count if limit is None else min(count, offset + limit)
        keys = [self._message_key(session_id, agent_id, message_id) for message_id in range(offset, stop)]
        values = self.client.mget(keys) if keys else []
        return [SessionMessage.from_dict(json.loads(raw)) for raw in values if raw is not None]


class ScriptedBareRepository(BareRepository):
    """The same-writes floor with every write a script call: the least a store that writes by script pays.

    Each write is one ``EVALSHA`` of a script that does nothing but the bare floor's ``SET ... EX``; reads
    and deletes are the bare floor's. Its distance from the bare floor is the cost of the script call itself.
    """

    def __init__(self, client: valkey.Valkey) -> None:
        """As :class:`BareRepository`, with the one-SET script registered (loaded on first use)."""
        super().__init__(client)
        self.script = client.register_script("return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])")

    def _set(self, key: str, data: dict[str, Any]) -> None:
        self.script(keys=[key], args=[json.dumps(data, ensure_ascii=False, separators=(",", ":")), TTL])


class NaiveValkeySessionManager(RepositorySessionManager, BareRepository):
    """A straightforward Valkey session store, as found in the wild: SCAN to list and to delete.

    The bare repository's keys and one-command creates and reads, but updates read the stored record
    first (to keep ``created_at``), and messages are found by SCAN rather than known.
    """

    def __init__(self, session_id: str, client: valkey.Valkey, prefix: str = PREFIX["naive"], **kwargs: Any) -> None:
        """Open (or create) ``session_id`` on ``client`` under ``prefix``."""
        BareRepository.__init__(self, client, prefix)
        RepositorySessionManager.__init__(self, session_id=session_id, session_repository=self, **kwargs)

    def delete_session(self, session_id: str, **kwargs: Any) -> None:
        """SCAN for every key under the session's prefix and DEL each page."""
        found = 0
        for page in _scan_pages(self.client, f"{self._session_key(session_id)}*"):
            found += self.client.delete(*page)
        if not found:
            raise SessionException(f"Session {session_id} does not exist")

    def update_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """GET the stored agent (for created_at), then SET it."""
        previous = self.read_agent(session_id, session_agent.agent_id)
        if previous is None:
            raise SessionException(f"Agent {session_agent.agent_id} in session {session_id} does not exist")
        session_agent.created_at = previous.created_at
        self.create_agent(session_id, session_agent)

    def update_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """GET the stored message (for created_at), then SET it."""
        previous = self.read_message(session_id, agent_id, session_message.message_id)
        if previous is None:
            raise SessionException(f"Message {session_message.message_id} does not exist")
        session_message.created_at = previous.created_at
        self.create_message(session_id, agent_id, session_message)

    def list_messages(
        self, session_id: str, agent_id: str, limit: int | None = None, offset: int = 0, **kwargs: Any
    ) -> list[SessionMessage]:
        """SCAN MATCH the agent's message keys, GET each, sort by id, then slice."""
        pattern = f"{self._agent_key(session_id, agent_id)}:message:*"
        keys = [key for page in _scan_pages(self.client, pattern) for key in page]
        messages = [SessionMessage.from_dict(json.loads(raw)) for key in keys if (raw := self.client.get(key))]
        messages.sort(key=lambda message: message.message_id)
        return messages[offset:] if limit is None else messages[offset : offset + limit]


def _scan_pages(client: valkey.Valkey, pattern: str) -> list[list[Any]]:
    """Every page of ``SCAN 0.. MATCH pattern COUNT SCAN_COUNT`` that found something."""
    pages, cursor = [], 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=SCAN_COUNT)
        if keys:
            pages.append(keys)
        if cursor == 0:
            return pages


def _bytes_as_base64(value: object) -> dict[str, Any]:
    """Encode bytes as the SDK does (``encode_bytes_values``)."""
    if isinstance(value, bytes):
        return {"__bytes_encoded__": True, "data": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class FloorSessionManager(SessionManager):
    """The minimum a Valkey store pays per turn: one ``SET ... EX`` of each new message, nothing else.

    Unlike the same-writes floor (:class:`BareRepository`) it never writes the agent's state: it is
    the bare minimum of a turn, not the same work as the library's.
    """

    def __init__(self, session_id: str, client: valkey.Valkey) -> None:
        """Write under ``floor:<session_id>:...``."""
        self.client = client
        self.prefix = f"{PREFIX['floor']}:{session_id}:agent:"
        self.count = 0

    def append_message(self, message: Any, agent: Any, **kwargs: Any) -> None:
        """SET the message with its TTL: the same JSON as ``SessionMessage.to_dict()``, built directly."""
        now = datetime.now(timezone.utc).isoformat()
        record = {"message": message, "message_id": self.count, "redact_message": None}
        record.update(created_at=now, updated_at=now)
        payload = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_bytes_as_base64)
        self.client.set(f"{self.prefix}{agent.agent_id}:message:{self.count}", payload, ex=TTL)
        self.count += 1

    def redact_latest_message(self, redact_message: Any, agent: Any, **kwargs: Any) -> None:
        """Not measured."""

    def sync_agent(self, agent: Any, **kwargs: Any) -> None:
        """Do nothing: the floor keeps no agent state."""

    def initialize(self, agent: Any, **kwargs: Any) -> None:
        """Do nothing: the floor restores nothing."""


def make_manager(store: str, session_id: str, client: valkey.Valkey | None, file_dir: Path | None) -> Any:
    """Build a session manager of ``store`` for ``session_id`` (``None`` for ``none``)."""
    if store == "none":
        return None
    if store == "library":
        return ValkeySessionManager(session_id=session_id, client=client, ttl=TTL)
    if store == "naive":
        assert client is not None
        return NaiveValkeySessionManager(session_id, client)
    if store == "file":
        return FileSessionManager(session_id=session_id, storage_dir=str(file_dir))
    if store in ("bare", "bare-script"):
        assert client is not None
        repository = BareRepository(client) if store == "bare" else ScriptedBareRepository(client)
        return RepositorySessionManager(session_id=session_id, session_repository=repository)
    if store == "floor":
        assert client is not None
        return FloorSessionManager(session_id, client)
    raise ValueError(f"unknown store {store!r}")

"""The export file: whole sessions in one versioned JSON document, byte for byte (docs/cli.md).

Each stored value appears as the JSON object it holds when encoding that object again gives back
the stored bytes exactly (always the case for what this library writes), else as a JSON string of
the stored text (bytes that are not UTF-8 as surrogate escapes), so an import writes back the very
bytes an export read. Keys are not in the file: an import builds them for its own key prefix and
client (standalone or cluster), which also makes the file a way to move sessions between the two.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from strands.types.exceptions import StorageError

from .. import codec
from ..keys import validate_id, validate_message_id
from ..options import number as checked_number
from ..sdk import normalize_key
from .snapshots import SNAPSHOT, SnapshotDump, owned_prefixes
from .store import AgentDump, SessionDump

FORMAT = "strands-valkey-sessions"
VERSION = 1


def encode_value(stored: bytes) -> Any:
    """Encode a stored value for the file: its JSON object if that re-encodes to the same bytes, else its text."""
    try:
        data = json.loads(stored)
    except ValueError:
        data = None
    if isinstance(data, dict) and codec.dumps(data) == stored:
        return data
    return stored.decode("utf-8", "surrogateescape")


def decode_value(value: Any, where: str) -> bytes:
    """Return the stored bytes a value of the file stands for (the inverse of :func:`encode_value`)."""
    if isinstance(value, dict):
        return codec.dumps(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ValueError(f"{where}: expected a JSON object or string, found {type(value).__name__}")


def session_entry(dump: SessionDump) -> dict[str, Any]:
    """One session of the file."""
    return {
        "session_id": dump.session_id,
        "ttl_ms": dump.ttl_ms,
        "session": encode_value(dump.record),
        "agents": {
            agent_id: {
                "agent": None if agent.record is None else encode_value(agent.record),
                "messages": {str(message_id): encode_value(value) for message_id, value in agent.messages.items()},
            }
            for agent_id, agent in dump.agents.items()
        },
        "multi_agents": {multi_id: encode_value(value) for multi_id, value in dump.multi_agents.items()},
    }


def snapshot_entry(dump: SnapshotDump) -> dict[str, Any]:
    """One snapshot session of the file: every stored value by storage key (under the storage's prefix)."""
    return {
        "session_id": dump.session_id,
        "layout": SNAPSHOT,
        "ttl_ms": dump.ttl_ms,
        "values": {key: encode_value(value) for key, value in dump.values.items()},
    }


def document(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Build the whole file from :func:`session_entry` results."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "sessions": list(entries),
    }


def to_bytes(doc: dict[str, Any]) -> bytes:
    """Return the file's bytes: compact UTF-8 JSON (as the stored values are) and a final newline."""
    return codec.dumps(doc) + b"\n"


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _identity(entry: dict[str, Any], where: str, kind: str) -> tuple[str, str, int | None]:
    """Return a session's id, its name for messages (``session user-42``) and its ``ttl_ms``, each checked."""
    session_id = validate_id(entry.get("session_id"), f"{where}.session_id")
    where = f"{kind} {session_id}"
    ttl_ms = entry.get("ttl_ms")
    if ttl_ms is not None:
        checked_number(f"{where}.ttl_ms", ttl_ms, least=1, integer=True)
    return session_id, where, ttl_ms


def _session(entry: Any, where: str) -> SessionDump | SnapshotDump:
    entry = _object(entry, where)
    if entry.get("layout") == SNAPSHOT:
        return _snapshot_session(entry, where)
    session_id, where, ttl_ms = _identity(entry, where, "session")
    agents = {}
    for agent_id, agent in _object(entry.get("agents", {}), f"{where}.agents").items():
        at = f"{where}, agent {validate_id(agent_id, 'agent_id')}"
        agent = _object(agent, at)
        record = agent.get("agent")
        messages = {}
        for message_id, value in _object(agent.get("messages", {}), f"{at}.messages").items():
            number = int(message_id) if message_id.isdecimal() else message_id
            messages[validate_message_id(number)] = decode_value(value, f"{at}, message {message_id}")
        agents[agent_id] = AgentDump(
            None if record is None else decode_value(record, at), dict(sorted(messages.items()))
        )
    multi_agents = {
        validate_id(multi_id, "multi_agent_id"): decode_value(value, f"{where}, multi-agent {multi_id}")
        for multi_id, value in _object(entry.get("multi_agents", {}), f"{where}.multi_agents").items()
    }
    if "session" not in entry:
        raise ValueError(f"{where}: the session record is missing")
    return SessionDump(session_id, ttl_ms, decode_value(entry["session"], where), agents, multi_agents)


def _snapshot_session(entry: dict[str, Any], where: str) -> SnapshotDump:
    """Read a snapshot session of the file; each key must be one the SDK puts under it (snapshots or stash)."""
    session_id, where, ttl_ms = _identity(entry, where, "snapshot session")
    values = {}
    for key, value in _object(entry.get("values"), f"{where}.values").items():
        try:
            usable = key.startswith(owned_prefixes(session_id)) and normalize_key(key) == key
        except StorageError:  # a '..' segment or a backslash
            usable = False
        if not usable:
            raise ValueError(f"{where}: {key!r} is no key SnapshotSessionManager puts under this session")
        values[key] = decode_value(value, f"{where}, {key}")
    if not values:
        raise ValueError(f"{where}: it has no values")
    return SnapshotDump(session_id, ttl_ms, sorted(values), values)


def read(data: bytes) -> list[SessionDump | SnapshotDump]:
    """Return the sessions of a file; ``ValueError`` saying what is wrong with a file that is not one."""
    try:
        doc = json.loads(data)
    except ValueError as error:
        raise ValueError(f"not a JSON document: {error}") from error
    doc = _object(doc, "the file")
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a session export: its 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    version = doc.get("version")
    if version != VERSION:
        raise ValueError(f"export format version {version!r} is not supported (this version reads {VERSION})")
    sessions = doc.get("sessions")
    if not isinstance(sessions, list):
        raise ValueError("'sessions' must be a list")
    return [_session(entry, f"sessions[{position}]") for position, entry in enumerate(sessions)]

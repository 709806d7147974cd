"""The Strands SDK's private names this package relies on, all in this one module (strands-agents 1.62).

The SDK has no public hook for these. If a later SDK renames one, this module is where it breaks, and the
comment beside each name says what depends on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strands._context_manager import stash as _stash
from strands.session import snapshot_session_manager as _snapshots
from strands.session.repository_session_manager import RepositorySessionManager
from strands.storage import storage as _storage
from strands.types.session import SessionMessage

if TYPE_CHECKING:
    pass

# ValkeyStorage (storage/valkey_storage.py), 1.62's strands/storage/storage.py:
# - NAMESPACED: the sentinel a namespaced view carries as `_namespaced` (the SDK's
#   stores check it); a namespace of ours sets it too.
# - normalize_key / normalize_prefix: the key rules every Storage applies (no '..', no backslash, no
#   leading '/'); ours must refuse and normalise exactly as InMemoryStorage does.
NAMESPACED: object = _storage._NAMESPACED
normalize_key: Callable[[str], str] = _storage._normalize_key
normalize_prefix: Callable[[str], str] = _storage._normalize_prefix

# The CLI (cli/snapshots.py) reads what SnapshotSessionManager writes through a storage, as 1.62 lays it out
# (strands/session/snapshot_session_manager.py, strands/_context_manager/stash.py):
# ``session/<session_id>/scopes/agent/<agent_id>/snapshots/snapshot_latest.json``, its immutable checkpoints
# ``.../snapshots/immutable_history/snapshot_<uuid7>.json``, an orchestrator's ``scopes/multiAgent/<id>/...``,
# and the context manager's stash under ``context/<session_id>/`` (which ``delete_session()`` deletes too).
SNAPSHOT_NAMESPACE: str = _snapshots._SESSIONS_NAMESPACE
SNAPSHOT_LATEST: str = _snapshots._SNAPSHOT_LATEST
IMMUTABLE_HISTORY: str = _snapshots._IMMUTABLE_HISTORY
STASH_NAMESPACE: str = _stash.STASH_PREFIX

# 1.62's ``RepositorySessionManager._prune_held_records(agent)`` is overridden by the manager: the SDK's sync
# calls it (on every sync) to drop the held records whose message left ``agent.messages``; ours notes the sync
# and prunes when it matters (held_records.py, which restates the SDK's rule). If a later SDK drops or renames
# it, our override is never called and the records are pruned at redaction only.


# The manager's own state that 1.62's RepositorySessionManager keeps per agent, and which the manager must
# update where it overrides the SDK: ``_latest_agent_message`` (the last message stored: the next message id
# is its id + 1), ``_held_records`` (records a redaction may rewrite), ``_last_synced_internal_state``
# (what the last sync wrote: skips unchanged syncs), ``_is_new_session`` (whether initialize restores).


def latest_message(manager: RepositorySessionManager, agent_id: str) -> SessionMessage | None:
    """Return the last message of the agent the SDK stored or restored (``KeyError`` if it never initialised it)."""
    latest: SessionMessage | None = manager._latest_agent_message[agent_id]
    return latest


def track_appended(manager: RepositorySessionManager, agent_id: str, message: SessionMessage) -> None:
    """Record a message as the agent's latest and hold it for redaction, as the SDK's ``append_message`` does."""
    manager._latest_agent_message[agent_id] = message
    manager._held_records.setdefault(agent_id, []).append(message)


def held_records(manager: RepositorySessionManager, agent_id: str) -> list[SessionMessage]:
    """Return the list of records the SDK holds for the agent (it appends to it; replace it to prune)."""
    held: list[SessionMessage] = manager._held_records.setdefault(agent_id, [])
    return held


def replace_held_records(manager: RepositorySessionManager, agent_id: str, records: list[SessionMessage]) -> None:
    """Replace the records the SDK holds for the agent, as its own pruning does."""
    manager._held_records[agent_id] = records


def forget_agent(manager: RepositorySessionManager, agent_id: str) -> None:
    """Drop what the SDK tracks of the agent, so that ``initialize`` restores it afresh from the session."""
    tracked: tuple[dict[str, Any], ...] = (
        manager._latest_agent_message,
        manager._held_records,
        manager._last_synced_internal_state,
    )
    for state in tracked:
        state.pop(agent_id, None)


def forget_synced(manager: RepositorySessionManager, agent_id: str) -> None:
    """Forget what the SDK last synced of the agent, so that its next ``sync_agent`` writes it (a write failed)."""
    manager._last_synced_internal_state.pop(agent_id, None)


def restore_from_session(manager: RepositorySessionManager) -> None:
    """Make the SDK restore agents from the session rather than treat it as new (it was created concurrently)."""
    manager._is_new_session = False

"""Restore latency for N messages with K unrelated keys in the server, every store interleaved.

Two levels are timed, each store against the same data:

- ``messages``: getting an agent's N stored messages back as data. Library: ``list_messages`` (one
  pipeline of EXISTS + ZRANGE, one MGET, then building ``SessionMessage`` objects). Naive: SCAN MATCH
  then one GET each. File: ``FileSessionManager.list_messages``. Floor: one MGET of keys it already
  knows plus ``json.loads`` of each value (``floor``), and the bare MGET (``floor-mget``).
- ``agent``: the full restore a user sees, a new session manager plus ``Agent(...)`` initialised from
  it. Floor: MGET + ``json.loads`` + ``Agent(messages=...)`` without a session manager.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from strands import Agent
from strands.agent.conversation_manager import NullConversationManager
from strands.session.file_session_manager import FileSessionManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel

from .messages import session_messages
from .seed import AGENT_ID, Context, decode_all, empty, seed_file, seed_floor, seed_library, seed_naive
from .stores import TTL, NaiveValkeySessionManager
from .timing import interleaved, summary

FILLER = "bench:filler"


def populate(context: Context, count: int) -> None:
    """Make the server hold ``count`` unrelated keys (DEBUG POPULATE adds only the missing ones)."""
    if count:
        context.client.execute_command("DEBUG", "POPULATE", count, FILLER, 64)


def agent_from(manager: Any) -> Agent:
    """Build the agent a user restores: it keeps every message (no window), so all N come back."""
    return Agent(
        agent_id=AGENT_ID,
        model=ScriptedModel(),
        session_manager=manager,
        conversation_manager=NullConversationManager(),
        callback_handler=None,
    )


def run(context: Context) -> list[dict[str, Any]]:
    """Time every (level, store) for every N, K; K grows in place so sessions are seeded once."""
    config, client = context.config, context.client
    empty(context)
    sessions: dict[int, dict[str, Any]] = {}
    for n in config.restore_n:
        records = session_messages(n)
        sid = f"restore-{n}"
        file_dir = context.file_dir / sid
        shutil.rmtree(file_dir, ignore_errors=True)
        sessions[n] = {
            "library": seed_library(client, sid, records),
            "naive": seed_naive(client, sid, records),
            "floor": seed_floor(client, sid, records),
            "file": seed_file(file_dir, sid, records),
            "file_dir": file_dir,
            "sid": sid,
        }
    results = []
    for k in config.restore_k:
        populate(context, k)
        context.log(f"restore: K={k} (dbsize {client.dbsize()})")
        for n in config.restore_n:
            cases = _cases(context, sessions[n])
            samples = interleaved(cases, config.repeats_for(n))
            for name, values in samples.items():
                level, store = name.split("/")
                results.append({"level": level, "store": store, "n": n, "k": k, **summary(values), "samples": values})
    empty(context)
    return results


def _cases(context: Context, session: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    client, sid = context.client, session["sid"]
    library, naive, file, floor = session["library"], session["naive"], session["file"], session["floor"]
    file_dir = session["file_dir"]

    def floor_agent() -> Agent:
        return Agent(
            agent_id=AGENT_ID,
            model=ScriptedModel(),
            messages=[data["message"] for data in decode_all(client.mget(floor))],
            conversation_manager=NullConversationManager(),
            callback_handler=None,
        )

    return {
        "messages/library": lambda: library.list_messages(sid, AGENT_ID),
        "messages/naive": lambda: naive.list_messages(sid, AGENT_ID),
        "messages/file": lambda: file.list_messages(sid, AGENT_ID),
        "messages/floor": lambda: decode_all(client.mget(floor)),
        "messages/floor-mget": lambda: client.mget(floor),
        "agent/library": lambda: agent_from(ValkeySessionManager(session_id=sid, client=client, ttl=TTL)),
        "agent/naive": lambda: agent_from(NaiveValkeySessionManager(sid, client)),
        "agent/file": lambda: agent_from(FileSessionManager(session_id=sid, storage_dir=str(file_dir))),
        "agent/floor": floor_agent,
    }

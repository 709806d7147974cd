"""The SDK's held records, exactly as its per-sync pruning leaves them, at O(1) Python work per sync.

strands-agents 1.62's ``RepositorySessionManager`` holds, per agent, the records of the messages it appended
or restored (``_held_records``): ``redact_latest_message`` rewrites those that alias the redacted message.
On every sync (three a turn) ``_prune_held_records`` drops the records whose message has left
``agent.messages``, matched by tracking id, or by identity for a message without one: a walk of the whole
conversation, three times a turn (250 us a sync at 1000 messages).

:class:`HeldRecords` gives ``redact_latest_message`` the very records the SDK would hold, but decides a
record's fate only when it matters:

- At each sync it keeps a shallow copy of ``agent.messages`` (a C-level copy, and a C-level comparison with
  the previous copy: about 6 us at 1000 messages). While messages are only appended between syncs, each copy
  extends the previous one, so a message present at one sync is present at every later one: a record's fate
  is sealed by the first sync after it was appended. That sync is noted as a mark: how many records were held
  then, and how many messages the copy had. Nothing else happens. (The comparison is by value, which is as
  good as by identity for a message with a tracking id: an equal copy carries the same id. The few without
  one, which the SDK gives one at the next invocation, are compared by identity.)
- A sync whose copy does not extend the previous one (messages were dropped or replaced: a sliding window,
  a summary) settles: every record is judged against its first sync (the copy's prefix), the survivors
  replace the SDK's list, and they are pruned against the new copy, as the SDK's sync does.
- ``redact_latest_message`` settles first, then runs the SDK's own code on the settled list. The redaction
  changes what a record's message is (``to_message()``), so the next sync judges every record afresh. A
  sync at which the records outnumber the agent's messages two to one settles too: they stay bounded.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import sdk

if TYPE_CHECKING:
    from strands.session.repository_session_manager import RepositorySessionManager
    from strands.types.agent import LocalAgent
    from strands.types.content import Message
    from strands.types.session import SessionMessage


@dataclass
class _Synced:
    """What the syncs of one agent left to decide, since its records were last settled."""

    held: list[SessionMessage]  # the SDK's list this describes (the SDK replaces it when it restores the agent)
    messages: list[Message]  # agent.messages at the latest sync
    untracked: dict[int, Message] = field(default_factory=dict)  # messages without a tracking id, by position
    settled: int = 0  # held[:settled] survived every sync so far
    counts: list[int] = field(default_factory=list)  # marks: records held at a sync that saw new ones...
    lengths: list[int] = field(default_factory=list)  # ...and how many messages the agent had then


class HeldRecords:
    """The held records of one manager's agents, pruned as the SDK prunes them, when it matters."""

    def __init__(self, manager: RepositorySessionManager) -> None:
        """Keep the bookkeeping of ``manager`` (whose SDK state holds the records)."""
        self._manager = manager
        self._synced: dict[str, _Synced] = {}

    def synced(self, agent: LocalAgent) -> None:
        """Note a sync of ``agent``: where the SDK prunes its held records (see the module docstring)."""
        agent_id = agent.agent_id
        held = sdk.held_records(self._manager, agent_id)
        messages = list(agent.messages)
        state = self._synced.get(agent_id)
        if state is None or state.held is not held:  # first sync since the SDK (re)built its list
            state = self._synced[agent_id] = _Synced(held, messages, _untracked(messages))
            self._mark(state)
        elif _extends(state, messages):
            state.messages = messages
            self._mark(state)
        else:
            self._settle(agent_id, state, messages)  # messages were dropped or replaced: prune as the SDK does now
        if len(state.held) > 2 * len(messages) + 16:
            self._settle(agent_id, state, messages)

    def before_redaction(self, agent_id: str) -> None:
        """Make the SDK's held records of ``agent_id`` exactly what its per-sync pruning would have left.

        The redaction then changes the latest record's message: the next sync judges every record again.
        """
        state = self._synced.get(agent_id)
        if state is not None and state.held is sdk.held_records(self._manager, agent_id):
            self._settle(agent_id, state, None)
            state.settled = 0

    @staticmethod
    def _mark(state: _Synced) -> None:
        if len(state.held) > (state.counts[-1] if state.counts else state.settled):
            state.counts.append(len(state.held))
            state.lengths.append(len(state.messages))

    def _settle(self, agent_id: str, state: _Synced, now: list[Message] | None) -> None:
        """Judge every record against its first sync; with ``now`` (a sync's copy), prune against it as well.

        Records appended since the last sync have had no sync yet: they are kept, and judged by the next one.
        """
        tracked, objects = _first_positions(state.messages)
        unsynced = state.counts[-1] if state.counts else state.settled
        survivors = state.held[: state.settled]
        for index in range(state.settled, unsynced):
            mark = bisect.bisect_right(state.counts, index)  # the first sync after the record was appended
            if _position(state.held[index], tracked, objects) < state.lengths[mark]:
                survivors.append(state.held[index])
        settled = len(survivors)
        survivors += state.held[unsynced:]
        if now is not None:
            tracked, objects = _first_positions(now)
            survivors = [record for record in survivors if _position(record, tracked, objects) < len(now)]
            state.messages, state.untracked, settled = now, _untracked(now), len(survivors)
        sdk.replace_held_records(self._manager, agent_id, survivors)
        state.held, state.settled, state.counts, state.lengths = survivors, settled, [], []


def _extends(state: _Synced, messages: list[Message]) -> bool:
    """Whether ``messages`` is the previous sync's copy with messages appended (noting the untracked new ones)."""
    previous = state.messages
    if len(messages) < len(previous) or messages[: len(previous)] != previous:
        return False
    for position, message in list(state.untracked.items()):
        if messages[position] is not message:
            return False  # an equal copy of a message without tracking id: another message to the SDK
        if message.get("tracking_id") is not None:
            del state.untracked[position]  # given one since (the SDK does at an invocation's start)
    for position in range(len(previous), len(messages)):
        if messages[position].get("tracking_id") is None:
            state.untracked[position] = messages[position]
    return True


def _untracked(messages: list[Message]) -> dict[int, Message]:
    """Return the messages without a tracking id, by position."""
    return {position: message for position, message in enumerate(messages) if message.get("tracking_id") is None}


# 1.62's rule (RepositorySessionManager._prune_held_records): a record is held while its message, its
# to_message(), is in agent.messages by tracking id, or by identity. tests/test_held_records.py checks
# this module against the SDK's own method on generated histories.


def _first_positions(messages: list[Message]) -> tuple[dict[str, int], dict[int, int]]:
    """Return where each tracking id, and each message object, first appears in ``messages``."""
    tracked: dict[str, int] = {}
    objects: dict[int, int] = {}
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        objects[id(message)] = position
        tracking_id = message.get("tracking_id")
        if tracking_id is not None:
            tracked[tracking_id] = position
    return tracked, objects


def _position(record: SessionMessage, tracked: dict[str, int], objects: dict[int, int]) -> float:
    """Return the first position of ``record``'s message in the messages indexed (``inf``: nowhere)."""
    message = record.to_message()
    position: float = objects.get(id(message), math.inf)
    tracking_id = message.get("tracking_id")
    if tracking_id is not None:
        position = min(position, tracked.get(tracking_id, math.inf))
    return position

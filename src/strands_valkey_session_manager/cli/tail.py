"""``strands-valkey tail SESSION``: follow a session as it is written, one line per new message or state change.

It reads the session's own indexes, never SCAN or KEYS: each look is one round trip (``PTTL`` of the session
record, ``SMEMBERS`` of its index, ``ZRANGE ... BYSCORE`` of each agent's message ids past the last one
shown, ``GET`` of each Swarm/Graph record), and a second one (``MGET``) only when there are new messages.
Every key is in the session's slot, so it works on a cluster, and through an ACL user with the rule of
docs/production.md (all of those are in it). It looks every ``interval`` seconds; where the server has
keyspace notifications on (``notify-keyspace-events`` with ``K``) and lets this user read its config and
subscribe, a write wakes it at once instead (standalone servers; a cluster is polled). It ends when the
session is gone, saying whether it expired or was deleted, or on Ctrl-C.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.markup import escape
from strands.types.exceptions import SessionException
from valkey.client import NEVER_DECODE
from valkey.cluster import ValkeyCluster
from valkey.exceptions import ValkeyError

from .. import codec, replication
from ..connection import is_glide
from ..keys import AGENT, MULTI_AGENT, parse_suffix
from ..values import PLAIN, Values
from .output import Output
from .store import Store, as_text
from .transcript import message_lines

#: Seconds between two looks at a session (without keyspace notifications).
INTERVAL = 0.5
#: Seconds a look waits for a keyspace notification before it looks anyway (expiry is not always notified).
NOTIFIED_INTERVAL = 2.0
#: Characters of a message shown on its line.
WIDTH = 200
#: Message keys read per MGET.
BATCH = 500


@dataclass
class Event:
    """One line of the tail: a message of an agent, or a Swarm's/Graph's new state."""

    time: str  # ISO timestamp as stored ("" if none)
    member: str  # agent id, or Swarm/Graph id
    kind: str  # "message" or "state"
    role: str  # the message's role, or "state"
    text: str  # rich markup: a short rendering
    record: dict[str, Any]  # the stored record (JSON), for --json
    message_id: int | None = None

    def as_json(self, session_id: str) -> dict[str, Any]:
        """Return the event as one JSON object (``--json``): the stored record in full, with where it belongs."""
        data: dict[str, Any] = {"time": self.time, "session_id": session_id, "kind": self.kind}
        if self.kind == "message":
            data.update(agent_id=self.member, message_id=self.message_id, role=self.role)
            data["message"] = self.record.get("redact_message") or self.record.get("message")
        else:
            data.update(multi_agent_id=self.member, state=self.record)
        return data


@dataclass
class _Seen:
    """What has been shown of a session so far."""

    agents: dict[str, int] = field(default_factory=dict)  # agent id -> last message id shown (-1: none)
    states: dict[str, bytes] = field(default_factory=dict)  # Swarm/Graph id -> its record as last shown
    pttl: int = -1  # the session's remaining life at the last look (ms; -1: none)
    looked: float = 0.0  # time.monotonic() of the last look


class Tail:
    """Follows one session of a store."""

    def __init__(self, store: Store, session_id: str, values: Values = PLAIN) -> None:
        """Follow ``session_id``, its values opened by ``values`` (values.py); nothing is read before :meth:`start`."""
        self.store = store
        self.values = values
        self.session_id = session_id
        self.keys = store.keys
        self.session_key = store.keys.session(session_id)
        self._seen = _Seen()

    def _read(self, *commands: tuple[Any, ...]) -> list[Any]:
        return replication.read(self.store.client, self.session_key, *commands, **{NEVER_DECODE: True})

    def start(self, last: int = 0, since: datetime | None = None) -> list[Event] | None:
        """Look at the session first: its history to show (the ``last`` newest messages, or those since ``since``).

        Returns ``None`` if there is no session.
        """
        pttl, members = self._read(("PTTL", self.session_key), ("SMEMBERS", self.keys.index(self.session_id)))
        if pttl == -2:
            return None
        self._note_life(pttl)
        agents, multi_agents = self._members(members)
        ids_keys = [self.keys.messages(self.session_id, agent_id) for agent_id in agents]
        replies = self._read(*(("ZRANGE", key, 0, -1) for key in ids_keys)) if ids_keys else []
        history: list[Event] = []
        wanted = last or (None if since is not None else 0)
        for agent_id, ids in zip(agents, replies, strict=True):
            numbers = sorted(int(number) for number in ids)
            self._seen.agents[agent_id] = numbers[-1] if numbers else -1
            keep = numbers if wanted is None else numbers[-wanted:] if wanted else []
            history += self._messages(agent_id, keep)
        for multi_agent_id in multi_agents:
            (raw,) = self._read(("GET", self.keys.multi_agent(self.session_id, multi_agent_id)))
            if raw is not None:
                self._seen.states[multi_agent_id] = raw
                if wanted != 0:
                    history.append(self._state(multi_agent_id, raw))
        history.sort(key=lambda event: event.time)
        if since is not None:
            stamp = since.isoformat()
            history = [event for event in history if event.time >= stamp]
        return history[-last:] if last else history

    def poll(self) -> list[Event] | None:
        """Look again: what was written since, in time order; ``None`` once the session is gone."""
        agents = list(self._seen.agents)
        multi_agents = list(self._seen.states)
        commands: list[tuple[Any, ...]] = [("PTTL", self.session_key), ("SMEMBERS", self.keys.index(self.session_id))]
        ids_keys = [self.keys.messages(self.session_id, agent_id) for agent_id in agents]
        commands += [
            ("ZRANGE", key, self._seen.agents[agent_id] + 1, "+inf", "BYSCORE")
            for key, agent_id in zip(ids_keys, agents, strict=True)
        ]
        commands += [("GET", self.keys.multi_agent(self.session_id, multi_agent_id)) for multi_agent_id in multi_agents]
        pttl, members, *rest = self._read(*commands)
        if pttl == -2:
            return None
        self._note_life(pttl)
        events: list[Event] = []
        for agent_id, ids in zip(agents, rest[: len(agents)], strict=True):
            numbers = sorted(int(number) for number in ids)
            if numbers:
                self._seen.agents[agent_id] = numbers[-1]
                events += self._messages(agent_id, numbers)
        for multi_agent_id, raw in zip(multi_agents, rest[len(agents) :], strict=True):
            if raw is not None and raw != self._seen.states[multi_agent_id]:
                self._seen.states[multi_agent_id] = raw
                events.append(self._state(multi_agent_id, raw))
        new_agents, new_multi_agents = self._members(members)
        for agent_id in new_agents:
            if agent_id not in self._seen.agents:
                self._seen.agents[agent_id] = -1  # its messages: at the next look (or now, below)
        for multi_agent_id in new_multi_agents:
            if multi_agent_id not in self._seen.states:
                self._seen.states[multi_agent_id] = b""
        if len(self._seen.agents) > len(agents) or len(self._seen.states) > len(multi_agents):
            events += self.poll() or []  # a new member: read it at once
        events.sort(key=lambda event: event.time)
        return events

    def gone(self) -> str:
        """Why the session is gone: it expired (its life had run out by the last look), or it was deleted."""
        left = self._seen.pttl - (time.monotonic() - self._seen.looked) * 1000
        expired = self._seen.pttl >= 0 and left < 1000 + INTERVAL * 1000
        return "expired" if expired else "was deleted"

    def _note_life(self, pttl: int) -> None:
        self._seen.pttl = pttl
        self._seen.looked = time.monotonic()

    @staticmethod
    def _members(members: list[bytes]) -> tuple[list[str], list[str]]:
        agents, multi_agents = [], []
        for member in sorted(as_text(member) for member in members):
            parsed = parse_suffix(member)
            if parsed is not None and parsed[0] == AGENT:
                agents.append(parsed[1])
            elif parsed is not None and parsed[0] == MULTI_AGENT:
                multi_agents.append(parsed[1])
        return agents, multi_agents

    def _messages(self, agent_id: str, numbers: list[int]) -> list[Event]:
        events = []
        for start in range(0, len(numbers), BATCH):
            batch = numbers[start : start + BATCH]
            keys = self.keys.message_keys(self.session_id, agent_id, batch)
            (values,) = self._read(("MGET", *keys))
            for number, key, raw in zip(batch, keys, values, strict=True):
                if raw is not None:  # gone between the two reads (deleted, expired): nothing to show
                    events.append(self._message(agent_id, number, key, raw))
        return events

    def _message(self, agent_id: str, number: int, key: str, raw: bytes) -> Event:
        try:
            record = codec.loads(raw, key, self.values)
        except SessionException as error:
            return Event("", agent_id, "message", "?", f"[red]{escape(str(error))}[/red]", {}, number)
        message = record.get("redact_message") or record.get("message") or {}
        text = " ".join(message_lines(message)) if isinstance(message, dict) else ""
        role = str(message.get("role", "?")) if isinstance(message, dict) else "?"
        return Event(str(record.get("created_at", "")), agent_id, "message", role, _one_line(text), record, number)

    def _state(self, multi_agent_id: str, raw: bytes) -> Event:
        key = self.keys.multi_agent(self.session_id, multi_agent_id)
        try:
            state = codec.loads(raw, key, self.values)
        except SessionException as error:
            return Event("", multi_agent_id, "state", "state", f"[red]{escape(str(error))}[/red]", {})
        if not isinstance(state, dict):
            state = {"state": state}
        names = ("type", "status", "current_node", "next_nodes_to_execute")
        shown = {name: state[name] for name in names if name in state}
        if "node_history" in state and isinstance(state["node_history"], list):
            shown["node_history"] = state["node_history"]
        if "completed_nodes" in state:
            shown["completed_nodes"] = state["completed_nodes"]
        text = " ".join(f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in shown.items())
        stamp = datetime.now(timezone.utc).isoformat()  # a state carries no time of its own: when it was seen
        return Event(stamp, multi_agent_id, "state", "state", escape(_one_line(text)), state)


def _one_line(markup: str) -> str:
    flat = re.sub(r"\s+", " ", markup).strip()
    return flat if len(flat) <= WIDTH else flat[: WIDTH - 1] + "…"


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``) or an ISO time (UTC if no zone).

    Raises:
        ValueError: If it is neither.
    """
    now = now or datetime.now(timezone.utc)
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if found:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[found.group(2)]
        return now - timedelta(**{unit: float(found.group(1))})
    moment = datetime.fromisoformat(value.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _clock(iso: str) -> str:
    """``13:30:16`` (UTC) of an ISO timestamp, or the text as stored."""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%H:%M:%S")
    except ValueError:
        return iso or "?"


def _waiter(store: Store, session_key: str) -> Callable[[float], None]:
    """How to wait between looks: for a keyspace notification about the session (if possible), else sleep.

    A cluster's, or a GLIDE client's (its pub/sub is set when it is made), looks again after a sleep.
    """
    client: Any = store.client
    if isinstance(client, ValkeyCluster) or is_glide(client):
        return time.sleep
    try:
        flags = "".join(as_text(value) for value in client.config_get("notify-keyspace-events").values())
        if "K" not in flags:
            return time.sleep
        database = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"__keyspace@{database}__:{session_key}", f"__keyspace@{database}__:{session_key}:*")
    except ValkeyError:  # CONFIG or the channel refused (an ACL user): poll
        return time.sleep

    def wait(seconds: float) -> None:
        deadline = time.monotonic() + max(seconds, NOTIFIED_INTERVAL)
        while (left := deadline - time.monotonic()) > 0:
            if pubsub.get_message(timeout=left) is not None:
                return

    return wait


def follow(
    out: Output,
    store: Store,
    session_id: str,
    *,
    last: int = 0,
    since: datetime | None = None,
    interval: float = INTERVAL,
    looks: int | None = None,
    values: Values = PLAIN,
) -> bool:
    """Print the session's history asked for, then each new message and state as it comes, until it is gone.

    Returns False if there was no session to follow. ``looks`` bounds the looks (for tests; ``None``: no end).
    ``values`` opens encrypted or compressed values (a value it cannot open is shown as its error).
    """
    tail = Tail(store, session_id, values)
    history = tail.start(last, since)
    if history is None:
        return False
    for event in history:
        _show(out, session_id, event)
    wait = _waiter(store, tail.session_key) if interval > 0 else time.sleep
    out.note(f"following session {escape(session_id)} (Ctrl-C to stop)")
    for _ in _forever(looks):
        wait(interval)
        events = tail.poll()
        if events is None:
            _end(out, session_id, tail.gone())
            return True
        for event in events:
            _show(out, session_id, event)
    return True


def _forever(looks: int | None) -> Iterator[int]:
    count = 0
    while looks is None or count < looks:
        yield count
        count += 1


def _show(out: Output, session_id: str, event: Event) -> None:
    if out.as_json:
        print(json.dumps(event.as_json(session_id), ensure_ascii=False, default=repr), flush=True)
        return
    role = f"[bold]{escape(event.role)}[/bold]" if event.kind == "message" else "[magenta]state[/magenta]"
    out.say(f"[dim]{_clock(event.time)}[/dim] {escape(event.member)} {role} {event.text}")
    out.console.file.flush()


def _end(out: Output, session_id: str, why: str) -> None:
    if out.as_json:
        print(json.dumps({"session_id": session_id, "kind": "end", "reason": why.split()[-1]}), flush=True)
    else:
        out.note(f"session {escape(session_id)} {why}")

"""Owners (opt-in): a user's sessions listed most recently used first, and erased, without SCAN or KEYS.

A session given an owner (``ValkeySessionManager(..., owner="alice")``) carries it in its record (an extra
``"owner"`` field, written by the ``SET NX`` that creates the session, never changed). Its owner's
bookkeeping is two keys in the owner's own slot (keys.py ``owner``)::

    session:owner{<owner>}          # ZSET: session id -> last use (ms, the server's clock)
    session:owner{<owner>}:titles   # HASH: session id -> title (the first user message's, or the app's)

A session and its owner's keys live in different slots on a cluster, so nothing writes both atomically:
each write is atomic on its own slot, the session's first. What a crash between the two leaves is repaired
by the next step, never read as truth: a session missing from its owner's ZSET is put back the next time
its manager opens or writes it (:class:`Listing`); a listed session that is gone (expired, deleted, or
another's since) is dropped from the page that meets it and taken out of the ZSET then
(:meth:`SessionDirectory.list`). The owner check is made on the client, from the record read as the
session opens (no script parses the record for it). ValkeyStorage's layout has no owners.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from strands.types.exceptions import SessionException
from strands.types.session import SessionMessage
from valkey.client import NEVER_DECODE
from valkey.exceptions import ValkeyError

from . import codec, connection, errors, replication, scripts, telemetry
from .connection import driver_for
from .driver import drive
from .keys import AGENT, MULTI_AGENT, KeySchema, parse_suffix, validate_id
from .options import Client
from .values import PLAIN, Keyring, Values

logger = logging.getLogger(__name__)

#: How often (seconds) a session in use moves to the top of its owner's listing at most, besides its open,
#: its first message and every move of its deadline: what ``updated_at`` may lag behind the last write.
TOUCH_EVERY = 60.0
#: How long (ms) an owner's keys outlive the deadline a touch gave them: a restore's refresh just after
#: the open's touch moves the session's deadline by the time between the two.
MARGIN_MS = 2000
#: Longest title kept from a first user message (characters).
TITLE_LENGTH = 80
#: Sessions an erasure reads and deletes per batch.
ERASE_BATCH = 100
#: Most sessions one page may hold.
MAX_PAGE = 1000


class SessionAccessError(SessionException, PermissionError):
    """The session cannot be opened with this owner (or without one); it says nothing else about the session."""

    def __init__(self, session_id: str) -> None:
        """Name the session id the caller passed, and nothing stored."""
        self.session_id = session_id
        super().__init__(
            f"session_id=<{session_id}> | not available to this owner: open it with the owner it was created "
            "with, or use another session id (nothing was written)"
        )


@dataclass(frozen=True)
class SessionInfo:
    """One session of an owner's listing."""

    session_id: str
    created_at: str  # ISO 8601, as in the session record
    updated_at: str  # ISO 8601 (UTC): its last use, to TOUCH_EVERY seconds
    title: str | None
    agents: list[str]
    message_count: int  # of all its agents
    expires_in: int | None  # seconds left before it expires; None: it never does

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def title_of(message: SessionMessage) -> str:
    """Return a title from a user message: its text, on one line, cut to ``TITLE_LENGTH`` characters ('' if none)."""
    if message.message.get("role") != "user":
        return ""
    text = " ".join(str(block.get("text", "")) for block in message.message.get("content", []) if "text" in block)
    text = " ".join(text.split())
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1].rstrip() + "…"


def owner_of(raw: bytes | str, key: str, values: Values = PLAIN) -> str | None:
    """Return the owner a session record names (``None``: none); ``SessionException`` if it is no JSON object.

    ``values`` opens a record that was encrypted or compressed (the manager's, or the directory's keyring).
    """
    owner = codec.loads(raw, key, values).get("owner")
    return owner if isinstance(owner, str) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def _read_each(client: Client, groups: list[tuple[str, list[tuple[Any, ...]]]]) -> list[list[Any]]:
    """Read-only commands about many slots (one group per slot): a round trip per node (replication.read_each_on)."""
    return drive(replication.read_each_on(driver_for(client), groups, **{NEVER_DECODE: True}))


@contextlib.contextmanager
def not_forgotten(session_id: str) -> Iterator[None]:
    """Log (not raise) a failure to take a deleted session out of its owner's listing: the next listing drops it."""
    try:
        yield
    except ValkeyError as error:
        logger.warning(
            "session_id=<%s> | not taken out of its owner's listing (the next listing will): %s", session_id, error
        )


class Listing:
    """One manager's session in its owner's listing: touched as it opens and as it is written, amortised.

    A touch (lua/owner_touch.lua, one round trip to the owner's slot) moves the session to the top and makes
    the owner's keys live at least as long as the session's deadline. It is sent when the session opens, with
    its first user message (the title), when a write shows a deadline beyond what the owner's keys were
    given (a TTL refresh: at most once per 0.1 ttl of use), after a keep-alive, and otherwise at most once
    per ``TOUCH_EVERY`` seconds (0.1 ttl if shorter): not once per write. A failed touch is logged and sent
    again with the next write.
    """

    def __init__(
        self,
        run: Callable[[scripts.Script, list[str], list[Any]], Any],
        keys: KeySchema,
        session_id: str,
        ttl_ms: int,
        clock: Callable[[], float | None],
    ) -> None:
        """Note a session's listing: ``run(script, keys, args)`` runs a script on the manager's client.

        ``clock()``: the server's time (ms) as this host estimates it, never behind it (``None``: not known).

        Nothing is sent until an owner is known (``owner``) and the session opened.
        """
        self.run, self.keys, self.session_id, self.ttl_ms, self.clock = run, keys, session_id, ttl_ms, clock
        self.owner: str | None = None
        #: Whether the first user message's text becomes the title (not with encryption: the owner's keys are
        #: not encrypted, and that text would be kept in clear there).
        self.titles = True
        self._covered = -math.inf  # the deadline (ms, server clock) the owner's keys outlive at least
        self._next = 0.0  # monotonic time after which a write touches anyway

    def opened(self) -> None:
        """Note the session opened (created, or joined): it goes to the top, its deadline assumed now + ttl."""
        self._touch(None, self.ttl_ms)

    def wrote(self, deadline: int | None, message: SessionMessage | None = None) -> None:
        """Note a write of the session: its deadline now (ms, -1: none, None: not known), and the message written."""
        title = title_of(message) if self.titles and message is not None and message.message_id == 0 else ""
        beyond = deadline is not None and (math.inf if deadline == -1 else deadline) > self._covered
        if title or beyond or time.monotonic() >= self._next:
            self._touch(deadline, self.ttl_ms, title)

    def kept_alive(self, extend_ms: int) -> None:
        """Note that a running invocation's keep-alive moved the session's deadline to at most now + ``extend_ms``."""
        self._touch(None, extend_ms)

    def titled(self, title: str) -> None:
        """Give the session the app's title (it replaces any)."""
        self._touch(None, self.ttl_ms, title, "set", quiet=False)

    def forgetting(self) -> tuple[list[str], list[Any]] | None:
        """Return the keys and arguments of lua/owner_forget.lua that unlist this session (no owner: None)."""
        if self.owner is None:
            return None
        return [self.keys.owner(self.owner), self.keys.owner_titles(self.owner)], [self.session_id, ""]

    def deleted(self) -> None:
        """Take the deleted session out of its owner's listing (if this fails, the next listing drops it)."""
        forget = self.forgetting()
        if forget is not None:
            with not_forgotten(self.session_id):
                self.run(scripts.OWNER_FORGET, *forget)

    def _touch(self, deadline: int | None, life: int, title: str = "", how: str = "nx", quiet: bool = True) -> None:
        if self.owner is None:
            return
        keys = [self.keys.owner(self.owner), self.keys.owner_titles(self.owner)]
        args = [self.session_id, "" if deadline is None else deadline, life, MARGIN_MS, title, how]
        now = self.clock()  # before the touch: the script's clock is later
        try:
            self.run(scripts.OWNER_TOUCH, keys, args)
        except ValkeyError as error:
            if not quiet:
                with errors.translated(SessionException, "set title", keys[1]):
                    raise
            logger.warning(
                "session_id=<%s> | owner's listing not updated, will retry with the next write: %s",
                self.session_id,
                error,
            )
            self._next = 0.0
            return
        if deadline is not None:
            self._covered = math.inf if deadline == -1 else max(self._covered, deadline)
        elif not life:
            self._covered = math.inf
        elif now is not None:  # the estimate may be ahead by a round trip: MARGIN_MS covers it
            self._covered = max(self._covered, now + life)
        self._next = time.monotonic() + min(TOUCH_EVERY, 0.1 * life / 1000 or TOUCH_EVERY)


class SessionDirectory:
    """The sessions of each owner: listed most recently used first, a page at a time, and erased.

    Example::

        directory = SessionDirectory(client)
        sessions, cursor = directory.list("alice")             # the 20 most recently used
        more, cursor = directory.list("alice", cursor=cursor)  # the next 20 (cursor None: no more)
        directory.erase("alice")                               # every session of alice, and her keys
    """

    def __init__(self, client: Client, key_prefix: str = "session", *, encryption: Keyring | None = None) -> None:
        """Use ``client`` (synchronous: valkey-py's, or GLIDE's ``glide_sync``) and the managers' ``key_prefix``.

        ``encryption``: the managers' ``Keyring``, if they encrypt: the session records it reads (owner,
        ``created_at``) are opened with it (compressed ones need nothing).

        Raises:
            TypeError: If ``client`` is no synchronous Valkey client, or ``encryption`` no ``Keyring``.
            ValueError: If ``key_prefix`` is not usable.
        """
        cluster = connection.check_client(client, "SessionDirectory", asyncio=False, glide=True)
        self.client = client
        self.keys = KeySchema(key_prefix, cluster=cluster)
        self.values = Values(encryption, None, None)

    @telemetry.traced(telemetry.LIST_SESSIONS)
    def list(
        self, owner: str, limit: int = 20, cursor: str | None = None
    ) -> tuple[builtins.list[SessionInfo], str | None]:
        """Return the owner's live sessions, most recently used first, ``limit`` at most; and the next page's cursor.

        Three round trips at most, whatever the number of sessions and keys: the page of the owner's ZSET
        (lua/owner_page.lua), then each listed session's record, deadline and index in one pipeline, then its
        agents' message counts in another. A listed session that is gone (expired, deleted, or another
        owner's since) is left out and taken out of the owner's keys then: a page may so hold fewer than
        ``limit``; ``next_cursor`` is ``None`` only after the last one. A session used again while pages are
        read moves to the first page (a later page does not show it again).

        Raises:
            ValueError: If ``owner``, ``limit`` or ``cursor`` is not usable; nothing is sent.
            SessionException: If Valkey cannot be reached.
        """
        owned = self.keys.owner(owner)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit=<{limit!r}> | must be an integer from 1 to {MAX_PAGE}")
        after, after_id = self._cursor(cursor)
        with errors.translated(SessionException, "list sessions", owned):
            keys = [owned, self.keys.owner_titles(owner)]
            now, *flat = scripts.OWNER_PAGE(self.client, keys, [limit + 1, after, after_id])
            page = [(_text(flat[i]), int(float(flat[i + 1])), _text(flat[i + 2])) for i in range(0, len(flat), 3)]
            more, page = len(page) > limit, page[:limit]
            records = _read_each(self.client, [self._record_reads(session_id) for session_id, _, _ in page])
            live, stale = [], []
            for (session_id, score, title), (raw, deadline, members) in zip(page, records, strict=True):
                if self._owned_by(owner, session_id, raw):
                    live.append((session_id, score, title, raw, deadline, self._agents(members)))
                else:
                    stale += [session_id, str(score)]  # id, score, id, score, ...
            counts = _read_each(self.client, [self._count_reads(item[0], item[5]) for item in live])
            if stale:
                scripts.OWNER_FORGET(self.client, keys, stale)
        sessions = [
            SessionInfo(
                session_id=session_id,
                created_at=str(codec.loads(raw, self.keys.session(session_id), self.values).get("created_at", "")),
                updated_at=_iso(score),
                title=title or None,
                agents=agents,
                message_count=sum(int(number) for number in numbers),
                expires_in=None if deadline == -1 else max(0, math.ceil((deadline - int(now)) / 1000)),
            )
            for (session_id, score, title, raw, deadline, agents), numbers in zip(live, counts, strict=True)
        ]
        next_cursor = f"{page[-1][1]}:{page[-1][0]}" if more else None
        return sessions, next_cursor

    @telemetry.traced(telemetry.ERASE_SESSIONS)
    def erase(self, owner: str) -> int:
        """Delete every session of ``owner`` (every key of each, as ``delete_session``) and the owner's keys.

        Batches of the owner's ZSET are read; each session's record and index in one pipeline, its agents'
        message ids in another, and each session still the owner's deleted atomically by lua/delete_session.lua
        (every key declared, all in one pipeline), given the record as read: a session deleted and created
        again since (by anyone) is left alone. Then the batch leaves the ZSET,
        until it is empty (Valkey deletes empty keys). Safe to run again after a crash: what is gone is
        skipped. A writer still using an erased session is refused (its writes find no session) or, if it
        touches the listing in that instant, leaves an entry the next listing drops.

        Returns:
            How many sessions were deleted.

        Raises:
            ValueError: If ``owner`` is not usable; nothing is sent.
            SessionException: If Valkey cannot be reached, or a listed session's record is not this library's.
        """
        owned, titles = self.keys.owner(owner), self.keys.owner_titles(owner)
        deleted = 0
        with errors.translated(SessionException, "erase sessions", owned):
            while True:
                (batch,) = replication.read(self.client, owned, ("ZRANGE", owned, 0, ERASE_BATCH - 1))
                if not batch:
                    return deleted
                ids = [_text(session_id) for session_id in batch]
                records = _read_each(self.client, [self._record_reads(session_id) for session_id in ids])
                mine = [
                    (session_id, codec.as_bytes(raw), self._agents(members), self._multi_agents(members))
                    for session_id, (raw, _, members) in zip(ids, records, strict=True)
                    if self._owned_by(owner, session_id, raw)
                ]
                reads = [self._id_reads(session_id, agents) for session_id, _, agents, _ in mine]
                calls = [
                    self._delete_call(session_id, record, dict(zip(agents, found, strict=True)), multi)
                    for (session_id, record, agents, multi), found in zip(
                        mine, _read_each(self.client, reads), strict=True
                    )
                ]
                done = scripts.run_each(scripts.DELETE_SESSION, self.client, calls, self._delete_again)
                deleted += sum(1 for keys in done if keys)
                scripts.OWNER_FORGET(self.client, [owned, titles], [item for sid in ids for item in (sid, "")])
                logger.debug("owner=<%s>, sessions=<%d> | erased a batch", owner, len(ids))

    def _delete_again(self, keys: builtins.list[str], args: builtins.list[Any], walk: builtins.list[str]) -> int:
        """Delete one session on its own (its batched call did not simply succeed), record first under busy writers."""
        io = driver_for(self.client)

        async def call(arguments: builtins.list[Any], declared: builtins.list[str]) -> int:
            deleted: int = await scripts.run_on(scripts.DELETE_SESSION, io, keys, arguments, walk=declared)
            return deleted

        return drive(scripts.delete_session(call, walk, args[1]))

    def _delete_call(
        self, session_id: str, record: bytes, agents: dict[str, builtins.list[Any]], multi: builtins.list[str]
    ) -> tuple[builtins.list[str], builtins.list[Any], builtins.list[str]]:
        """Return the call of lua/delete_session.lua that deletes a session if its record is still ``record``.

        ``agents``: each agent's message ids as read. Every key they name is declared: one call, unless a writer
        added keys since.
        """
        message_ids = {agent_id: [int(n) for n in found] for agent_id, found in agents.items()}
        walk = self.keys.every_key(session_id, message_ids, multi)[2:]
        return [self.keys.session(session_id), self.keys.index(session_id)], ["", record], walk

    def _owned_by(self, owner: str, session_id: str, raw: bytes | str | None) -> bool:
        """Whether a session record read is there and names ``owner`` (a plain value that is no JSON object does not).

        An encrypted one this directory cannot open (no keyring, or not its key) raises ``SessionException``: that
        is no sign the session is another's, and nothing is taken out of the owner's keys for it.
        """
        if raw is None:
            return False
        try:
            return owner_of(raw, self.keys.session(session_id), self.values) == owner
        except SessionException:
            if Values.is_sealed(raw):
                raise
            return False

    def _cursor(self, cursor: str | None) -> tuple[str, str]:
        if cursor is None:
            return "", ""
        score, _, session_id = cursor.partition(":") if isinstance(cursor, str) else ("", "", "")
        if not score.isdecimal() or not session_id:
            raise ValueError(f"cursor=<{cursor!r}> | not a cursor list() returned")
        return score, validate_id(session_id, "cursor")

    def _record_reads(self, session_id: str) -> tuple[str, builtins.list[tuple[Any, ...]]]:
        key = self.keys.session(session_id)
        return key, [("GET", key), ("PEXPIRETIME", key), ("SMEMBERS", self.keys.index(session_id))]

    def _count_reads(self, session_id: str, agents: builtins.list[str]) -> tuple[str, builtins.list[tuple[Any, ...]]]:
        key = self.keys.session(session_id)
        return key, [("ZCARD", self.keys.messages(session_id, agent_id)) for agent_id in agents]

    def _id_reads(self, session_id: str, agents: builtins.list[str]) -> tuple[str, builtins.list[tuple[Any, ...]]]:
        key = self.keys.session(session_id)
        return key, [("ZRANGE", self.keys.messages(session_id, agent_id), 0, -1) for agent_id in agents]

    @staticmethod
    def _agents(members: builtins.list[Any]) -> builtins.list[str]:
        parsed = (parse_suffix(_text(member)) for member in members)
        return sorted(found[1] for found in parsed if found is not None and found[0] == AGENT)

    @staticmethod
    def _multi_agents(members: builtins.list[Any]) -> builtins.list[str]:
        parsed = (parse_suffix(_text(member)) for member in members)
        return sorted(found[1] for found in parsed if found is not None and found[0] == MULTI_AGENT)

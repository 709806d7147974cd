"""Scaling out: the slots of live sessions move to a new shard and back while agents run turns; no turn fails.

The sessions live in the slots a reshard moves, and their agents run turns without pause (one thread
each; half with the session lock on, a third with ``wait_replicas=1``, a quarter restoring their agent for
every turn) while a new shard joins and:
- the classic migration, driven from Python, holds each session's slot half-moved, then all-moved but not
  handed over, until a write of that session has met it (so every session meets ASK and TRYAGAIN, the
  first ones on a shard their client has never seen);
- ``valkey-cli --cluster reshard`` moves those slots back and forth key by key (CLUSTER SETSLOT
  IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), as an operator scaling out does;
- on Valkey 9, ``CLUSTER MIGRATESLOTS`` moves them atomically.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import SERVER_BINARY
from helpers import wait_until
from strands import Agent
from strands.types.content import Messages
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager, replication
from strands_valkey_session_manager.testing.cluster import LocalCluster, cli_for
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

SESSIONS = 24
#: valkey-cli moves the source's lowest-numbered slots: the sessions live in the lowest MOVED of them.
MOVED = 300
TTL = 120
#: How long a migration may hold a session's slot open waiting for a write of that session to meet it.
HOLD = 5.0
#: How long the model thinks in each turn. Real agents spend most of a turn waiting for their model; with
#: none, 24 agents would turn as fast as two cores allow, and their thousands of messages per session would
#: swamp the migrations (and the GIL, the thread that drives them) rather than meet them.
THINKING = 0.5


def thinking_echo(messages: Messages) -> str:
    """The scripted model's echo, after THINKING seconds (a model call's latency)."""
    time.sleep(THINKING)
    return f"You said: {messages[-1]['content'][0]['text']}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """This module's own 3-primary + 3-replica cluster (``cluster_client`` uses it): its tests move slots.

    A master that gives away its last slot would become a replica of the node that took it (Valkey's and
    Redis 7's default): these tests scale a shard in and out again, so it stays a master.
    """
    with LocalCluster(binary=SERVER_BINARY, args=["--cluster-allow-replica-migration", "no"]) as local:
        yield local


@dataclass
class Span:
    """Something that took time: a turn, a write, or a slot being open (migrating); ``error`` if it failed.

    ``label``: the session of a turn or write; how a slot moved (``valkey-cli``, ``held``, ``atomic``); the step
    of a held slot that no write met.
    """

    label: str
    slot: int
    start: float
    end: float = 0.0
    error: BaseException | None = None

    def overlaps(self, other: Span) -> bool:
        return self.slot == other.slot and self.start < other.end and other.start < self.end


@dataclass
class Journal:
    """What happened, when: turns and writes of the agents, and when each slot was open."""

    turns: list[Span] = field(default_factory=list)
    writes: list[Span] = field(default_factory=list)
    open_slots: list[Span] = field(default_factory=list)
    unmet: list[Span] = field(default_factory=list)  # slots held HOLD seconds that no write of their session met
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, spans: list[Span], span: Span) -> None:
        with self.lock:
            spans.append(span)

    def wrote_since(self, slot: int, since: float) -> bool:
        """Whether a write to ``slot`` started and finished (done or failed) since ``since``."""
        with self.lock:
            return any(w.slot == slot and w.start > since and w.end for w in self.writes)

    def moving(self, how: str = "", *slots: int) -> None:
        """Note that ``slots`` start to move ``how`` (none: nothing moves now), so the ones before have finished."""
        now = time.monotonic()
        with self.lock:
            for window in self.open_slots:
                window.end = window.end or now
            self.open_slots += [Span(how, slot, now) for slot in slots]

    def moved_by_valkey_cli(self, slot: int | None) -> None:
        """``LocalCluster.reshard``'s ``on_slot``: valkey-cli starts on ``slot`` (``None``: it has finished).

        valkey-cli reports a slot before it opens it: a slot's window runs from its report to the next one's.
        """
        self.moving("valkey-cli", *(() if slot is None else (slot,)))

    def during_migrations(self, spans: list[Span], how: str = "") -> list[Span]:
        """The spans that ran while their slot was open (moved ``how``, if given)."""
        with self.lock:
            windows = [window for window in self.open_slots if how in ("", window.label)]
            return [s for s in spans if any(s.overlaps(window) for window in windows)]


class TimedManager(ValkeySessionManager):
    """The manager, timing the writes of a turn (append a message, sync the agent) in a journal."""

    journal: Journal

    def _timed(self, write: Callable[[], None]) -> None:
        span = Span(self.session_id, LocalCluster.session_slot(self.session_id), time.monotonic())
        try:
            write()
        except BaseException as error:
            span.error = error
            raise
        finally:
            span.end = time.monotonic()
            self.journal.add(self.journal.writes, span)

    def append_message(self, message: Any, agent: Any, **kwargs: Any) -> None:
        self._timed(lambda: super(TimedManager, self).append_message(message, agent, **kwargs))

    def update_agent(self, session_id: str, session_agent: Any, **kwargs: Any) -> None:
        self._timed(lambda: super(TimedManager, self).update_agent(session_id, session_agent))


def session_ids(cluster: LocalCluster, source: LocalValkey) -> list[str]:
    """SESSIONS session ids, one per slot, all in the lowest MOVED slots that ``source`` serves."""
    lowest = set(cluster.slots(source)[:MOVED])
    by_slot: dict[int, str] = {}
    for n in range(100_000):
        slot = LocalCluster.session_slot(f"s{n}")
        if slot in lowest:
            by_slot.setdefault(slot, f"s{n}")
        if len(by_slot) == SESSIONS:
            return sorted(by_slot.values())
    raise AssertionError("not enough session ids in the moved slots")


class Traffic:
    """One agent per session, each running turns in its own thread until ``stop()``.

    Half of the sessions have the session lock on, a third ``wait_replicas=1``, and a quarter open their
    agent anew for every turn (restoring it from the session, as a stateless service does). The first has
    none of these: its slot is the first to move to a new shard, where the client has never been.
    """

    def __init__(self, client: ValkeyCluster, sessions: list[str]) -> None:
        self.client, self.sessions, self.journal = client, sessions, Journal()
        self.prompts: dict[str, list[str]] = {session: [] for session in sessions}
        self.options: dict[str, dict[str, Any]] = {}
        for i, session in enumerate(sessions):
            self.options[session] = {"ttl": TTL}
            if i % 2:
                self.options[session]["lock_timeout"] = 10
            if i % 3 == 2:
                self.options[session]["wait_replicas"] = 1
        self.reopening = set(sessions[3::4])
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.converse, args=(session,)) for session in sessions]
        for thread in self.threads:
            thread.start()

    def open(self, session: str) -> Agent:
        """The session's agent, restored from what is stored (or new)."""
        manager = TimedManager(session, self.client, **self.options[session])
        manager.journal = self.journal
        return Agent(
            agent_id="assistant", model=ScriptedModel(thinking_echo), session_manager=manager, callback_handler=None
        )

    def converse(self, session: str) -> None:
        slot = LocalCluster.session_slot(session)
        agent = None
        while not self.stopping.is_set():
            prompt = f"{session} turn {len(self.prompts[session])}"
            self.prompts[session].append(prompt)
            turn = Span(session, slot, time.monotonic())
            try:
                if agent is None or session in self.reopening:
                    agent = self.open(session)
                agent(prompt)
            except Exception as error:  # counted and reported: the assertion is that there are none
                turn.error = error
            turn.end = time.monotonic()
            self.journal.add(self.journal.turns, turn)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "an agent's turn never ended"

    def report(self, title: str) -> str:
        """Counts and times, printed (pytest -s) and put in assertion messages."""
        failed = [turn for turn in self.journal.turns if turn.error is not None]
        errors: dict[str, int] = {}
        for turn in failed:
            text = re.sub(r"<[^>]*>|\d+", "N", f"{type(turn.error).__name__}: {turn.error}")[:160]
            errors[text] = errors.get(text, 0) + 1
        turns = len(self.journal.during_migrations(self.journal.turns))
        lines = [
            f"{title}: {len(self.journal.turns)} turns, {len(failed)} failed, {turns} while their slot was open; "
            f"{len(self.journal.unmet)} held slots that no write met in {HOLD} s",
        ]
        for how in sorted({window.label for window in self.journal.open_slots}):
            met = self.journal.during_migrations(self.journal.writes, how)
            longest = max((w.end - w.start for w in met), default=0.0)
            windows = [window for window in self.journal.open_slots if window.label == how]
            open_longest = max((w.end - w.start for w in windows if any(w.overlaps(m) for m in met)), default=0.0)
            lines.append(
                f"  {how}: {len(windows)} slot migrations, {len(met)} writes while their slot was open, the longest "
                f"{longest * 1000:.0f} ms (the longest of those slots was open {open_longest * 1000:.0f} ms)"
            )
        during = {id(write) for write in self.journal.during_migrations(self.journal.writes)}
        calm = [write.end - write.start for write in self.journal.writes if id(write) not in during]
        lines.append(f"  no migration: {len(calm)} writes, the longest {max(calm, default=0.0) * 1000:.0f} ms")
        lines += [f"  {count} x {text}" for text, count in sorted(errors.items(), key=lambda item: -item[1])]
        print("\n".join(lines))
        return "\n".join(lines)


def redirections(nodes: list[LocalValkey]) -> int:
    """ASK and TRYAGAIN replies the nodes have sent (INFO errorstats): writes that met an open slot."""
    total = 0
    for node in nodes:
        with node.client(socket_timeout=5) as c:
            stats = c.info("errorstats")
            total += sum(int(stats.get(f"errorstat_{code}", {}).get("count", 0)) for code in ("ASK", "TRYAGAIN"))
    return total


def hold_until_met(traffic: Traffic, slot: int, nodes: list[LocalValkey]) -> Callable[[str], None]:
    """A ``between`` hook for ``migrate_slot``: keep the slot in each step until a write of its session meets it.

    Met: a write of the session started and ended while the slot was held, or one was redirected (ASK,
    TRYAGAIN) by ``nodes``, the slot's source and target (no other slot is open meanwhile).
    """

    def between(step: str) -> None:
        since, before = time.monotonic(), redirections(nodes)
        while not (traffic.journal.wrote_since(slot, since) or redirections(nodes) > before):
            if time.monotonic() > since + HOLD:  # its agent stopped writing: noted, the test fails at the end
                traffic.journal.add(traffic.journal.unmet, Span(step, slot, since, time.monotonic()))
                return
            time.sleep(0.02)

    return between


def assert_complete_in_order_with_one_deadline(cluster: LocalCluster, client: ValkeyCluster, traffic: Traffic) -> None:
    """Every conversation is stored whole and in order, and every key carries the session's one deadline."""
    for session in traffic.sessions:
        reader = ValkeySessionManager(session, client, ttl=TTL)
        stored = [
            (m.message["role"], m.message["content"][0]["text"]) for m in reader.list_messages(session, "assistant")
        ]
        expected = [
            pair
            for prompt in traffic.prompts[session]
            for pair in (("user", prompt), ("assistant", f"You said: {prompt}"))
        ]
        assert stored == expected, session
        ttls = {}
        for node in cluster.primaries():  # each master asked directly, whatever the client's slot map says
            with node.client() as on_node:
                for key in on_node.keys(f"session:{{{session}}}*"):
                    if ":lock:" not in key:
                        ttls[key] = on_node.pttl(key)
        assert len(ttls) == len(expected) + 4, (session, sorted(ttls))  # record, index, agent, ids, messages
        assert min(ttls.values()) > 0 and max(ttls.values()) - min(ttls.values()) <= 2000, (session, ttls)


def test_no_turn_fails_while_the_sessions_slots_move_to_a_new_shard_and_back_key_by_key(
    cluster: LocalCluster, cluster_client: ValkeyCluster
) -> None:
    try:
        cli_for(cluster.binary)  # valkey-cli --cluster reshard moves the slots key by key
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    source = cluster.primaries()[0]
    sessions = session_ids(cluster, source)

    traffic = Traffic(cluster_client, sessions)

    def hold_each_session_slot(target: LocalValkey) -> None:
        """The classic path from Python: move each session's slot to ``target``, held open until its session met it."""
        for session in sessions:
            slot = LocalCluster.session_slot(session)
            traffic.journal.moving("held", slot)
            cluster.migrate_slot(slot, target, between=hold_until_met(traffic, slot, [cluster.serving(slot), target]))
            traffic.journal.moving()

    try:
        new = cluster.add_master()  # scaling out: a new, empty shard joins while the agents run
        hold_each_session_slot(new)  # the first slots it gets: clients learn of it from ASK redirections
        # valkey-cli moves them back (scaling in), then the lowest MOVED slots of the source, every session's.
        cluster.reshard(new, source, len(cluster.slots(new)), on_slot=traffic.journal.moved_by_valkey_cli)
        cluster.reshard(source, new, MOVED, on_slot=traffic.journal.moved_by_valkey_cli)
        hold_each_session_slot(source)
    finally:
        traffic.stop()
        summary = traffic.report("classic migration")

    assert [turn.error for turn in traffic.journal.turns if turn.error] == [], summary
    assert traffic.journal.unmet == [], summary
    # Each session's slot was held twice until a write of that session met it: two turns of each, at least.
    assert len(traffic.journal.during_migrations(traffic.journal.turns, "held")) >= 2 * SESSIONS, summary
    assert_complete_in_order_with_one_deadline(cluster, cluster_client, traffic)


def test_a_write_with_wait_replicas_follows_ask_to_the_importing_node_and_waits_for_its_replicas(
    cluster: LocalCluster, cluster_client: ValkeyCluster
) -> None:
    slot = LocalCluster.session_slot("asked")
    source = cluster.serving(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    before = command_calls(target, "wait", "asking")
    cluster.open_slot(slot, target)  # the session's record does not exist yet: its source answers ASK
    try:
        ValkeySessionManager("asked", cluster_client, wait_replicas=1)
    finally:
        cluster.close_slot(slot, target)

    # ASKING, the write and WAIT in one round trip on the target, so WAIT counts the target's replicas (the
    # other three ASKINGs go before the three reads of the manager's opening round trip about the session's
    # keys: its record, its index and its deadline, which it reads before it creates the session).
    assert command_calls(target, "wait", "asking") == (before[0] + 1, before[1] + 4)
    with target.client() as on_target:
        assert on_target.exists("session:{asked}") == 1


def test_a_write_whose_slot_stays_split_past_the_deadline_says_it_is_migrating_and_safe_to_repeat(
    cluster: LocalCluster, cluster_client: ValkeyCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replication, "MIGRATION_WAIT", 0.5)
    agent = Agent(
        agent_id="assistant",
        model=ScriptedModel(),
        session_manager=ValkeySessionManager("split", cluster_client),
        callback_handler=None,
    )
    agent("one")
    slot = LocalCluster.session_slot("split")
    target = next(node for node in cluster.primaries() if node is not cluster.serving(slot))
    cluster.open_slot(slot, target)
    cluster.move_keys(slot, target, ["session:{split}"])  # every write names it and the index: TRYAGAIN
    try:
        with pytest.raises(SessionException, match="migrating") as refused:
            agent("two")
    finally:
        while cluster.move_keys(slot, target, 10):
            pass
        cluster.close_slot(slot, target)
    agent("three")

    assert "safe to repeat" in str(refused.value)
    restored = ValkeySessionManager("split", cluster_client).list_messages("split", "assistant")
    assert [m.message for m in restored] == agent.messages
    assert [m["content"][0]["text"] for m in agent.messages if m["role"] == "user"] == ["one", "two", "three"]


def outcome_while_the_slot_moves(
    cluster: LocalCluster, session_id: str, step: str, work: Callable[[], Any]
) -> list[Any]:
    """Migrate the session's slot to another master and, at ``step``, run ``work`` while the slot is held there.

    The slot stays held until ``work`` is done, or was turned away 20 times (ASK, TRYAGAIN: longer than
    valkey-py's own 16 attempts would wait). Returns ``[work's result]``, or ``[what it raised]``.
    """
    slot = LocalCluster.session_slot(session_id)
    source = cluster.serving(slot)
    target = next(node for node in cluster.primaries() if node is not source)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:
            outcome.append(error)

    running = threading.Thread(target=run)

    def between(at: str) -> None:
        if at == step:
            before = redirections([source, target])
            running.start()
            wait_until(lambda: redirections([source, target]) >= before + 20 or not running.is_alive(), timeout=HOLD)

    cluster.migrate_slot(slot, target, between=between)
    running.join(timeout=30)
    return outcome


@pytest.mark.parametrize("step", ["split", "moved"])
def test_an_agent_opened_while_its_slot_moves_restores_its_whole_conversation(
    cluster: LocalCluster, cluster_client: ValkeyCluster, step: str
) -> None:
    def open_agent() -> Agent:
        manager = ValkeySessionManager("opened", cluster_client)
        return Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)

    first = open_agent()
    for n in range(4):
        first(f"turn {n}")

    restored = outcome_while_the_slot_moves(cluster, "opened", step, lambda: open_agent().messages)

    assert restored == [first.messages]
    assert len(first.messages) == 8


@pytest.mark.parametrize("step", ["split", "moved"])
def test_a_session_deleted_while_its_slot_moves_leaves_no_key_on_either_node(
    cluster: LocalCluster, cluster_client: ValkeyCluster, step: str
) -> None:
    agent = Agent(
        agent_id="assistant",
        model=ScriptedModel(),
        session_manager=ValkeySessionManager("deleted", cluster_client),
        callback_handler=None,
    )
    for n in range(4):
        agent(f"turn {n}")
    logout = ValkeySessionManager("deleted", cluster_client)  # opened before: it knows the members
    slot = LocalCluster.session_slot("deleted")

    outcome = outcome_while_the_slot_moves(cluster, "deleted", step, lambda: logout.delete_session("deleted"))

    assert outcome == [None]
    for node in cluster.primaries():
        with node.client() as c:
            assert c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0


def command_calls(node: LocalValkey, *names: str) -> tuple[int, ...]:
    """How many times ``node`` ran each command (INFO commandstats)."""
    with node.client() as c:
        stats = c.info("commandstats")
    return tuple(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


def test_no_turn_fails_while_atomic_slot_migration_moves_the_sessions_slots_back_and_forth(
    cluster: LocalCluster, cluster_client: ValkeyCluster
) -> None:
    if not cluster.supports_atomic_slot_migration():
        pytest.skip(f"{SERVER_BINARY} has no CLUSTER MIGRATESLOTS (atomic slot migration, Valkey 9+)")
    source, target = cluster.primaries()[:2]
    sessions = session_ids(cluster, source)
    slots = [LocalCluster.session_slot(session) for session in sessions]
    traffic = Traffic(cluster_client, sessions)
    try:
        deadline, moves = time.monotonic() + 40, 0
        # Back and forth, at least 4 times, until SESSIONS writes have met a migration (each takes ~0.1 s).
        while moves < 4 or len(traffic.journal.during_migrations(traffic.journal.writes)) < SESSIONS:
            assert time.monotonic() < deadline, "writes did not meet the migrations in 40 s"
            traffic.journal.moving("atomic", *slots)
            cluster.migrate_slots_atomically(slots, target if moves % 2 == 0 else source)
            traffic.journal.moving()
            moves += 1
    finally:
        traffic.stop()
        summary = traffic.report("atomic migration")

    assert [turn.error for turn in traffic.journal.turns if turn.error] == [], summary
    assert_complete_in_order_with_one_deadline(cluster, cluster_client, traffic)

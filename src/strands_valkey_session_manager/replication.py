"""How a write reaches Valkey: on a cluster, following its slot while it moves; with ``wait_replicas``, then ``WAIT``.

Opt-in synchronous replication: Valkey replicates asynchronously, so a write the primary acknowledged can
be lost if the primary dies before a replica received it. With ``wait_replicas=N`` every write the
manager sends is followed, on the same connection and in the same pipeline (not a transaction), by
``WAIT N timeout_ms``; fewer than N acknowledgements raise :class:`ReplicasNotAcknowledged`. On a
cluster both go to the primary that owns the session's slot: ``WAIT`` only counts the writes sent on
its own connection.

A :class:`Transaction` is sent as one ``MULTI``/``EXEC`` block (all its commands run, or none does), and is
one command for everything below: its redirections, its ``WAIT``. A driver's ``pinned`` (driver.py) holds one
connection to the slot's node for an optimistic transaction (``WATCH``, reads, then ``MULTI``/``EXEC``); it does
not follow a moving slot: a redirection comes back as a reply, and the caller takes another way.

On a cluster every write (with or without ``WAIT``) and every read of a restore (:func:`read`) is sent
here, to the node that serves the session's slot, and follows the slot when it moves (resharding,
scaling out, failover):

- ``MOVED``: the slot has a new owner (a migration finished, a replica took over): the client's slot
  map is corrected and the write goes there.
- ``ASK``: the slot is migrating and the keys the write names are on the target already: the write goes
  to the target, after ``ASKING``, on one connection (``ASKING``, the write and ``WAIT`` in one round
  trip, so ``WAIT`` counts the target's replicas). A target the client has not seen yet (a shard just
  added) is added to its nodes, as valkey-py does for ``MOVED``.
- ``TRYAGAIN``: the slot is migrating and the keys the write names are split between the two nodes, or
  some do not exist yet (a new message): nothing ran; the write is sent again after a pause that doubles
  from :data:`FIRST_PAUSE` up to :data:`MAX_PAUSE` seconds, until the slot is handed over.

A write keeps following its slot for at most :data:`MIGRATION_WAIT` seconds from its first ``TRYAGAIN``
or ``MOVED`` (each ``MOVED`` after the first one pauses too); then it raises :class:`SlotMigrating`.
This is one implementation for every kind of client, on a driver's primitives (driver.py). valkey-py's own
handling (``ValkeyCluster.execute_command``, 6.2; its asyncio client's has the same limits) is not used: it retries
``TRYAGAIN`` for only about 0.4 s (16 attempts, the last 8 after 50 ms each) before a bare
``ClusterError("TTL exhausted.")``, and it fails on an ``ASK`` to a node it has not seen (AttributeError),
after which it releases a connection twice (replies then reach the wrong caller).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from valkey.exceptions import AskError, ClusterDownError, MovedError, TryAgainError, ValkeyError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from .connection import driver_for
from .driver import Driver, Item, drive, together
from .driver import Transaction as Transaction  # callers build theirs as replication.Transaction
from .options import Client, number

logger = logging.getLogger(__name__)

#: How long (seconds) a write keeps following its slot while it moves, before it raises SlotMigrating.
MIGRATION_WAIT = 5.0
#: The first pause (seconds) before a write refused with TRYAGAIN (or moved again) is sent again; it
#: doubles with each further refusal, up to MAX_PAUSE: a write resumes at most MAX_PAUSE after its slot
#: settled, at the cost of at most ~10 refused attempts a second (each one cheap request).
FIRST_PAUSE = 0.005
MAX_PAUSE = 0.1
#: A ClusterDownError (the cluster is reconfiguring) is retried, like a dropped connection, after this
#: pause (seconds), as ValkeyCluster does.
CLUSTER_DOWN_PAUSE = 0.25

#: Loads (after NOSCRIPT, "function not found") are about no key: the cluster client sends them to every
#: primary it knows, a node added after an ASK included (the driver's node_at), so they reach where the call runs.
_LOADS = ("SCRIPT LOAD", "FUNCTION LOAD")


#: What one call sends: a command, or a transaction of them.
Command = tuple[Any, ...] | Transaction


class ReplicasNotAcknowledged(ValkeyTimeoutError):
    """Fewer replicas than asked acknowledged a write in time; it is on the primary, maybe not on a replica.

    A ``TimeoutError``: like a write whose reply never came, it is unconfirmed, and safe to send again.
    ``replies`` are the write's own replies: it ran, and a caller may have to act on them (settle) first.
    """

    replies: list[Any] = []


class SlotMigrating(ValkeyError):
    """A call's slot was still moving between nodes after ``MIGRATION_WAIT`` seconds; its last attempt did not run.

    The server refused the last attempt without running it (``TRYAGAIN``, or a redirection): the call is
    safe to repeat, and an agent's next append carries a message whose append failed this way.
    """


@dataclass(frozen=True)
class WaitForReplicas:
    """How many replicas must acknowledge each write, and how long to wait for them."""

    replicas: int
    timeout_ms: int

    def __post_init__(self) -> None:
        """Reject values ``WAIT`` would misread (0 ms means wait forever; nothing here may block forever)."""
        number("wait_replicas", self.replicas, least=1, integer=True)
        number("wait_timeout_ms", self.timeout_ms, least=1, integer=True)


async def execute_on(driver: Driver, key: str, command: Command, wait: WaitForReplicas | None, **options: Any) -> Any:
    """Run ``command`` (about ``key``, with ``options``); with ``wait``, pipeline ``WAIT`` after it, same connection.

    Raises:
        ReplicasNotAcknowledged: If fewer than ``wait.replicas`` replicas acknowledged in ``wait.timeout_ms``.
        SlotMigrating: If, on a cluster, ``key``'s slot was still moving after ``MIGRATION_WAIT`` seconds.
        ValkeyError: Whatever the server or the connection raised (``NoScriptError`` included).
    """
    if driver.cluster:
        if not isinstance(command, Transaction) and (
            "target_nodes" in options or " ".join(map(str, command[:2])).upper().startswith(_LOADS)
        ):
            return await driver.command(*command, **options)
        (reply,), acknowledged = await _on_cluster(driver, key, [command], wait, options)
    elif wait is None and not isinstance(command, Transaction):
        return await driver.command(*command, **options)
    else:
        (reply,), acknowledged = await _send(driver, None, [command], wait, False, options)
    return _checked([reply], acknowledged, wait)[0]


async def read_on(driver: Driver, key: str, *commands: tuple[Any, ...], **options: Any) -> list[Any]:
    """Run read-only ``commands`` about ``key``'s slot in one round trip (a pipeline, not a transaction).

    On a cluster they follow the slot while it moves, as writes do: a command whose key has moved is sent
    again to the new node, the others keep the replies they had. ``options`` go with each command
    (``NEVER_DECODE``). Returns their replies, in order.

    Raises:
        SlotMigrating: If ``key``'s slot was still moving after ``MIGRATION_WAIT`` seconds.
        ValkeyError: Whatever the server or the connection raised.
    """
    if driver.cluster:
        return _checked(*await _on_cluster(driver, key, list(commands), None, options), None)
    return _checked((await _send(driver, None, list(commands), None, False, options))[0], None, None)


def execute(client: Client, key: str, command: Command, wait: WaitForReplicas | None, **options: Any) -> Any:
    """:func:`execute_on` a synchronous client."""
    return drive(execute_on(driver_for(client), key, command, wait, **options))


def read(client: Client, key: str, *commands: tuple[Any, ...], **options: Any) -> list[Any]:
    """:func:`read_on` a synchronous client."""
    return drive(read_on(driver_for(client), key, *commands, **options))


async def each_slot_on(
    driver: Driver, groups: list[tuple[str, list[tuple[Any, ...]]]], **options: Any
) -> list[list[Any]]:
    """Send groups of commands (each about one key's slot) in one round trip per node; each group's replies.

    Standalone, or a driver that ``routes`` (GLIDE splits it itself), one round trip; on a cluster, one per primary
    of the slot map (in parallel on an asyncio driver).
    Errors are values: a command whose slot moved meanwhile gets the redirection (callers send it again on its
    own, following its slot, as :func:`read_each_on` does). ``options`` go with each command (``NEVER_DECODE``).
    """
    items: list[list[Item]] = [[(command, options) for command in commands] for _, commands in groups]
    batches: dict[Any, list[int]] = {}
    if driver.cluster and not driver.routes and groups:
        primaries = await driver.primaries()
        owner = {slot: at for at, (_, slots) in enumerate(primaries) for slot in slots}
        for index, (key, _) in enumerate(groups):
            batches.setdefault(owner.get(driver.keyslot(key), 0), []).append(index)
        nodes = [primaries[at][0] for at in batches]
    else:
        batches = {None: list(range(len(groups)))} if groups else {}
        nodes = [None] * len(batches)
    sent = [
        driver.round_trip(node, [item for at in ats for item in items[at]])
        for node, ats in zip(nodes, batches.values(), strict=True)
    ]
    answers: list[list[Any]] = [[] for _ in groups]
    for ats, replies in zip(batches.values(), await together(driver, sent), strict=True):
        flow = iter(replies)
        for at in ats:
            answers[at] = [next(flow) for _ in items[at]]
    return answers


async def read_each_on(
    driver: Driver, groups: list[tuple[str, list[tuple[Any, ...]]]], **options: Any
) -> list[list[Any]]:
    """Read-only commands about many slots (one group per slot): :func:`each_slot_on`, retried per group.

    A group that met an error (a slot moving on a cluster) is read again on its own, following its slot
    (:func:`read_on`); the others keep their replies.
    """
    answers = await each_slot_on(driver, groups, **options)
    for at, (key, commands) in enumerate(groups):
        if any(isinstance(reply, Exception) for reply in answers[at]):
            answers[at] = await read_on(driver, key, *commands, **options)
    return answers


async def _send(
    driver: Driver,
    node: Any,
    commands: list[Command],
    wait: WaitForReplicas | None,
    asking: bool,
    options: dict[str, Any],
) -> tuple[list[Any], Any]:
    """Send the commands (each after ``ASKING``, if ``asking``; with ``options``) [, WAIT] to one node, one round trip.

    Returns their replies and WAIT's (``None`` without ``wait``), errors as values.
    """
    batch: list[Item] = []
    for command in commands:
        if asking:
            batch.append((("ASKING",), {}))  # it lets the next command (a MULTI: the block) into an importing slot
        if isinstance(command, Transaction):
            batch.append(Transaction(command.commands, options) if options else command)
        else:
            batch.append((command, options))
    if wait is not None:
        batch.append((("WAIT", wait.replicas, wait.timeout_ms), {}))
    replies = await driver.round_trip(node, batch)
    acknowledged = replies.pop() if wait is not None else None
    return replies[asking :: 1 + asking], acknowledged  # without ASKING's OKs


def _checked(replies: list[Any], acknowledged: Any, wait: WaitForReplicas | None) -> list[Any]:
    """Return the replies, or raise the first error among them, or ``ReplicasNotAcknowledged``."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    if wait is not None:
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if int(acknowledged) < wait.replicas:
            shortfall = ReplicasNotAcknowledged(
                f"WAIT: {acknowledged} of {wait.replicas} replicas acknowledged the write within "
                f"{wait.timeout_ms} ms; it is on the primary but would be lost if the primary failed before a "
                "replica received it"
            )
            shortfall.replies = replies
            raise shortfall
    return replies


async def _on_cluster(
    driver: Driver, key: str, commands: list[Command], wait: WaitForReplicas | None, options: dict[str, Any]
) -> tuple[list[Any], Any]:
    """Send the commands to the node serving ``key``'s slot, following the slot while it moves (module docstring).

    A command that met the slot in motion (``MOVED``, ``ASK``, ``TRYAGAIN``) did not run: it is sent again;
    the replies of the others are kept. Returns the replies, and ``WAIT``'s from the round that ran the last.
    """
    slot = driver.keyslot(key)
    retries = driver.retries  # after a dropped connection, as ValkeyCluster does
    moving = _Moving(driver, key, slot)
    replies: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    asked: Any = None
    while True:
        node = asked or await driver.node_of(slot)
        try:
            answers, acknowledged = await _send(
                driver, node, [commands[i] for i in pending], wait, asked is not None, options
            )
        except (ValkeyConnectionError, ValkeyTimeoutError):
            await _refresh_topology(driver)  # the primary may have failed over: find the slot's owner
            if retries == 0:
                raise
            retries -= 1
            asked = None
            continue
        asked, refusals = None, []
        for i, answer in zip(list(pending), answers, strict=True):
            if isinstance(answer, MovedError | TryAgainError) or (isinstance(answer, ClusterDownError) and retries):
                refusals.append(answer)
            elif isinstance(answer, AskError):  # after MovedError, which is an AskError too
                asked = driver.node_at(answer.host, answer.port)
            else:
                replies[i] = answer
                pending.remove(i)
        if not pending:
            return replies, acknowledged
        if asked is not None:  # the moved keys first, on the node that has them now
            continue
        refusal = refusals[0]
        if isinstance(refusal, ClusterDownError):
            logger.debug("key=<%s> | %s, retrying in %.2f s", key, refusal, CLUSTER_DOWN_PAUSE)
            await driver.sleep(CLUSTER_DOWN_PAUSE)
            await _refresh_topology(driver)
            retries -= 1
        elif isinstance(refusal, MovedError):
            await moving.wait(refusal, first_is_free=True)
            driver.moved(refusal)  # what ValkeyCluster does: fix that slot's owner
        else:
            await moving.wait(refusal)


class _Moving:
    """Paces the attempts of one write while its slot moves; past ``MIGRATION_WAIT`` raises ``SlotMigrating``."""

    def __init__(self, driver: Driver, key: str, slot: int) -> None:
        self.driver, self.key, self.slot = driver, key, slot
        self.deadline = 0.0
        self.pause = FIRST_PAUSE
        self.refusals = 0

    async def wait(self, reply: ValkeyError, first_is_free: bool = False) -> None:
        """Pause before the next attempt (no pause for a first free refusal); raise once past the deadline."""
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + MIGRATION_WAIT
        self.refusals += 1
        if now >= self.deadline:
            raise SlotMigrating(
                f"slot {self.slot} of key=<{self.key}> is migrating between cluster nodes (resharding or scaling "
                f"out) and was still moving after {MIGRATION_WAIT} s ({self.refusals} attempts, last reply: "
                f"{type(reply).__name__} {reply}); its last attempt was refused without running, so nothing was "
                "written and it is safe to repeat once the migration has finished"
            ) from reply
        if first_is_free and self.refusals == 1:
            return
        pause = min(self.pause, self.deadline - now)
        logger.debug("key=<%s>, slot=<%d> | %s: slot moving, retrying in %.3f s", self.key, self.slot, reply, pause)
        await self.driver.sleep(pause)
        self.pause = min(self.pause * 2, MAX_PAUSE)


async def _refresh_topology(driver: Driver) -> None:
    """Reload a cluster client's slot map (what ``ValkeyCluster`` itself does after a failed call)."""
    try:
        await driver.refresh()
    except ValkeyError as error:  # every node unreachable: the next call will say so
        logger.debug("could not refresh the cluster's slot map: %s", error)

"""How a write reaches Valkey: on a cluster, following its slot while it moves; with ``wait_replicas``, then ``WAIT``.

Opt-in synchronous replication: valkey replicates asynchronously, so a write the primary acknowledged can
be lost if the primary dies before a replica received it. With ``wait_replicas=N`` every write the
manager sends is followed, on the same connection and in the same pipeline (not a transaction), by
``WAIT N timeout_ms``; fewer than N acknowledgements raise :class:`ReplicasNotAcknowledged`. On a
cluster both go to the primary that owns the session's slot: ``WAIT`` only counts the writes sent on
its own connection.

On a cluster every write (with or without ``WAIT``) is sent here, to the node that serves the session's
slot, and follows the slot when it moves (resharding, scaling out, failover):

- ``MOVED``: the slot has a new owner (a migration finished, a replica took over): the client's slot
  map is corrected and the write goes there.
- ``ASK``: the slot is migrating and the keys the write names are on the target already: the write goes
  to the target, after ``ASKING``, on one connection (``ASKING``, the write and ``WAIT`` in one round
  trip, so ``WAIT`` counts the target's replicas). A target the client has not seen yet (a shard just
  added) is added to its nodes, as valkey-py does for ``MOVED``.
- ``TRYAGAIN``: the slot is migrating and the keys the write names are split between the two nodes, or
  some do not exist yet (a new message): nothing ran; the write is sent again after a pause that doubles
  from :data:`FIRST_PAUSE` up to :data:`MAX_PAUSE` seconds, until the slot is handed over.

A write keeps following its slot for at most :data:`MIGRATION_WAIT` seconds from the first redirection
or ``TRYAGAIN`` (each ``MOVED`` after the first one pauses too); then it raises :class:`SlotMigrating`.
valkey-py's own handling (``ValkeyCluster.execute_command``, 6.2) is not used for writes: it retries
``TRYAGAIN`` for only about 0.4 s (16 attempts, the last 8 after 50 ms each) before a bare
``ClusterError("TTL exhausted.")``, and it fails on an ``ASK`` to a node it has not seen (AttributeError),
after which it releases a connection twice (replies then reach the wrong caller).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from valkey.cluster import PRIMARY, ClusterNode, ValkeyCluster
from valkey.exceptions import AskError, ClusterDownError, MovedError, TryAgainError, ValkeyError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from .options import Client, number

logger = logging.getLogger(__name__)

#: How long (seconds) a write keeps following its slot while it moves, before it raises SlotMigrating.
MIGRATION_WAIT = 5.0
#: The first pause (seconds) before a write refused with TRYAGAIN (or moved again) is sent again; it
#: doubles with each further refusal, up to MAX_PAUSE.
FIRST_PAUSE = 0.01
MAX_PAUSE = 0.2
#: A ClusterDownError (the cluster is reconfiguring) is retried, like a dropped connection, after this
#: pause (seconds), as ValkeyCluster does.
CLUSTER_DOWN_PAUSE = 0.25

#: Commands that are about no key: sent through the cluster client, which sends SCRIPT LOAD and FUNCTION LOAD
#: to every primary.
_EVERY_PRIMARY = frozenset({"SCRIPT LOAD", "FUNCTION"})


class ReplicasNotAcknowledged(ValkeyTimeoutError):
    """Fewer replicas than asked acknowledged a write in time; it is on the primary, maybe not on a replica.

    A ``TimeoutError``: like a write whose reply never came, it is unconfirmed, and safe to send again.
    """


class SlotMigrating(ValkeyError):
    """A write's slot was still moving between nodes after ``MIGRATION_WAIT`` seconds; its last attempt did not run.

    The server refused the last attempt without running it (``TRYAGAIN``, or a redirection): the write is
    safe to send again, and the next one will carry it once the slot has settled.
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


def execute(client: Client, key: str, command: tuple[Any, ...], wait: WaitForReplicas | None) -> Any:
    """Run ``command`` (about ``key``); with ``wait``, pipeline ``WAIT`` after it on the same connection.

    Raises:
        ReplicasNotAcknowledged: If fewer than ``wait.replicas`` replicas acknowledged in ``wait.timeout_ms``.
        SlotMigrating: If, on a cluster, ``key``'s slot was still moving after ``MIGRATION_WAIT`` seconds.
        ValkeyError: Whatever the server or the connection raised (``NoScriptError`` included).
    """
    untyped: Any = client  # valkey-py's clients are untyped
    if isinstance(client, ValkeyCluster):
        if command[0] in _EVERY_PRIMARY:
            return untyped.execute_command(*command)
        return _on_cluster(untyped, key, command, wait)
    if wait is None:
        return untyped.execute_command(*command)
    return _checked(*_send(untyped, command, wait, asking=False), wait)


def _send(node: Any, command: tuple[Any, ...], wait: WaitForReplicas | None, asking: bool) -> tuple[Any, Any]:
    """Send [ASKING,] the command [, WAIT] to one node in one round trip; its reply and WAIT's (errors as values)."""
    pipe = node.pipeline(transaction=False)
    if asking:
        pipe.execute_command("ASKING")
    pipe.execute_command(*command)
    if wait is not None:
        pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
    replies = pipe.execute(raise_on_error=False)[1 if asking else 0 :]
    return replies[0], replies[1] if wait is not None else None


def _checked(reply: Any, acknowledged: Any, wait: WaitForReplicas | None) -> Any:
    """Return the command's reply, or raise its error, or ``ReplicasNotAcknowledged``."""
    if isinstance(reply, Exception):
        raise reply
    if wait is not None:
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if int(acknowledged) < wait.replicas:
            raise ReplicasNotAcknowledged(
                f"WAIT: {acknowledged} of {wait.replicas} replicas acknowledged the write within "
                f"{wait.timeout_ms} ms; it is on the primary but would be lost if the primary failed before a "
                "replica received it"
            )
    return reply


def _on_cluster(cluster: Any, key: str, command: tuple[Any, ...], wait: WaitForReplicas | None) -> Any:
    """Send the command to the node serving ``key``'s slot, following the slot while it moves (module docstring)."""
    slot = cluster.keyslot(key)
    retries = int(cluster.cluster_error_retry_attempts)  # after a dropped connection, as ValkeyCluster does
    moving = _Moving(key, slot)
    asked: ClusterNode | None = None
    while True:
        node = asked or cluster.nodes_manager.get_node_from_slot(slot)
        try:
            reply, acknowledged = _send(cluster.get_valkey_connection(node), command, wait, asking=asked is not None)
        except (ValkeyConnectionError, ValkeyTimeoutError):
            _refresh_topology(cluster)  # the primary may have failed over: find the slot's owner
            if retries == 0:
                raise
            retries -= 1
            asked = None
            continue
        asked = None
        if isinstance(reply, MovedError):  # first: a MovedError is an AskError
            moving.wait(reply, first_is_free=True)
            cluster.nodes_manager.update_moved_exception(reply)  # what ValkeyCluster does: fix that slot's owner
        elif isinstance(reply, AskError):
            asked = _node_at(cluster, reply.host, reply.port)
        elif isinstance(reply, TryAgainError):
            moving.wait(reply)
        elif isinstance(reply, ClusterDownError) and retries:
            logger.debug("key=<%s> | %s, retrying in %.2f s", key, reply, CLUSTER_DOWN_PAUSE)
            time.sleep(CLUSTER_DOWN_PAUSE)
            _refresh_topology(cluster)
            retries -= 1
        else:
            return _checked(reply, acknowledged, wait)


class _Moving:
    """Paces the attempts of one write while its slot moves; past ``MIGRATION_WAIT`` raises ``SlotMigrating``."""

    def __init__(self, key: str, slot: int) -> None:
        self.key, self.slot = key, slot
        self.deadline = 0.0
        self.pause = FIRST_PAUSE
        self.refusals = 0

    def wait(self, reply: ValkeyError, first_is_free: bool = False) -> None:
        """Pause before the next attempt (no pause for a first free refusal); raise once past the deadline."""
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + MIGRATION_WAIT
        self.refusals += 1
        if now >= self.deadline:
            raise SlotMigrating(
                f"slot {self.slot} of key=<{self.key}> is migrating between cluster nodes (resharding or scaling "
                f"out) and was still moving after {MIGRATION_WAIT} s ({self.refusals} attempts, last reply: "
                f"{type(reply).__name__} {reply}); the write was not applied by its last attempt and is safe to "
                "repeat once the migration has finished"
            ) from reply
        if first_is_free and self.refusals == 1:
            return
        pause = min(self.pause, self.deadline - now)
        logger.debug("key=<%s>, slot=<%d> | %s: slot moving, retrying in %.3f s", self.key, self.slot, reply, pause)
        time.sleep(pause)
        self.pause = min(self.pause * 2, MAX_PAUSE)


def _node_at(cluster: Any, host: str, port: int) -> ClusterNode:
    """Return the cluster client's node at ``host:port``, adding it if the client has not seen it yet.

    valkey-py learns nodes from the slot map: a master added to scale out is unknown until it serves a
    slot, yet an ``ASK`` sends writes to it before. Added as ValkeyCluster adds the target of a ``MOVED``,
    so that a ``SCRIPT LOAD`` (sent to every known primary on ``NOSCRIPT``) reaches it too.
    """
    node: ClusterNode | None = cluster.get_node(host=host, port=port)
    if node is None:
        node = ClusterNode(host, port, PRIMARY)  # type: ignore[no-untyped-call]
        cluster.nodes_manager.nodes_cache[node.name] = node
    return node


def _refresh_topology(cluster: Any) -> None:
    """Reload a cluster client's slot map (what ``ValkeyCluster`` itself does after a failed call)."""
    try:
        cluster.nodes_manager.initialize()
    except ValkeyError as error:  # every node unreachable: the next call will say so
        logger.debug("could not refresh the cluster's slot map: %s", error)

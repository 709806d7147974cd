"""Opt-in synchronous replication: a write, then ``WAIT numreplicas timeout``, in one round trip.

Valkey replicates asynchronously: a write the primary acknowledged can be lost if the primary dies
before a replica received it. With ``wait_replicas=N`` every write the manager sends is followed,
on the same connection and in the same pipeline (not a transaction), by ``WAIT N timeout_ms``; fewer
than N acknowledgements raise :class:`ReplicasNotAcknowledged`. On a cluster both go to the primary
that owns the session's slot: ``WAIT`` only counts the writes sent on its own connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from valkey.cluster import ValkeyCluster
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import MovedError, ValkeyError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from .options import Client, number

logger = logging.getLogger(__name__)

#: How many MOVED redirects (a failover or resharding moved the slot) a write follows before it gives up.
MAX_REDIRECTS = 3


class ReplicasNotAcknowledged(ValkeyTimeoutError):
    """Fewer replicas than asked acknowledged a write in time; it is on the primary, maybe not on a replica.

    A ``TimeoutError``: like a write whose reply never came, it is unconfirmed, and safe to send again.
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
        ValkeyError: Whatever the server or the connection raised (``NoScriptError`` included).
    """
    if wait is None:
        untyped: Any = client  # ValkeyCluster.execute_command is untyped
        return untyped.execute_command(*command)
    # As ValkeyCluster does for any command: after a connection error reload the slot map and try again
    # (our writes are safe to repeat), and follow MOVED redirects. A standalone client does neither.
    retries = int(getattr(client, "cluster_error_retry_attempts", 0))
    redirects = MAX_REDIRECTS if isinstance(client, ValkeyCluster) else 0
    while True:
        pipe: Any = _node_for(client, key).pipeline(transaction=False)
        pipe.execute_command(*command)
        pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
        try:
            reply, acknowledged = pipe.execute(raise_on_error=False)
        except (ValkeyConnectionError, ValkeyTimeoutError):
            _refresh_topology(client)  # the primary may have failed over: find the slot's owner
            if retries == 0:
                raise
            retries -= 1
            continue
        if isinstance(reply, MovedError) and redirects:
            logger.debug("key=<%s> | slot moved (%s), following the redirect", key, reply)
            _refresh_topology(client)
            redirects -= 1
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if int(acknowledged) < wait.replicas:
            raise ReplicasNotAcknowledged(
                f"WAIT: {acknowledged} of {wait.replicas} replicas acknowledged the write within "
                f"{wait.timeout_ms} ms; it is on the primary but would be lost if the primary failed before a "
                "replica received it"
            )
        return reply


def _node_for(client: Client, key: str) -> Any:
    """Return the standalone client of the primary that serves ``key`` (the client itself when not a cluster)."""
    if not isinstance(client, ValkeyCluster):
        return client
    cluster: Any = client  # valkey-py's cluster internals are untyped
    return cluster.get_valkey_connection(cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key)))


def _refresh_topology(client: Client) -> None:
    """Reload a cluster client's slot map (what ``ValkeyCluster`` itself does after a failed call)."""
    if isinstance(client, ValkeyCluster):
        nodes_manager: Any = client.nodes_manager
        try:
            nodes_manager.initialize()
        except ValkeyError as error:  # every node unreachable: the next call will say so
            logger.debug("could not refresh the cluster's slot map: %s", error)

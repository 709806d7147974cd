"""A throwaway Valkey Cluster on loopback (3 masters + 3 replicas by default): for tests, failover drills, demos.

``python -m strands_valkey_session_manager.testing.cluster start STATE_FILE`` starts one in the background
and prints its URL; ``... stop STATE_FILE`` stops it by the pids saved in that file (``scripts/cluster``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import valkey
from valkey.cluster import ClusterNode, ValkeyCluster
from valkey.crc import key_slot

from ..keys import KeySchema
from .server import LocalValkey, Running, find_server, free_port, wait_for

SLOTS = 16384
BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
# What valkey-cli (and redis-cli) --cluster reshard prints, and flushes, as it starts moving a slot (its plan,
# printed first, names the source by id, with no " to ").
_MOVING_SLOT = re.compile(rb"Moving slot (\d+) from \S+ to ")


def _free_node_port() -> int:
    """Return a free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536 and _is_free(port + BUS_PORT_OFFSET):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cli_for(binary: str) -> str:
    """``valkey-cli`` next to ``valkey-server`` (``redis-cli`` next to ``redis-server``), else on PATH.

    ``reshard`` runs it; ``FileNotFoundError`` saying what to install when there is none (the embedded Valkey
    ships no ``valkey-cli``).
    """
    name = Path(binary).name.replace("-server", "-cli")
    sibling = Path(binary).with_name(name)
    found = str(sibling) if sibling.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name} next to {binary} or on PATH (Debian: apt-get install valkey-tools)")
    return found


def _topology(client: Any) -> tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]:
    """One node's view of the healthy nodes (``CLUSTER NODES``): sorted (port, its master's port or 0, slots)."""
    nodes = client.execute_command("CLUSTER NODES")  # valkey-py parses it: {"ip:port": {"flags": ...}}
    ports = {fields["node_id"]: int(address.rsplit(":", 1)[1]) for address, fields in nodes.items()}
    healthy = []
    for address, fields in nodes.items():
        flags = set(fields["flags"].split(","))
        if flags & {"fail", "fail?", "handshake", "noaddr"}:
            continue
        slots = tuple((int(r[0]), int(r[-1])) for r in fields["slots"])
        healthy.append((int(address.rsplit(":", 1)[1]), ports.get(fields["master_id"], 0), slots))
    return tuple(sorted(healthy))


def _knows(client: Any, ids: list[str]) -> bool:
    """Whether a node has completed the handshake with every node in ``ids`` (``CLUSTER NODES``)."""
    nodes = client.execute_command("CLUSTER NODES").values()
    known = {fields["node_id"] for fields in nodes if not {"handshake", "noaddr"} & set(fields["flags"].split(","))}
    return known >= set(ids)


def _key_in(slots: tuple[int, int]) -> str:
    """Return a key whose hash slot lies in ``slots`` (first, last): for probe writes to one master."""
    return next(
        key for n in range(100_000) if slots[0] <= key_slot(key := f"probe:{{{n}}}".encode()) <= slots[1]
    ).decode()


def _replica_ports(client: Any) -> list[int]:
    """Ports of the replicas a master reports online in ``INFO replication``."""
    info = client.info("replication")
    lines = [value for name, value in info.items() if name.startswith("slave") and isinstance(value, dict)]
    return [int(line["port"]) for line in lines if line.get("state") == "online"]


def _slot_migrations(client: Any) -> list[dict[str, Any]]:
    """Return the slot migration jobs a node knows of (``CLUSTER GETSLOTMIGRATIONS``), each as a dict."""
    return [dict(zip(job[::2], job[1::2], strict=True)) for job in client.execute_command("CLUSTER GETSLOTMIGRATIONS")]


class LocalCluster(Running):
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports, stopped by pid.

    ``start()`` returns once every node agrees on a slot map covering all 16384 slots and every
    replica is in sync. ``kill(node)`` crashes one node (SIGKILL) and ``start_node(node)`` brings it back.
    """

    cluster = True

    def __init__(
        self,
        binary: str | None = None,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1500,
        args: list[str] | None = None,
    ) -> None:
        """Describe the cluster; nothing starts until ``start()``."""
        found = find_server(binary)
        self.binary, self.binary_source = found.path, found.source
        self.masters, self.replicas = masters, replicas
        cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        cluster_args += ["--cluster-node-timeout", str(node_timeout_ms), "--repl-diskless-sync-delay", "0"]
        cluster_args += args or []
        self.nodes = [
            LocalValkey(binary=found.path, args=cluster_args, port=_free_node_port())
            for _ in range(masters * (1 + replicas))
        ]

    def __repr__(self) -> str:
        """``LocalCluster(binary='...' (embedded), 3 masters x 1 replicas, ports [...])``."""
        ports = [node.port for node in self.nodes]
        return (
            f"LocalCluster(binary={self.binary!r} ({self.binary_source}), "
            f"{self.masters} masters x {self.replicas} replicas, ports {ports})"
        )

    @property
    def url(self) -> str:
        """``valkey://127.0.0.1:<port>`` of the first node (a cluster client finds the others)."""
        return f"valkey://127.0.0.1:{self.nodes[0].port}"

    def client(self, **kwargs: Any) -> ValkeyCluster:
        """Return a ``ValkeyCluster`` client over every node (``decode_responses=True`` unless told otherwise)."""
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10, "socket_connect_timeout": 2}
        options.update(kwargs)
        startup = [ClusterNode("127.0.0.1", node.port) for node in self.nodes]  # type: ignore[no-untyped-call]
        return ValkeyCluster(startup_nodes=startup, **options)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start every node, join them into one cluster (:meth:`_create`), wait until it is ready."""
        try:
            for node in self.nodes:
                node.start()
            self._create(timeout)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, timeout: float) -> None:
        """Do what ``valkey-cli --cluster create`` does, with plain cluster commands (so no valkey-cli is needed).

        Distinct config epochs (no collision round to wait for), equal slot ranges for the masters (CLUSTER
        ADDSLOTSRANGE, Valkey 7.2+ and Redis 7.0+), CLUSTER MEET from the first node, then, once every node
        knows every other, CLUSTER REPLICATE for the replicas, spread over the masters in turn.
        """
        clients: list[Any] = [node.client(socket_timeout=10) for node in self.nodes]
        try:
            ids = [str(client.execute_command("CLUSTER MYID")) for client in clients]
            for epoch, client in enumerate(clients, start=1):
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
            for n, client in enumerate(clients[: self.masters]):
                first, end = n * SLOTS // self.masters, (n + 1) * SLOTS // self.masters
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, end - 1)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            wait_for(lambda: all(_knows(client, ids) for client in clients), timeout, "every node to meet every other")
            for n, client in enumerate(clients[self.masters :]):
                client.execute_command("CLUSTER REPLICATE", ids[n % self.masters])
        finally:
            for client in clients:
                client.close()

    def add_master(self, timeout: float = 60.0) -> LocalValkey:
        """Scale out: start a master (with ``replicas`` replicas of its own) and join it to the cluster, empty.

        ``CLUSTER MEET`` (what ``valkey-cli --cluster add-node`` sends), then ``CLUSTER REPLICATE`` for its
        replicas; move slots to it with ``reshard`` or ``migrate_slot``. Returns it once the cluster is
        complete again; ``stop()`` stops it with the others.
        """
        new = [
            LocalValkey(binary=self.binary, args=self.nodes[0].args, port=_free_node_port())
            for _ in range(1 + self.replicas)
        ]
        self.nodes += new
        self.masters += 1
        clients: list[Any] = [node.start().client(socket_timeout=10) for node in new]
        try:
            with self.nodes[0].client(socket_timeout=10) as member:
                for node in new:
                    member.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            ids = [self.node_id(node) for node in self.nodes if node.running]
            wait_for(lambda: all(_knows(client, ids) for client in clients), timeout, "the new nodes to meet all")
            for client in clients[1:]:
                client.execute_command("CLUSTER REPLICATE", self.node_id(new[0]))
        finally:
            for client in clients:
                client.close()
        self.wait_ready(timeout)
        return new[0]

    def wait_ready(self, timeout: float = 30.0, complete: bool = True) -> None:
        """Wait until the running nodes agree on one slot map, all slots served by a running master.

        With ``complete`` every node must be running and every master must have its replicas in sync.
        """
        wait_for(lambda: self._ready(complete), timeout, "the cluster to be ready (cluster_state:ok, one slot map)")

    def _ready(self, complete: bool) -> bool:
        running = {node.port for node in self.nodes if node.running}
        if complete and len(running) != len(self.nodes):
            return False
        try:
            views = set()
            for port in running:
                with self.node_at(port).client(socket_timeout=2) as client:
                    info = client.execute_command("CLUSTER INFO")
                    if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                        return False
                    views.add(_topology(client))
            if len(views) != 1:  # the nodes do not agree (yet)
                return False
            (topology,) = views
            masters = {port: slots for port, master, slots in topology if not master}
            if sum(last - first + 1 for slots in masters.values() for first, last in slots) != SLOTS:
                return False
            if not all(port in running for port, slots in masters.items() if slots):
                return False
            return not complete or all(self._in_sync(port, slots) for port, slots in masters.items())
        except valkey.exceptions.ValkeyError:
            return False

    def _in_sync(self, master_port: int, slots: tuple[tuple[int, int], ...]) -> bool:
        """Whether the master's replicas are online and receive its stream: a write is acknowledged (WAIT).

        Right after a (re)sync a replica can show as online while its master holds the stream back
        until its first acknowledgement; only a write that comes back acknowledged proves it flows.
        """
        with self.node_at(master_port).client(socket_timeout=2) as client:
            if len(_replica_ports(client)) < self.replicas:
                return False
            if not slots:  # a master added empty (add_master) has no slot to write a probe to
                return True
            probe = _key_in(slots[0])
            client.set(probe, "1")
            client.delete(probe)
            return int(client.execute_command("WAIT", self.replicas, 100)) >= self.replicas

    def node_at(self, port: int) -> LocalValkey:
        """Return the node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str) -> LocalValkey:
        """Return the node that serves ``key``'s slot now, as the running nodes see it."""
        return self.serving(key_slot(key.encode()))

    def serving(self, slot: int) -> LocalValkey:
        """Return the master that serves ``slot`` now, as the running nodes see it."""
        node = next(node for node in self.nodes if node.running)
        with node.client(socket_timeout=2) as client:
            for port, master, slots in _topology(client):
                if not master and any(first <= slot <= last for first, last in slots):
                    return self.node_at(port)
        raise LookupError(f"no master serves slot {slot}")

    def primaries(self) -> list[LocalValkey]:
        """Return the running masters that serve slots, in port order."""
        node = next(node for node in self.nodes if node.running)
        with node.client(socket_timeout=2) as client:
            return [self.node_at(port) for port, master, slots in _topology(client) if not master and slots]

    def slots(self, node: LocalValkey) -> list[int]:
        """Return the slots ``node`` serves now, in order, as the running nodes see it."""
        probe = next(node for node in self.nodes if node.running)
        with probe.client(socket_timeout=2) as client:
            ranges = next((slots for port, _, slots in _topology(client) if port == node.port), ())
        return [slot for first, last in ranges for slot in range(first, last + 1)]

    def node_id(self, node: LocalValkey) -> str:
        """Return the cluster node id of ``node`` (``CLUSTER MYID``)."""
        with node.client(socket_timeout=2) as client:
            return str(client.execute_command("CLUSTER MYID"))

    @staticmethod
    def session_slot(session_id: str, key_prefix: str = "session") -> int:
        """Return the hash slot of every key of a session (on a cluster its id is the keys' hash tag)."""
        return int(key_slot(KeySchema(key_prefix, cluster=True).session(session_id).encode()))

    def replicas_of(self, master: LocalValkey) -> list[LocalValkey]:
        """Return the replicas in sync with ``master`` (``INFO replication``)."""
        with master.client(socket_timeout=2) as client:
            return [self.node_at(port) for port in _replica_ports(client)]

    def role(self, node: LocalValkey) -> str:
        """``master`` or ``slave``, as the node itself reports (``INFO replication``)."""
        with node.client(socket_timeout=2) as client:
            return str(client.info("replication").get("role", ""))

    # -- moving slots while clients run (resharding, scaling out) -------------------------------

    def reshard(
        self,
        source: LocalValkey,
        target: LocalValkey,
        slots: int,
        pipeline: int = 10,
        on_slot: Callable[[int | None], None] | None = None,
        timeout: float = 120.0,
    ) -> list[int]:
        """Move ``slots`` slots from ``source`` to ``target`` with ``valkey-cli --cluster reshard``, key by key.

        valkey-cli takes the source's lowest-numbered slots and, for each: ``CLUSTER SETSLOT IMPORTING`` on the
        target, ``MIGRATING`` on the source, ``MIGRATE`` of its keys ``pipeline`` at a time, then
        ``SETSLOT NODE`` everywhere. ``on_slot(slot)`` is called as it starts on each slot (its output is read
        as it goes), ``on_slot(None)`` once it has finished. Returns the slots moved, once every node agrees on
        the new slot map.
        """
        self.wait_ready(timeout)  # valkey-cli refuses a cluster whose nodes disagree or have open slots
        command = [cli_for(self.binary), "--cluster", "reshard", f"127.0.0.1:{source.port}"]
        command += ["--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target)]
        command += ["--cluster-slots", str(slots), "--cluster-pipeline", str(pipeline), "--cluster-yes"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output, parsed_to, moved = b"", 0, []
        watchdog = threading.Timer(timeout, process.kill)  # by its own pid, should valkey-cli hang
        watchdog.start()
        assert process.stdout is not None
        try:
            with process:
                while chunk := os.read(process.stdout.fileno(), 65536):
                    output += chunk
                    for match in _MOVING_SLOT.finditer(output, parsed_to):
                        moved.append(int(match[1]))
                        parsed_to = match.end()
                        if on_slot is not None:
                            on_slot(moved[-1])
        finally:
            watchdog.cancel()
        if on_slot is not None:
            on_slot(None)
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({process.returncode}, killed after {timeout}s if -9): {output.decode()}"
            )
        self.wait_ready(timeout)
        return moved

    def migrate_slot(
        self,
        slot: int,
        target: LocalValkey,
        batch: int = 10,
        between: Callable[[str], None] | None = None,
    ) -> None:
        """Move one slot to ``target`` the classic way, as valkey-cli does for each slot, from Python.

        ``open_slot``, ``move_keys`` ``batch`` at a time, ``close_slot``. While the slot is open,
        ``between(step)`` may hold it there (a long migration): ``"split"`` once half of its keys have moved
        (a slot with fewer than 2 keys skips it), ``"moved"`` once all have, before the slot is handed over.
        """
        if self.serving(slot) is target:
            return
        source = self.open_slot(slot, target)
        with source.client(socket_timeout=10) as client:
            half = int(client.execute_command("CLUSTER COUNTKEYSINSLOT", slot)) // 2
        if half and self.move_keys(slot, target, half) and between is not None:
            between("split")
        while self.move_keys(slot, target, batch):
            pass
        if between is not None:
            between("moved")
        self.close_slot(slot, target)

    def open_slot(self, slot: int, target: LocalValkey) -> LocalValkey:
        """Start moving ``slot`` to ``target``: ``SETSLOT IMPORTING`` there, ``MIGRATING`` on its master (returned)."""
        source = self.serving(slot)
        with target.client(socket_timeout=10) as client:
            client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_id(source))
        with source.client(socket_timeout=10) as client:
            client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def move_keys(self, slot: int, target: LocalValkey, keys: int | list[str], timeout: float = 30.0) -> int:
        """``MIGRATE`` keys of an open slot from its master to ``target``: these ``keys``, or that many; how many."""
        with self.serving(slot).client(socket_timeout=timeout) as client:
            if isinstance(keys, int):
                keys = list(client.execute_command("CLUSTER GETKEYSINSLOT", slot, keys))
            if keys:
                client.migrate("127.0.0.1", target.port, keys, 0, int(timeout * 1000))  # MIGRATE's multi-key form
        return len(keys)

    def close_slot(self, slot: int, target: LocalValkey) -> None:
        """Hand an open slot over to ``target``: ``SETSLOT NODE`` on it, on the source, then on the other masters."""
        source, target_id = self.serving(slot), self.node_id(target)
        for node in [target, source, *(node for node in self.primaries() if node not in (source, target))]:
            with node.client(socket_timeout=10) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    def supports_atomic_slot_migration(self) -> bool:
        """Whether the servers have ``CLUSTER MIGRATESLOTS`` (Valkey 9's atomic slot migration)."""
        with self.nodes[0].client(socket_timeout=2) as client:
            return any(line.startswith("MIGRATESLOTS ") for line in client.execute_command("CLUSTER HELP"))

    def migrate_slots_atomically(self, slots: list[int], target: LocalValkey, timeout: float = 30.0) -> None:
        """Move ``slots`` (all served by one master) to ``target`` with Valkey 9's ``CLUSTER MIGRATESLOTS``.

        Their master streams a snapshot of the slots and then their writes to the target, serving them
        meanwhile, and hands them over at once. Returns once the job succeeded and every node agrees.
        """
        ordered = sorted(slots)
        ranges: list[list[int]] = []
        for slot in ordered:
            if ranges and ranges[-1][1] == slot - 1:
                ranges[-1][1] = slot
            else:
                ranges.append([slot, slot])
        command = ["CLUSTER MIGRATESLOTS", "SLOTSRANGE", *(end for pair in ranges for end in pair)]
        command += ["NODE", self.node_id(target)]
        with self.serving(ordered[0]).client(socket_timeout=timeout) as client:
            before = {job["name"] for job in _slot_migrations(client)}
            client.execute_command(*command)

            def done() -> bool:
                (job,) = [job for job in _slot_migrations(client) if job["name"] not in before]
                if job["state"] in ("failed", "cancelled"):
                    raise RuntimeError(f"{' '.join(map(str, command))}: {job['state']}: {job.get('message')}")
                return bool(job["state"] == "success")

            wait_for(done, timeout, f"slots {ranges} to migrate to {target.port}")
        self.wait_ready(timeout)

    def kill(self, node: LocalValkey) -> None:
        """Crash one node (SIGKILL by pid); its directory and cluster config stay for ``start_node()``."""
        node.kill()

    def start_node(self, node: LocalValkey, timeout: float = 30.0) -> None:
        """Start a killed node again and wait until it has rejoined and the cluster is complete."""
        node.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node by its pid and remove its directory (SIGTERM to all first: they stop in parallel)."""
        for node in self.nodes:
            if node.process is not None and node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()


def _stop_pids(state: dict[str, Any], timeout: float = 15.0) -> None:
    """Stop the nodes a ``start`` left running, by the pids in its state, and remove their directories."""
    pids = [int(node["pid"]) for node in state["nodes"]]
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: all(_gone(pid) for pid in pids), timeout, "the cluster's nodes to exit")
    except TimeoutError:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    for node in state["nodes"]:
        shutil.rmtree(node["dir"], ignore_errors=True)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie that nobody reaped counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def main(argv: list[str]) -> int:
    """``start STATE_FILE`` (prints the URL) or ``stop STATE_FILE``; see ``scripts/cluster``."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m strands_valkey_session_manager.testing.cluster start|stop STATE_FILE", file=sys.stderr)
        return 2
    action, state_file = argv[0], Path(argv[1])
    if action == "stop":
        if not state_file.exists():
            print(f"{state_file} does not exist: no cluster to stop", file=sys.stderr)
            return 1
        _stop_pids(json.loads(state_file.read_text()))
        state_file.unlink()
        return 0
    if state_file.exists():
        print(f"{state_file} exists: a cluster may be running; stop it first", file=sys.stderr)
        return 1
    cluster = LocalCluster(binary=os.environ.get("VALKEY_SERVER")).start()
    nodes = [
        {"port": node.port, "pid": node.process.pid, "dir": str(node.dir)} for node in cluster.nodes if node.process
    ]
    state_file.write_text(json.dumps({"url": cluster.url, "nodes": nodes}))
    print(cluster.url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

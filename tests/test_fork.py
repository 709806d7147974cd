"""Forked workers (gunicorn or celery prefork, multiprocessing with fork): parent and child both keep working.

The child of a process that used the library inherits its clients, event loop and threads' state. Each test
lets the child work and then finalise everything it inherited (``gc.collect()``, as a worker's exit does),
and checks that the parent's next calls succeed at once: within a deadline well under the 5 s a stall on a
silenced socket used to last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import pytest
import valkey
import valkey.asyncio
from strands import Agent

from strands_valkey_session_manager import SessionBusyError, ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Seconds the parent's first call after the fork may take: well under a 5 s socket-timeout stall.
AT_ONCE = 2.0


def in_child(work: Callable[[], Any], timeout: float = 60) -> Any:
    """Run ``work`` in a forked child, which then finalises what it inherited; return what ``work`` returned.

    Raises:
        AssertionError: With the child's error, if ``work`` raised.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without ever returning into pytest
        try:
            os.close(read)
            try:
                outcome = {"result": work()}
            except BaseException as error:  # reported to the parent, which fails the test
                outcome = {"error": repr(error)}
            gc.collect()  # finalise every object inherited from the parent, as a worker's exit does
            os.write(write, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        waiting = select.poll()  # not select(): a descriptor above 1023 is out of its range
        waiting.register(read, select.POLLIN)
        assert waiting.poll(timeout * 1000), f"the child did not finish within {timeout}s"
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    outcome = json.loads(b"".join(chunks))
    assert "error" not in outcome, f"the child failed: {outcome['error']}"
    return outcome["result"]


def at_once(call: Callable[[], Any]) -> Any:
    """Return ``call()``, failing the test if it takes longer than ``AT_ONCE`` seconds."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        try:
            return future.result(timeout=AT_ONCE)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"the parent's call after the fork took longer than {AT_ONCE}s")


# -- ValkeyStorage ------------------------------------------------------------------------------------------


@pytest.fixture(params=["plain", "tls"])
def fork_server(request: pytest.FixtureRequest, server: LocalValkey, client: valkey.Valkey) -> LocalValkey:
    """The plain test server, or the TLS-only one (closing a TLS connection writes on the wire)."""
    chosen: LocalValkey = request.getfixturevalue("tls_server") if request.param == "tls" else server
    return chosen


def test_a_forked_child_and_its_parent_both_keep_using_a_storage(fork_server: LocalValkey) -> None:
    ca = {"ssl_ca_certs": str(fork_server.tls_files.ca)} if fork_server.tls_files else {}
    fork_storage = ValkeyStorage(valkey.asyncio.Valkey.from_url(fork_server.url, **ca), key_prefix="fork")
    asyncio.run(fork_storage.write("jobs/parent", b"from the parent"))
    probe = fork_server.client()
    accepted = int(probe.info("stats")["total_connections_received"])

    def child() -> str:
        asyncio.run(fork_storage.write("jobs/child", b"from the child"))
        seen = asyncio.run(fork_storage.read("jobs/parent"))
        fork_storage.close()  # a worker shutting down closes what it opened
        return seen.decode()

    assert in_child(child) == "from the parent"

    assert at_once(lambda: asyncio.run(fork_storage.read("jobs/child"))) == b"from the child"
    asyncio.run(fork_storage.write("jobs/parent", b"still working"))
    assert asyncio.run(fork_storage.read("jobs/parent")) == b"still working"
    # The child's one connection, and none of the parent's: its connection was never closed under it.
    assert int(probe.info("stats")["total_connections_received"]) - accepted == 1
    probe.close()
    asyncio.run(fork_storage.delete("jobs/parent"))
    asyncio.run(fork_storage.delete("jobs/child"))
    fork_storage.close()


def test_a_child_forked_while_the_parent_is_mid_call_leaves_that_call_alone(server: LocalValkey) -> None:
    storage = ValkeyStorage(valkey.asyncio.Valkey(port=server.port), key_prefix=f"midcall-{os.getpid()}")
    asyncio.run(storage.write("a/b", b"1"))
    busy = threading.Event()
    done: list[bytes | None] = []

    def parent_reads() -> None:
        while not busy.is_set():
            done.append(asyncio.run(storage.read("a/b")))

    reader = threading.Thread(target=parent_reads)
    reader.start()
    try:
        assert in_child(lambda: asyncio.run(storage.read("a/b")).decode()) == "1"
        count = len(done)
        at_once(lambda: asyncio.run(storage.read("a/b")))
        assert len(done) > count or reader.is_alive()  # the reader goes on
    finally:
        busy.set()
        reader.join(10)
    assert not reader.is_alive() and done and set(done) == {b"1"}
    storage.close()


# -- ValkeySessionManager --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_a_forked_child_and_its_parent_both_keep_using_a_session_manager(
    kind: str, request: pytest.FixtureRequest
) -> None:
    client = request.getfixturevalue("client" if kind == "standalone" else "cluster_client")
    manager = ValkeySessionManager("shared", client)
    parent = Agent(agent_id="parent", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    parent("before the fork")

    def child() -> list[str]:
        worker = Agent(agent_id="child", model=ScriptedModel(), session_manager=manager, callback_handler=None)
        worker("in the child")
        return [m["content"][0]["text"] for m in worker.messages]

    assert in_child(child) == ["in the child", "(scripted reply) You said: in the child"]

    at_once(lambda: parent("after the fork"))
    stored = ValkeySessionManager("shared", client).list_messages("shared", "parent")
    assert [m.message["content"][0]["text"] for m in stored][::2] == ["before the fork", "after the fork"]
    assert len(ValkeySessionManager("shared", client).list_messages("shared", "child")) == 2


def test_a_forked_child_holds_none_of_its_parents_leases_and_keeps_its_own_invocations_alive(
    client: valkey.Valkey,
) -> None:
    """The fork comes while the parent's locked invocation runs (its lease renewed, its session kept alive)."""
    manager = ValkeySessionManager("locked", client, ttl=2, lock_timeout=0.5)
    in_model = threading.Event()

    def reply(messages: Any) -> str:
        in_model.set()
        return "parent's answer"

    holder = Agent(
        agent_id="holder", model=ScriptedModel(reply, delay=3.0), session_manager=manager, callback_handler=None
    )
    running = threading.Thread(target=holder, args=("parent's turn",))
    running.start()
    assert in_model.wait(30)

    def child() -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        try:  # its copy of the running agent: the parent's lease is not the child's to share
            holder("child's turn on the held agent")
        except SessionBusyError:
            outcome["busy"] = True
        # Its own invocation outlives the parent's turn and the session's ttl: the child keeps it alive.
        model = ScriptedModel(["child's answer"], delay=4.0)
        worker = Agent(agent_id="worker", model=model, session_manager=manager, callback_handler=None)
        worker("child's turn")
        outcome["worker"] = [m["content"][0]["text"] for m in worker.messages]
        return outcome

    assert in_child(child) == {"busy": True, "worker": ["child's turn", "child's answer"]}

    running.join(30)
    reader = ValkeySessionManager("locked", client)
    assert [m.message["content"][0]["text"] for m in reader.list_messages("locked", "holder")] == [
        "parent's turn",
        "parent's answer",
    ]
    assert not client.keys("*:lock:*")

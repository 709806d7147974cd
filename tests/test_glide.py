"""What is GLIDE's own: from_url(client="glide") (TLS, ACL users, databases), the TypeErrors, forks, its asyncio client.

Every contract test file that takes ``client_kind`` runs on GLIDE clients too (conftest.py); this file covers
what only GLIDE has.
"""

from __future__ import annotations

import asyncio
import os
import threading

import glide
import glide_sync
import pytest
import valkey
from strands import Agent
from strands.types.exceptions import SessionException
from test_acl import rule
from valkey.exceptions import NoScriptError, ResponseError

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.connection import glide_configuration
from strands_valkey_session_manager.driver import Item, Transaction, drive
from strands_valkey_session_manager.driver_glide import GlideDriver
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey


def texts(agent: Agent) -> list[str]:
    return [block["text"] for message in agent.messages for block in message["content"] if "text" in block]


def converse(manager: ValkeySessionManager) -> Agent:
    agent = Agent(agent_id="a", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    agent("hello")
    return agent


def test_from_url_builds_a_glide_sync_client_whose_session_a_valkey_py_client_reads(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    manager = ValkeySessionManager.from_url(f"valkey://127.0.0.1:{server.port}/0", "s", client="glide", ttl=60)
    try:
        assert isinstance(manager.client, glide_sync.GlideClient)
        converse(manager)
    finally:
        manager.close()
    assert 0 < client.ttl("session:s") <= 60
    restored = Agent(agent_id="a", model=ScriptedModel(), session_manager=ValkeySessionManager("s", client))
    assert texts(restored) == ["hello", "(scripted reply) You said: hello"]


def test_from_url_carries_the_database(server: LocalValkey, client: valkey.Valkey) -> None:
    manager = ValkeySessionManager.from_url(f"redis://localhost:{server.port}/3", "s", client="glide")
    try:
        converse(manager)
    finally:
        manager.close()
    assert client.keys("session:*") == []
    with server.client(db=3) as third:
        assert third.exists("session:s") == 1
        third.flushdb()


#: What GLIDE adds to the documented ACL rule (docs/production.md): it reads INFO REPLICATION as it connects.
GLIDE_COMMANDS = "+info"


def test_from_url_carries_an_acl_user_and_the_documented_rule_plus_info_is_enough(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    client.acl_setuser("glider", enabled=True, passwords=["+s3cret"], reset_keys=True)
    client.execute_command("ACL", "SETUSER", "glider", *rule().split(), *GLIDE_COMMANDS.split())
    try:
        manager = ValkeySessionManager.from_url(f"valkey://glider:s3cret@127.0.0.1:{server.port}", "s", client="glide")
        try:
            converse(manager)
        finally:
            manager.close()
    finally:
        client.acl_deluser("glider")
    assert client.exists("session:s") == 1


def test_a_wrong_password_fails_saying_so(server: LocalValkey, client: valkey.Valkey) -> None:
    client.acl_setuser("glider", enabled=True, passwords=["+right"], reset_keys=True)
    try:
        with pytest.raises(SessionException) as raised:
            ValkeySessionManager.from_url(f"valkey://glider:wrong@127.0.0.1:{server.port}", "s", client="glide")
    finally:
        client.acl_deluser("glider")
    assert "WRONGPASS" in str(raised.value) or "auth" in str(raised.value).lower()


def test_from_url_over_tls(tls_server: LocalValkey) -> None:
    url = tls_server.url.replace("valkeys://", "rediss://")
    manager = ValkeySessionManager.from_url(url, "s", client="glide", ssl_ca_certs=str(tls_server.tls_files.ca))
    try:
        agent = converse(manager)
        assert texts(agent)[-1] == "(scripted reply) You said: hello"
    finally:
        manager.close()


def test_from_url_refuses_what_it_cannot_build(server: LocalValkey) -> None:
    url = f"valkey://127.0.0.1:{server.port}"
    with pytest.raises(TypeError, match="belongs to the event loop it is made on"):
        ValkeySessionManager.from_url(url, "s", client="glide", asyncio=True)
    with pytest.raises(TypeError, match="Did you mean 'request_timeout'"):
        ValkeySessionManager.from_url(url, "s", client="glide", request_timeout_ms=5)
    with pytest.raises(TypeError, match="needs a valkeys:// or rediss:// URL"):
        ValkeySessionManager.from_url(url, "s", client="glide", ssl_ca_certs="/ca.pem")
    with pytest.raises(ValueError, match="valkey://, valkeys://"):
        ValkeySessionManager.from_url(f"unix:///tmp/{server.port}.sock", "s", client="glide")
    with pytest.raises(ValueError, match="client='glide'"):
        ValkeySessionManager.from_url(url, "s", client="redis-py")


def test_a_glide_client_that_compresses_values_is_refused(server: LocalValkey) -> None:
    config = glide_configuration(f"valkey://127.0.0.1:{server.port}")
    config.compression = glide_sync.CompressionConfiguration(enabled=True)
    compressing = glide_sync.GlideClient.create(config)
    try:
        with pytest.raises(TypeError, match="compression on: it would change the stored values"):
            ValkeySessionManager("s", compressing)
    finally:
        compressing.close()


def test_storage_on_a_glide_client_of_either_kind_is_read_by_valkey_py_storage(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    """glide_sync and asyncio glide (awaited on its own loop and on others): the keys valkey-py's storage reads."""
    url = f"valkey://127.0.0.1:{server.port}"
    sync_client = glide_sync.GlideClient.create(glide_configuration(url))
    sync_storage = ValkeyStorage(sync_client, ttl=60)
    asyncio.run(sync_storage.write("session/a/one.json", b"1"))

    async def on_its_loop() -> None:
        asyncio_client = await glide.GlideClient.create(glide_configuration(url))
        storage = ValkeyStorage(asyncio_client)
        await storage.write("session/a/two.json", b"2")  # from the client's own loop: no deadlock
        assert await storage.list("session/") == ["session/a/one.json", "session/a/two.json"]
        await asyncio.to_thread(lambda: asyncio.run(storage.write("session/b/three.json", b"3")))  # another loop
        storage.close()
        await asyncio_client.close()

    asyncio.run(on_its_loop())
    plain = ValkeyStorage(valkey.asyncio.Valkey(port=server.port))
    assert asyncio.run(plain.list("")) == ["session/a/one.json", "session/a/two.json", "session/b/three.json"]
    assert asyncio.run(plain.read("session/b/three.json")) == b"3"
    assert 0 < client.pttl("strands:session/a/one.json") <= 60_000
    sync_storage.close()
    assert asyncio.run(sync_storage.read("session/a/one.json")) == b"1"  # closed, usable: it reconnects
    sync_storage.close()
    sync_client.close()
    plain.close()


def test_storage_from_url_builds_glide(server: LocalValkey) -> None:
    storage = ValkeyStorage.from_url(f"valkey://127.0.0.1:{server.port}", client="glide", request_timeout=2000)
    try:
        asyncio.run(storage.write("session/a/x", b"x"))
        assert [found.key for found in asyncio.run(storage.search("x"))] == ["session/a/x"]
        assert asyncio.run(storage.read("session/a/x")) == b"x"
    finally:
        storage.close()
    with pytest.raises(TypeError, match="unknown option 'socket_timeout'"):
        ValkeyStorage.from_url(f"valkey://127.0.0.1:{server.port}", client="glide", socket_timeout=1)


def test_an_asyncio_glide_client_on_its_own_loop_then_from_a_thread(server: LocalValkey, client: valkey.Valkey) -> None:
    """The asyncio client awaited on its loop (open(), invoke_async), and used from a synchronous thread meanwhile."""

    async def main() -> list[str]:
        own = await glide.GlideClient.create(glide_configuration(f"valkey://127.0.0.1:{server.port}"))
        try:
            manager = await ValkeySessionManager.open("s", own, ttl=60)
            agent = Agent(agent_id="a", model=ScriptedModel(), session_manager=manager, callback_handler=None)
            await agent.invoke_async("one")
            seen: list[list[str]] = []
            # a synchronous restore in a thread while this loop awaits it: its I/O must not need this loop
            thread = threading.Thread(
                target=lambda: seen.append(
                    texts(Agent(agent_id="a", model=ScriptedModel(), session_manager=ValkeySessionManager("s", own)))
                )
            )
            thread.start()
            await asyncio.to_thread(thread.join, 30)
            await agent.invoke_async("two")
            return seen[0]
        finally:
            await own.close()

    assert asyncio.run(asyncio.wait_for(main(), 60)) == ["one", "(scripted reply) You said: one"]
    restored = Agent(agent_id="a", model=ScriptedModel(), session_manager=ValkeySessionManager("s", client))
    assert texts(restored)[-1] == "(scripted reply) You said: two"


def _in_child(work: object) -> str:
    """Run ``work()`` in a forked child; return what it returned, or its exception's type and message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            result = str(work())  # type: ignore[operator]
        except BaseException as error:
            result = f"{type(error).__name__}: {error}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as reply:
        out = reply.read().decode()
    os.waitpid(pid, 0)
    return out


def test_a_forked_child_is_told_to_make_its_asyncio_glide_client_after_the_fork(server: LocalValkey) -> None:
    async def make() -> object:
        return await glide.GlideClient.create(glide_configuration(f"valkey://127.0.0.1:{server.port}"))

    loop = asyncio.new_event_loop()
    inherited = loop.run_until_complete(make())
    try:
        out = _in_child(lambda: ValkeySessionManager("s", inherited))
    finally:
        loop.run_until_complete(inherited.close())  # type: ignore[attr-defined]
        loop.close()
    assert out.startswith("SessionException") and "Make the client" in out and "after the fork" in out, out


def test_a_glide_sync_client_made_before_a_fork_works_in_the_child(server: LocalValkey, client: valkey.Valkey) -> None:
    inherited = glide_sync.GlideClient.create(glide_configuration(f"valkey://127.0.0.1:{server.port}"))
    try:
        ValkeySessionManager("before", inherited)  # used in the parent first
        out = _in_child(lambda: texts(converse(ValkeySessionManager("child", inherited))))
        converse(ValkeySessionManager("parent", inherited))  # the parent's connection untouched
    finally:
        inherited.close()
    assert out == str(["hello", "(scripted reply) You said: hello"])
    assert client.exists("session:child", "session:parent") == 2


def test_a_round_trip_answers_each_item_in_order(server: LocalValkey, client: valkey.Valkey) -> None:
    """Plain commands as one pipeline, a transaction as an atomic batch, ASKINGs (GLIDE follows ASK) answered OK."""
    glide_client = glide_sync.GlideClient.create(glide_configuration(f"valkey://127.0.0.1:{server.port}"))
    try:
        driver = GlideDriver(glide_client)
        items: list[Item] = [
            (("ASKING",), {}),
            (("INCRBY", "c", 5), {}),
            (("ASKING",), {}),
            Transaction((("SET", "k", "v"), ("INCR", "k"), ("INCR", "n"))),
            (("GET", "k"), {}),
            (("EVALSHA", "0" * 40, 0), {}),
        ]
        ok, added, asked, (stored, refused, counted), got, missing = drive(driver.round_trip(None, items))
    finally:
        glide_client.close()
    assert (ok, added, asked, stored, counted, got) == (b"OK", 5, b"OK", b"OK", 1, b"v")
    assert isinstance(refused, ResponseError) and "not an integer" in str(refused)  # ran, failed, as EXEC says
    assert isinstance(missing, NoScriptError)  # what the scripts' reload looks for
    assert client.get("n") == "1"

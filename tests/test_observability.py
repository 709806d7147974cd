"""OpenTelemetry: every session operation is one span (child of the current one) with the DB conventions' attributes,
errors on spans, metrics; no stored value and (by default) no session id anywhere in what is emitted.

Spans and metrics go to the SDK's in-memory exporter and reader (testing/telemetry.py sets the global providers
once, recording only inside ``capture()``), around real agents on the scripted model and a real server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterable

import pytest
import valkey
from conftest import SERVER_BINARY
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from strands import Agent
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import (
    SessionBusyError,
    SessionDirectory,
    ValkeySessionManager,
    ValkeyStorage,
    telemetry,
)
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey
from strands_valkey_session_manager.testing.telemetry import Captured, capture

SECRET_SESSION = "sess-7f3a9c"  # a user identifier: never in an attribute unless opted in
SECRET_TEXT = "classified-text-4242"  # a stored value: never in an attribute
OURS = ("session.", "storage.", "sessions.")


def ours(seen: Captured) -> list[ReadableSpan]:
    return [span for span in seen.spans() if span.name.startswith(OURS)]


def named(seen: Captured, name: str) -> list[ReadableSpan]:
    return [span for span in seen.spans() if span.name == name]


def ancestors(span: ReadableSpan, spans: Iterable[ReadableSpan]) -> list[str]:
    """Names of the span's parents, nearest first (within the captured spans)."""
    by_id = {other.context.span_id: other for other in spans}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def everything_emitted(span: ReadableSpan) -> list[str]:
    """Every string a span carries: attribute values, event attributes, status description, name."""
    texts = [span.name, str(span.status.description or "")]
    texts += [str(value) for value in (span.attributes or {}).values()]
    for event in span.events:
        texts += [event.name, *(str(value) for value in (event.attributes or {}).values())]
    return texts


def test_two_agents_one_span_per_operation_under_their_invocations(
    server: LocalValkey, client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    request = trace.get_tracer("test").start_as_current_span
    with capture() as seen:
        manager = ValkeySessionManager(SECRET_SESSION, client)
        researcher = make_agent(manager, "researcher", replies=["found it"])
        writer = make_agent(manager, "writer", replies=["wrote it"])
        researcher("research this")
        writer("write it up")
        with request("request"):
            again = make_agent(ValkeySessionManager(SECRET_SESSION, client), "researcher")

    spans = seen.spans()
    appends = named(seen, telemetry.APPEND_MESSAGE)
    assert [(span.attributes["gen_ai.agent.id"], span.attributes["strands_valkey.message.id"]) for span in appends] == [
        ("researcher", 0),
        ("researcher", 1),
        ("writer", 0),
        ("writer", 1),
    ]
    for span in appends:  # the hooks run inside the agent's invocation span
        assert "invoke_agent" in " ".join(ancestors(span, spans))
        assert span.kind == trace.SpanKind.CLIENT
        attributes = span.attributes
        assert attributes["db.system.name"] == "valkey"
        assert attributes["db.operation.name"] == telemetry.APPEND_MESSAGE
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == server.port
        assert attributes["db.namespace"] == "0"
        assert attributes["strands_valkey.messages.written"] == 1
        assert attributes["strands_valkey.bytes.written"] > 100
        assert attributes["strands_valkey.write.mode"] in ("plain", "script")
        assert span.status.status_code == StatusCode.UNSET
    # each agent's first message is a script (the manager knows no previous one), the next plain commands
    assert [span.attributes["strands_valkey.write.mode"] for span in appends] == ["script", "plain"] * 2
    # an operation inside another is part of it: no span of its own for the repository calls the SDK makes
    assert not named(seen, telemetry.CREATE_MESSAGE) and not named(seen, telemetry.READ_AGENT)
    assert not named(seen, telemetry.LIST_MESSAGES) and not named(seen, telemetry.UPDATE_AGENT)
    syncs = named(seen, telemetry.SYNC_AGENT)
    assert {span.attributes["gen_ai.agent.id"] for span in syncs} == {"researcher", "writer"}
    assert all("invoke_agent" in " ".join(ancestors(span, spans)) for span in syncs)

    restores = named(seen, telemetry.RESTORE_AGENT)
    assert [span.attributes["gen_ai.agent.id"] for span in restores] == ["researcher", "writer", "researcher"]
    assert [span.attributes["strands_valkey.messages.restored"] for span in restores] == [0, 0, 2]
    assert ancestors(restores[0], spans) == []  # built outside any span: a trace of its own
    assert ancestors(restores[2], spans) == ["request"]  # built in a request span: under it
    assert again.messages[-1]["content"][0]["text"] == "found it"

    points = seen.metrics()
    assert all("error.type" not in point.attributes for point in points["db.client.operation.duration"])
    duration = "db.client.operation.duration"
    assert seen.total(duration, **{"db.operation.name": telemetry.APPEND_MESSAGE}) == 4
    assert (
        seen.total(duration, **{"db.operation.name": telemetry.APPEND_MESSAGE, "strands_valkey.write.mode": "plain"})
        == 2
    )
    assert seen.total(duration, **{"db.operation.name": telemetry.RESTORE_AGENT}) == 3
    assert seen.total("strands_valkey.messages.written") == 4
    assert seen.total("strands_valkey.messages.written", **{"strands_valkey.write.mode": "plain"}) == 2
    assert seen.total("strands_valkey.messages.restored") == 2
    assert seen.total("strands_valkey.bytes.written") == sum(
        span.attributes.get("strands_valkey.bytes.written", 0) for span in ours(seen)
    )


def test_no_value_and_no_session_id_in_anything_emitted(
    client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    with capture() as seen:
        manager = ValkeySessionManager(SECRET_SESSION, client)
        agent = make_agent(manager, "assistant", replies=[SECRET_TEXT])
        agent(f"tell me {SECRET_TEXT}")
        make_agent(ValkeySessionManager(SECRET_SESSION, client), "rival")  # a conflict below: its error too
        rival = make_agent(ValkeySessionManager(SECRET_SESSION, client), "assistant")
        agent("more")
        with pytest.raises(SessionException):
            rival("clash")
        manager.delete_session(SECRET_SESSION)
    assert ours(seen)
    for span in ours(seen):
        for text in everything_emitted(span):
            assert SECRET_SESSION not in text and SECRET_TEXT not in text, (span.name, text)
        assert "session.id" not in (span.attributes or {})
    for name, points in seen.metrics().items():
        for point in points:
            assert SECRET_SESSION not in str(point.attributes), name


def test_session_id_only_when_opted_in(
    monkeypatch: pytest.MonkeyPatch, client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    monkeypatch.setenv(telemetry.SESSION_ID_ENV, "true")
    with capture() as seen:
        make_agent(ValkeySessionManager(SECRET_SESSION, client), "assistant")("hi")
    assert {span.attributes.get("session.id") for span in ours(seen)} == {SECRET_SESSION}


def test_a_conflict_is_an_error_on_its_span(client: valkey.Valkey, make_agent: Callable[..., Agent]) -> None:
    first = make_agent(ValkeySessionManager("user-42", client), "assistant")
    second = make_agent(ValkeySessionManager("user-42", client), "assistant")  # the same agent: a bug
    first("one")
    with capture() as seen, pytest.raises(SessionException, match="refused"):
        second("two")
    (failed,) = [span for span in named(seen, telemetry.APPEND_MESSAGE) if span.status.status_code == StatusCode.ERROR]
    assert failed.attributes["error.type"] == "CONFLICT"
    assert failed.attributes["strands_valkey.conflict"] is True
    assert failed.status.description == "CONFLICT"
    assert [event.attributes["exception.type"] for event in failed.events] == [
        "strands.types.exceptions.SessionException"
    ]
    assert seen.total("strands_valkey.conflicts", **{"db.operation.name": telemetry.APPEND_MESSAGE}) == 1
    assert seen.total("db.client.operation.duration", **{"error.type": "CONFLICT"}) == 1


def test_a_lost_connection_is_an_error_on_its_span(make_agent: Callable[..., Agent]) -> None:
    with LocalValkey(binary=SERVER_BINARY) as local:
        agent = make_agent(ValkeySessionManager("user-42", local.client(socket_connect_timeout=1)), "assistant")
        agent("one")
        local.stop()
        with capture() as seen, pytest.raises(SessionException, match="ConnectionError"):
            agent("two")
    (failed,) = named(seen, telemetry.APPEND_MESSAGE)
    assert failed.attributes["error.type"] == "valkey.exceptions.ConnectionError"
    assert failed.status.status_code == StatusCode.ERROR
    assert seen.total("db.client.operation.duration", **{"error.type": "valkey.exceptions.ConnectionError"}) == 1


def test_a_write_that_timed_out_is_re_sent_with_the_next_one_as_a_retry(
    server: LocalValkey, client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    agent = make_agent(ValkeySessionManager("user-42", server.client(socket_timeout=0.3)), "assistant")
    agent("one")
    client.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # the next append waits past the client's timeout
    with capture() as seen, pytest.raises(SessionException, match="TimeoutError"):
        agent("two")
    client.execute_command("CLIENT", "UNPAUSE")
    (failed,) = named(seen, telemetry.APPEND_MESSAGE)
    assert failed.attributes["error.type"] == "valkey.exceptions.TimeoutError"
    with capture() as seen:
        agent("three")
    first = named(seen, telemetry.APPEND_MESSAGE)[0]
    assert first.attributes["strands_valkey.retries"] == 1
    assert first.attributes["strands_valkey.messages.written"] == 2
    assert seen.total("strands_valkey.retries") == 1
    assert client.zcard("session:user-42:agent:assistant:messages") == 5  # one, its reply, two (re-sent), three, reply


def test_lock_spans_and_a_refusal(client: valkey.Valkey, make_agent: Callable[..., Agent]) -> None:
    holder = make_agent(ValkeySessionManager("user-42", client, lock_timeout=0), "assistant")
    waiter_manager = ValkeySessionManager("user-42", client, lock_timeout=0)
    waiter = make_agent(waiter_manager, "assistant")

    async def clash() -> None:
        stream = holder.stream_async("hold the lock")
        await stream.__anext__()  # the holder's invocation runs, holding the lock
        try:
            with pytest.raises(SessionBusyError):
                await waiter.invoke_async("wait for it")
        finally:
            await stream.aclose()

    with capture() as seen:
        asyncio.run(clash())
    acquires = named(seen, telemetry.LOCK_ACQUIRE)
    refused = [span for span in acquires if span.status.status_code == StatusCode.ERROR]
    assert len(acquires) == 2 and len(refused) == 1
    assert refused[0].attributes["error.type"] == "strands_valkey_session_manager.lock.SessionBusyError"
    assert refused[0].attributes["strands_valkey.lock.attempts"] == 1
    assert all(span.attributes["gen_ai.agent.id"] == "assistant" for span in acquires)
    assert len(named(seen, telemetry.LOCK_RELEASE)) == 1
    assert seen.total("strands_valkey.lock.refusals") == 1
    assert seen.total("strands_valkey.lock.wait") == 2


def test_keep_alive_spans_are_children_of_the_invocation_they_keep(
    client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    manager = ValkeySessionManager("user-42", client, ttl=1)  # beats every 0.1 s
    agent = Agent(
        agent_id="slow", model=ScriptedModel(["done"], delay=0.45), session_manager=manager, callback_handler=None
    )
    with capture() as seen, trace.get_tracer("test").start_as_current_span("request"):
        agent("take your time")
    beats = named(seen, telemetry.KEEP_ALIVE)
    assert len(beats) >= 3  # beats, then the idle deadline set back at the end
    assert all(ancestors(span, seen.spans())[-1:] == ["request"] for span in beats)
    assert seen.total("strands_valkey.refreshes") == len(beats)


def test_storage_operations(make_storage: Callable[..., ValkeyStorage]) -> None:
    storage = make_storage(ttl=60)

    async def use() -> None:
        await storage.write(f"session/{SECRET_SESSION}/note", SECRET_TEXT.encode())
        assert await storage.read(f"session/{SECRET_SESSION}/note") == SECRET_TEXT.encode()
        assert await storage.list("session/") == [f"session/{SECRET_SESSION}/note"]
        assert [result.key for result in await storage.search("classified")] == [f"session/{SECRET_SESSION}/note"]
        await storage.delete(f"session/{SECRET_SESSION}/note")

    with capture() as seen:
        asyncio.run(use())
    names = [span.name for span in ours(seen)]
    assert names == ["storage.write", "storage.read", "storage.list", "storage.search", "storage.delete"]
    (write,) = named(seen, "storage.write")
    assert write.attributes["strands_valkey.bytes.written"] == len(SECRET_TEXT)
    assert write.attributes["strands_valkey.write.mode"] == "script"
    for span in ours(seen):
        assert span.attributes["db.system.name"] == "valkey"
        for text in everything_emitted(span):
            assert SECRET_SESSION not in text and SECRET_TEXT not in text


def test_spans_carry_the_clusters_node_and_database(cluster: LocalCluster, cluster_client: ValkeyCluster) -> None:
    with capture() as seen:
        agent = Agent(
            agent_id="assistant",
            model=ScriptedModel(["hi"]),
            session_manager=ValkeySessionManager(SECRET_SESSION, cluster_client),
            callback_handler=None,
        )
        agent("hello")
    node = cluster_client.get_default_node()
    appends = named(seen, telemetry.APPEND_MESSAGE)
    assert len(appends) == 2
    for span in ours(seen):
        assert (span.attributes["server.address"], span.attributes["server.port"]) == (node.host, node.port)
        assert span.attributes["db.namespace"] == "0"
        assert all(SECRET_SESSION not in text for text in everything_emitted(span))


# With no provider (a fresh process), no operation starts a span or records a measurement: it calls straight through.
NO_PROVIDER = """
import sys, valkey
from strands import Agent
from strands_valkey_session_manager import ValkeySessionManager, telemetry
from strands_valkey_session_manager.testing.model import ScriptedModel

def refuse(*args, **kwargs):
    raise AssertionError("telemetry ran with no provider")

telemetry.TRACER.start_span = refuse
telemetry.DURATION.record = refuse
manager = ValkeySessionManager("user-42", valkey.Valkey(port=int(sys.argv[1])), lock_timeout=5, ttl=1)
model = ScriptedModel(["hi"], delay=0.3)  # beats (ttl=1) and the lock (lock_timeout) run too
agent = Agent(agent_id="assistant", model=model, session_manager=manager, callback_handler=None)
agent("hello")
assert len(agent.messages) == 2 and not telemetry.live()
"""


def test_with_no_provider_operations_do_no_telemetry_at_all(server: LocalValkey, client: valkey.Valkey) -> None:
    done = subprocess.run([sys.executable, "-c", NO_PROVIDER, str(server.port)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_owners_listing_and_erasure_are_one_span_each_without_the_owner(
    client: valkey.Valkey, make_agent: Callable[..., Agent]
) -> None:
    make_agent(ValkeySessionManager(SECRET_SESSION, client, owner="alice-owner"))(SECRET_TEXT)
    directory = SessionDirectory(client)

    with capture() as seen:
        directory.list("alice-owner")
        directory.erase("alice-owner")

    listed, erased = [span for span in ours(seen) if span.name.startswith("sessions.")]
    assert (listed.name, erased.name) == ("sessions.list", "sessions.erase")
    assert erased.attributes["db.system.name"] == "valkey"
    for span in ours(seen):  # the deletes inside the erasure are its own: no spans of their own
        for text in everything_emitted(span):
            assert "alice-owner" not in text and SECRET_SESSION not in text and SECRET_TEXT not in text

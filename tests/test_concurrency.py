"""Consistency and concurrency (CONTRACT.md): shared sessions, rival writers, failed writes."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
import valkey
from helpers import wait_until
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def answers_ping(server: LocalValkey) -> bool:
    probe = server.client(socket_timeout=0.05)
    try:
        return bool(probe.ping())
    except valkey.TimeoutError:
        return False
    finally:
        probe.close()


def stored_texts(client: valkey.Valkey, session: str, agent_id: str) -> list[str]:
    manager = ValkeySessionManager(session_id=session, client=client)
    return [m.message["content"][0]["text"] for m in manager.list_messages(session, agent_id)]


def expected(agent_id: str, turns: int) -> list[str]:
    return [text for t in range(turns) for text in (f"{agent_id} q{t}", f"(scripted reply) You said: {agent_id} q{t}")]


def run_agent(port: int, session: str, agent_id: str, turns: int, barrier: object | None = None) -> None:
    from strands import Agent

    from strands_valkey_session_manager.testing.model import ScriptedModel

    if barrier is not None:
        barrier.wait(timeout=60)  # type: ignore[attr-defined]
    client = valkey.Valkey(port=port, decode_responses=True)
    agent = Agent(
        agent_id=agent_id,
        model=ScriptedModel(),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id=session, client=client),
    )
    for t in range(turns):
        agent(f"{agent_id} q{t}")


def run_together(kind: str, port: int, session: str, agents: int, turns: int) -> list[Any]:
    """Run one agent per thread or process, all released at once by a barrier; wait for them all."""
    if kind == "threads":
        barrier: Any = threading.Barrier(agents)
        worker: Any = threading.Thread
    else:
        context = multiprocessing.get_context("spawn")
        barrier, worker = context.Barrier(agents), context.Process
    workers = [worker(target=run_agent, args=(port, session, f"agent-{i}", turns, barrier)) for i in range(agents)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    return workers


@pytest.mark.parametrize(("kind", "agents", "turns"), [("threads", 8, 5), ("processes", 4, 3)])
def test_agents_share_one_brand_new_session_without_disturbing_each_other(
    server: LocalValkey, client: valkey.Valkey, kind: str, agents: int, turns: int
) -> None:
    workers = run_together(kind, server.port, "shared", agents, turns)

    assert [getattr(w, "exitcode", 0) for w in workers] == [0] * agents
    assert client.type("session:shared") == "string"
    for i in range(agents):
        assert stored_texts(client, "shared", f"agent-{i}") == expected(f"agent-{i}", turns)
    assert len(client.smembers("session:shared:index")) == agents


def test_a_session_created_between_read_and_create_is_joined_not_an_error(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="race", client=client), agent_id="first")("hello")

    class LateOpener(ValkeySessionManager):
        """Sees no session on its read, as if the other process had not created it yet."""

        def read_session(self, session_id: str, **kwargs: object):  # type: ignore[no-untyped-def]
            return None if self.store.opening else super().read_session(session_id)

    late = LateOpener(session_id="race", client=client)
    first = make_agent(late, agent_id="first")

    assert [m["content"][0]["text"] for m in first.messages][:1] == ["hello"]


def test_a_second_writer_on_the_same_agent_id_gets_a_clear_error(client: valkey.Valkey, make_agent) -> None:
    one = make_agent(ValkeySessionManager(session_id="s", client=client))
    two = make_agent(ValkeySessionManager(session_id="s", client=client))
    one("from one")

    with pytest.raises(SessionException, match=r"already holds a different message.*agent_id"):
        two("from two")

    assert stored_texts(client, "s", "assistant") == ["from one", "(scripted reply) You said: from one"]


def test_the_seed_as_written_without_agent_ids_raises_instead_of_mixing(client: valkey.Valkey, make_agent) -> None:
    researcher = make_agent(ValkeySessionManager(session_id="workflow-001", client=client), agent_id="default")
    writer = make_agent(ValkeySessionManager(session_id="workflow-001", client=client), agent_id="default")
    researcher("Research the key benefits of Valkey for AI workloads.")

    with pytest.raises(SessionException, match="agent_id"):
        writer("Write a short blog intro about Valkey for AI.")
    assert len(stored_texts(client, "workflow-001", "default")) == 2


def test_an_append_that_timed_out_but_landed_is_not_a_conflict_on_the_next_append(
    server: LocalValkey, client: valkey.Valkey, make_agent
) -> None:
    impatient = server.client(socket_timeout=0.2)
    manager = ValkeySessionManager(session_id="s", client=impatient)
    agent = make_agent(manager)
    agent("one")

    # Keep the server busy for 1 s: our write waits in its socket buffer, the client gives up after
    # 0.2 s, and then the server runs the write anyway. Only the reply is lost.
    busy = threading.Thread(target=server.client().execute_command, args=("DEBUG", "SLEEP", 1.5))
    busy.start()
    wait_until(lambda: not answers_ping(server), what="the server to be busy")
    with pytest.raises(SessionException, match="TimeoutError"):
        manager.append_message({"role": "user", "content": [{"text": "landed late"}]}, agent)
    busy.join()
    wait_until(lambda: client.exists("session:s:agent:assistant:message:2") == 1, what="the paused write to land")

    manager.append_message({"role": "user", "content": [{"text": "next"}]}, agent)

    texts = stored_texts(client, "s", "assistant")
    assert texts[2:] == ["landed late", "next"]
    assert client.zrange("session:s:agent:assistant:messages", 0, -1) == ["0", "1", "2", "3"]


@pytest.mark.sync_client_only  # it swaps in a synchronous client
def test_an_append_that_never_arrived_is_resent_so_ids_have_no_gap(
    server: LocalValkey, client: valkey.Valkey, make_agent
) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    agent = make_agent(manager)
    agent("one")

    manager.client = valkey.Valkey(port=1, socket_connect_timeout=0.5)  # nothing listens: the write is lost
    with pytest.raises(SessionException, match="ConnectionError"):
        manager.append_message({"role": "user", "content": [{"text": "lost"}]}, agent)
    manager.client = client

    manager.append_message({"role": "user", "content": [{"text": "next"}]}, agent)

    assert stored_texts(client, "s", "assistant")[2:] == ["lost", "next"]
    assert client.zrange("session:s:agent:assistant:messages", 0, -1) == ["0", "1", "2", "3"]


# -- without the session lock: what overlapping invocations of one agent leave (docs/locking.md) ---------


def test_without_the_lock_an_invocation_that_starts_after_anothers_prompt_continues_after_that_prompt(
    client: valkey.Valkey, make_agent
) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client))("earlier")
    first_in_model, first_may_answer = threading.Event(), threading.Event()

    def first_reply(messages: Any) -> str:  # the first invocation's model: slow, its prompt already stored
        first_in_model.set()
        first_may_answer.wait(30)
        return "answer A"

    first = make_agent(ValkeySessionManager(session_id="s", client=client), replies=first_reply)
    outcome: list[BaseException] = []

    def run_first() -> None:
        try:
            first("prompt A")
        except Exception as error:  # the SDK raises the refused write from its event loop
            outcome.append(error)

    worker = threading.Thread(target=run_first)
    worker.start()
    assert first_in_model.wait(30)
    second = make_agent(ValkeySessionManager(session_id="s", client=client), replies=["answer B"])  # restores prompt A
    second("prompt B")
    first_may_answer.set()
    worker.join(30)

    # The first invocation fails on its answer: its id now holds the second one's prompt.
    assert len(outcome) == 1 and isinstance(outcome[0].__cause__, SessionException)
    assert "already holds a different message" in str(outcome[0])
    # What is stored, and what the next invocation continues: two user messages in a row.
    expected_history = ["earlier", "(scripted reply) You said: earlier", "prompt A", "prompt B", "answer B"]
    assert stored_texts(client, "s", "assistant") == expected_history
    roles = [m["role"] for m in make_agent(ValkeySessionManager(session_id="s", client=client)).messages]
    assert roles == ["user", "assistant", "user", "user", "assistant"]


def test_the_seeds_agents_without_agent_id_run_one_after_the_other_share_one_conversation(
    client: valkey.Valkey, make_agent
) -> None:
    researcher = make_agent(ValkeySessionManager(session_id="workflow-001", client=client), agent_id="default")
    researcher("Research the key benefits of Valkey for AI workloads.")
    writer = make_agent(ValkeySessionManager(session_id="workflow-001", client=client), agent_id="default")

    writer("Write a short blog intro about Valkey for AI.")  # no error: it restored the researcher's turn

    texts = stored_texts(client, "workflow-001", "default")
    assert texts[0] == "Research the key benefits of Valkey for AI workloads." and len(texts) == 4
    assert [m["content"][0]["text"] for m in writer.messages] == texts
    assert set(client.smembers("session:workflow-001:index")) == {"agent:default"}

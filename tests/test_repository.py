"""Every SessionRepository method, side by side with FileSessionManager (the parity reference)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import valkey
from strands.session.file_session_manager import FileSessionManager
from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage, SessionType

from strands_valkey_session_manager import ValkeySessionManager

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


class FakeMultiAgent:
    """The two members of MultiAgentBase the repository uses."""

    def __init__(self, id: str, state: dict[str, Any]) -> None:
        self.id = id
        self.state = state

    def serialize_state(self) -> dict[str, Any]:
        return self.state


@pytest.fixture(params=["file", "valkey", "valkey-bytes"])
def repo(request: pytest.FixtureRequest, tmp_path, client: valkey.Valkey, raw_client: valkey.Valkey) -> Any:
    """The same repository calls against FileSessionManager and ValkeySessionManager (both client modes)."""
    if request.param == "file":
        return FileSessionManager(session_id="base", storage_dir=str(tmp_path))
    c = client if request.param == "valkey" else raw_client
    return ValkeySessionManager(session_id="base", client=c)


def message(i: int, text: str = "hi", role: str = "user") -> SessionMessage:
    return SessionMessage(message={"role": role, "content": [{"text": f"{text} {i}"}]}, message_id=i)


def seeded(repo: Any, n: int = 5) -> Any:
    repo.create_session(Session(session_id="s", session_type=SessionType.AGENT))
    repo.create_agent("s", SessionAgent(agent_id="a", state={"k": 1}, conversation_manager_state={}))
    for i in range(n):
        repo.create_message("s", "a", message(i))
    return repo


def test_create_session_returns_the_session_and_read_gives_it_back(repo: Any) -> None:
    session = Session(session_id="s", session_type=SessionType.AGENT)
    assert repo.create_session(session) is session
    assert repo.read_session("s") == session


def test_direct_create_of_an_existing_session_raises(repo: Any) -> None:
    repo.create_session(Session(session_id="s", session_type=SessionType.AGENT))
    with pytest.raises(SessionException, match="already exists"):
        repo.create_session(Session(session_id="s", session_type=SessionType.AGENT))


@pytest.mark.parametrize(
    "read",
    [
        lambda r: r.read_session("nope"),
        lambda r: r.read_agent("s", "nope"),
        lambda r: r.read_message("s", "a", 99),
        lambda r: r.read_multi_agent("s", "nope"),
    ],
    ids=["session", "agent", "message", "multi_agent"],
)
def test_reading_an_unknown_record_returns_none(repo: Any, read: Callable[[Any], Any]) -> None:
    seeded(repo)
    assert read(repo) is None


@pytest.mark.parametrize(
    "update",
    [
        lambda r: r.update_agent("s", SessionAgent(agent_id="nope", state={}, conversation_manager_state={})),
        lambda r: r.update_message("s", "a", message(99)),
        lambda r: r.update_multi_agent("s", FakeMultiAgent("nope", {})),
        lambda r: r.update_multi_agent("s", FakeMultiAgent("nope", "not a dict")),  # type: ignore[arg-type]
        lambda r: r.update_multi_agent("s", FakeMultiAgent("nope", {"not JSON": object()})),
        lambda r: r.delete_session("nope"),
        lambda r: r.list_messages("s", "nope"),
    ],
    ids=[
        "update_agent",
        "update_message",
        "update_multi_agent",
        "update_multi_agent-not-a-dict",
        "update_multi_agent-not-json",
        "delete_session",
        "list_messages",
    ],
)
def test_operations_on_unknown_records_raise_session_exception(repo: Any, update: Callable[[Any], Any]) -> None:
    seeded(repo)
    with pytest.raises(SessionException):
        update(repo)


def test_read_agent_returns_what_was_created(repo: Any) -> None:
    seeded(repo)
    agent = repo.read_agent("s", "a")
    assert (agent.agent_id, agent.state, agent.conversation_manager_state) == ("a", {"k": 1}, {})


def test_update_agent_keeps_created_at_and_stores_the_new_state(repo: Any) -> None:
    seeded(repo)
    created_at = repo.read_agent("s", "a").created_at
    update = SessionAgent(agent_id="a", state={"k": 2}, conversation_manager_state={"x": 1})
    repo.update_agent("s", update)
    stored = repo.read_agent("s", "a")
    assert stored.created_at == created_at == update.created_at
    assert (stored.state, stored.conversation_manager_state) == ({"k": 2}, {"x": 1})


def test_update_message_keeps_created_at_and_stores_the_redaction(repo: Any) -> None:
    seeded(repo)
    original = repo.read_message("s", "a", 2)
    redacted = message(2)
    redacted.redact_message = {"role": "user", "content": [{"text": "[redacted]"}]}
    repo.update_message("s", "a", redacted)
    stored = repo.read_message("s", "a", 2)
    assert stored.created_at == original.created_at
    assert stored.to_message() == {"role": "user", "content": [{"text": "[redacted]"}]}


@pytest.mark.parametrize(
    ("limit", "offset"),
    [(None, 0), (None, 3), (2, 0), (2, 1), (10, 0), (0, 0), (3, 4), (None, 9), (2, -3), (None, -2)],
)
def test_list_messages_pages_exactly_like_file_session_manager(
    repo: Any, tmp_path, limit: int | None, offset: int
) -> None:
    reference = seeded(FileSessionManager(session_id="ref", storage_dir=str(tmp_path / "ref")))
    seeded(repo)
    got = repo.list_messages("s", "a", limit=limit, offset=offset)
    want = reference.list_messages("s", "a", limit=limit, offset=offset)
    assert [m.to_dict() | {"created_at": 0, "updated_at": 0} for m in got] == [
        m.to_dict() | {"created_at": 0, "updated_at": 0} for m in want
    ]


def test_list_messages_orders_by_numeric_id_not_by_text(repo: Any) -> None:
    seeded(repo, n=0)
    for i in (10, 2, 1, 0, 9):
        repo.create_message("s", "a", message(i))
    assert [m.message_id for m in repo.list_messages("s", "a")] == [0, 1, 2, 9, 10]


def test_list_messages_of_a_created_agent_without_messages_is_empty(repo: Any) -> None:
    seeded(repo, n=0)
    assert repo.list_messages("s", "a") == []


def test_multi_agent_state_round_trips_and_updates(repo: Any) -> None:
    seeded(repo)
    repo.create_multi_agent("s", FakeMultiAgent("swarm", {"status": "running", "n": [1, 2]}))
    assert repo.read_multi_agent("s", "swarm") == {"status": "running", "n": [1, 2]}
    repo.update_multi_agent("s", FakeMultiAgent("swarm", {"status": "done"}))
    assert repo.read_multi_agent("s", "swarm") == {"status": "done"}


def test_a_multi_agent_state_that_cannot_be_stored_raises_type_error_and_changes_nothing(repo: Any) -> None:
    seeded(repo)
    repo.create_multi_agent("s", FakeMultiAgent("swarm", {"status": "running"}))
    with pytest.raises(TypeError):
        repo.update_multi_agent("s", FakeMultiAgent("swarm", {"not JSON": object()}))
    assert repo.read_multi_agent("s", "swarm") == {"status": "running"}


def test_bytes_in_a_message_round_trip(repo: Any) -> None:
    seeded(repo, n=0)
    png = bytes(range(256)) * 4
    image = SessionMessage(
        message={"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": png}}}]}, message_id=0
    )
    repo.create_message("s", "a", image)
    assert repo.read_message("s", "a", 0).message["content"][0]["image"]["source"]["bytes"] == png
    assert repo.list_messages("s", "a")[0].message == image.message


def test_delete_session_removes_the_session(repo: Any) -> None:
    seeded(repo)
    repo.delete_session("s")
    assert repo.read_session("s") is None
    assert repo.read_agent("s", "a") is None


def test_stored_values_are_the_records_to_dict_as_json(client: valkey.Valkey) -> None:
    repo = ValkeySessionManager(session_id="base", client=client)
    seeded(repo)
    repo.create_multi_agent("s", FakeMultiAgent("graph", {"status": "ok"}))
    assert json.loads(client.get("session:s")) == repo.read_session("s").to_dict()
    assert json.loads(client.get("session:s:agent:a")) == repo.read_agent("s", "a").to_dict()
    assert json.loads(client.get("session:s:agent:a:message:3")) == message(3).to_dict() | {
        k: json.loads(client.get("session:s:agent:a:message:3"))[k] for k in ("created_at", "updated_at")
    }
    assert json.loads(client.get("session:s:multi_agent:graph")) == {"status": "ok"}

"""Hostile input: any id or content either round-trips exactly or is refused before anything is written;
foreign values in a session's keys are named in a SessionException; no id reaches another session's keys.
"""

from __future__ import annotations

import logging
import string
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
import valkey
from _reliability import keyspace, open_agent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strands import Agent
from strands.multiagent import Swarm
from strands.types.exceptions import SessionException
from strands.types.session import SessionAgent, SessionMessage

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.keys import KeySchema
from strands_valkey_session_manager.testing.model import ScriptedModel

# Few examples, no deadline: each example talks to a real server, and CI time is shared.
modest = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that tend to break things, mixed into otherwise arbitrary text of every plane.
NASTY = list(":{}*?[]/\\\"' \t\n\r\x00\x07\x1b\x7f\x85\xa0\u200b\u2028\u202e\ufeff\ufffe\U0001f600\U0010ffff")
NASTY += ["\ud800", "\udfff"]
CHARS = st.one_of(st.characters(), st.characters(min_codepoint=0x10000), st.sampled_from(NASTY))
TEXT = st.text(CHARS, max_size=24) | st.just("__bytes_encoded__")


def team(client: valkey.Valkey | None = None, swarm_id: str = "team") -> Swarm:
    """A one-node Swarm, kept in session user-42 when given a client."""
    manager = ValkeySessionManager(session_id="user-42", client=client) if client is not None else None
    return Swarm(
        [Agent(name="node", model=ScriptedModel(), callback_handler=None)], id=swarm_id, session_manager=manager
    )


def refused_by_contract(value: str) -> bool:
    """The contract's rule for ids, restated: no ':', braces, glob characters and their escape, '/', whitespace,
    control or surrogate."""
    return not value or any(c in ":{}*?[]\\/" or c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in value)


# -- ids ----------------------------------------------------------------------------------------


@modest
@given(session_id=st.text(CHARS, max_size=12))
def test_any_session_id_round_trips_or_is_refused_before_anything_is_written(client, session_id: str) -> None:
    client.flushall()
    if refused_by_contract(session_id):
        with pytest.raises(ValueError, match="session_id=<"):
            open_agent(client, session_id, "assistant")
        assert keyspace(client) == {}
        return
    agent = open_agent(client, session_id, "assistant", ["hi back"])
    agent("hi")
    assert client.exists(f"session:{session_id}", f"session:{session_id}:agent:assistant:message:1") == 2
    assert open_agent(client, session_id, "assistant").messages == agent.messages


@modest
@given(agent_id=st.text(CHARS, min_size=1, max_size=12))
def test_any_agent_id_round_trips_or_is_refused_before_anything_is_written(client, agent_id: str) -> None:
    client.flushall()
    manager = ValkeySessionManager(session_id="user-42", client=client)
    before = keyspace(client)
    if refused_by_contract(agent_id) or "/" in agent_id:  # the SDK's Agent refuses path separators itself
        with pytest.raises(ValueError):
            Agent(agent_id=agent_id, model=ScriptedModel(), session_manager=manager, callback_handler=None)
        assert keyspace(client) == before
        return
    agent = open_agent(client, "user-42", agent_id, ["hi back"])
    agent("hi")
    assert client.exists(f"session:user-42:agent:{agent_id}:message:1")
    assert open_agent(client, "user-42", agent_id).messages == agent.messages


# -- message contents ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
TEXT_BLOCK = st.builds(lambda text: {"text": text}, TEXT)
BYTES_BLOCK = st.builds(lambda data: {"image": {"format": "png", "source": {"bytes": data}}}, st.binary(max_size=48))
TOOL_USE_BLOCK = st.builds(
    lambda tid, name, args: {"toolUse": {"toolUseId": tid, "name": name, "input": args}},
    TEXT,
    TEXT,
    st.dictionaries(TEXT, JSON, max_size=3),
)
TOOL_RESULT_BLOCK = st.builds(
    lambda tid, text, data: {
        "toolResult": {"toolUseId": tid, "status": "success", "content": [{"text": text}, {"json": data}]}
    },
    TEXT,
    TEXT,
    JSON,
)
ANY_BLOCK = TEXT_BLOCK | BYTES_BLOCK | TOOL_USE_BLOCK | TOOL_RESULT_BLOCK


def conversation(blocks: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Messages alternating from user, each with one to three of ``blocks``."""
    contents = st.lists(st.lists(blocks, min_size=1, max_size=3), min_size=1, max_size=4)
    return contents.map(
        lambda cs: [{"role": ("user", "assistant")[i % 2], "content": content} for i, content in enumerate(cs)]
    )


@modest
@given(messages=conversation(ANY_BLOCK))
def test_any_message_content_round_trips_exactly_through_list_messages(client, messages: list[dict[str, Any]]) -> None:
    client.flushall()
    manager = ValkeySessionManager(session_id="user-42", client=client)
    manager.create_agent("user-42", SessionAgent(agent_id="assistant", state={}, conversation_manager_state={}))
    for message_id, message in enumerate(messages):
        manager.create_message("user-42", "assistant", SessionMessage.from_message(message, message_id))

    listed = ValkeySessionManager(session_id="user-42", client=client).list_messages("user-42", "assistant")

    assert [m.to_message() for m in listed] == messages


@modest
@given(messages=conversation(TEXT_BLOCK | BYTES_BLOCK))
def test_any_conversation_an_agent_holds_is_restored_exactly(client, messages: list[dict[str, Any]]) -> None:
    client.flushall()
    agent = open_agent(client, "user-42", "assistant", messages=messages)

    restored = open_agent(client, "user-42", "assistant")

    assert restored.messages == agent.messages
    assert [m["content"] for m in restored.messages] == [m["content"] for m in messages]


def test_a_10_mb_message_round_trips_exactly(client) -> None:
    chunk = 'ascii é 中文 \U0001f600 \U0010ffff \x00\x1b \ud800 "quoted" \\ \n'
    huge = (chunk * (10_000_000 // len(chunk) + 1))[:10_000_000]
    agent = open_agent(client, "user-42", "assistant", ["got it"])

    agent(huge)

    assert open_agent(client, "user-42", "assistant").messages == agent.messages
    assert agent.messages[0]["content"][0]["text"] == huge


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"level": value}
    return value


@pytest.mark.parametrize("depth", [50, 200])
def test_deeply_nested_content_round_trips_exactly(client, depth: int) -> None:
    agent = open_agent(client, "user-42", "assistant", [{"tool": "inspect", "input": {"tree": nested(depth)}}, "done"])
    agent("go deep")

    restored = open_agent(client, "user-42", "assistant")

    assert restored.messages == agent.messages
    assert restored.messages[1]["content"][0]["toolUse"]["input"] == {"tree": nested(depth)}


def test_content_nested_too_deeply_to_encode_is_refused_before_anything_is_written(client) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    manager.create_agent("user-42", SessionAgent(agent_id="assistant", state={}, conversation_manager_state={}))
    message = {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "t", "status": "success", "content": [{"json": nested(10_000)}]}}],
    }
    before = keyspace(client)

    with pytest.raises(ValueError, match="nested too deeply"):
        manager.create_message("user-42", "assistant", SessionMessage.from_message(message, 0))

    assert keyspace(client) == before


def test_agent_holding_content_nested_too_deeply_gets_a_value_error_and_keeps_what_came_before(client) -> None:
    deep = {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "t", "status": "success", "content": [{"json": nested(10_000)}]}}],
    }
    history = [{"role": "user", "content": [{"text": "hi"}]}, {"role": "assistant", "content": [{"text": "hello"}]}]

    with pytest.raises(ValueError, match="nested too deeply"):
        open_agent(client, "user-42", "assistant", messages=[*history, deep])

    assert client.zrange("session:user-42:agent:assistant:messages", 0, -1) == ["0", "1"]
    assert not client.exists("session:user-42:agent:assistant:message:2")
    assert [m["content"] for m in open_agent(client, "user-42", "assistant").messages] == [
        m["content"] for m in history
    ]


# -- foreign values in a session's keys ---------------------------------------------------------

BAD_JSON = '{"created_at": "2025-01-01", oops'
JSON_ARRAY = "[1, 2, 3]"
WRONG_SHAPE = '{"unexpected": true}'


def plant(client: valkey.Valkey, key: str, value: str) -> None:
    """Replace ``key`` with a foreign value: a string, or ``list``/``string`` for a value of another type."""
    client.delete(key)
    if value == "list":
        client.rpush(key, "foreign")
    elif value == "string":
        client.set(key, "foreign")
    elif value == "zset member":
        client.zadd(key, {"not-a-number": 1})
    else:
        client.set(key, value)


@pytest.fixture
def stocked(client) -> Callable[[str, str], ValkeySessionManager]:
    """Return ``plant_and_open(key, value)``: a session with an agent, two messages and a Swarm, then the plant."""

    def plant_and_open(key: str, value: str) -> ValkeySessionManager:
        open_agent(client, "user-42", "assistant", ["hello"])("hi")
        team(client)
        manager = ValkeySessionManager(session_id="user-42", client=client)
        plant(client, key, value)
        return manager

    return plant_and_open


AGENT = SessionAgent(agent_id="assistant", state={}, conversation_manager_state={})
MESSAGE_1 = SessionMessage({"role": "assistant", "content": [{"text": "replaced"}]}, 1)
OPERATIONS: dict[str, Callable[[ValkeySessionManager, valkey.Valkey], Any]] = {
    "read session": lambda m, c: m.read_session("user-42"),
    "open session": lambda m, c: ValkeySessionManager(session_id="user-42", client=c),
    "read agent": lambda m, c: m.read_agent("user-42", "assistant"),
    "restore agent": lambda m, c: open_agent(c, "user-42", "assistant"),
    "create agent": lambda m, c: m.create_agent("user-42", AGENT),
    "create another agent": lambda m, c: m.create_agent("user-42", SessionAgent("other", {}, {})),
    "update agent": lambda m, c: m.update_agent("user-42", AGENT),
    "read message": lambda m, c: m.read_message("user-42", "assistant", 1),
    "list messages": lambda m, c: m.list_messages("user-42", "assistant"),
    "append message": lambda m, c: m.create_message("user-42", "assistant", SessionMessage(MESSAGE_1.message, 2)),
    "append at its id": lambda m, c: m.create_message("user-42", "assistant", MESSAGE_1),
    "update message": lambda m, c: m.update_message("user-42", "assistant", MESSAGE_1),
    "read multi-agent": lambda m, c: m.read_multi_agent("user-42", "team"),
    "restore multi-agent": lambda m, c: team(c),
    "create multi-agent": lambda m, c: m.create_multi_agent("user-42", team()),
    "update multi-agent": lambda m, c: m.update_multi_agent("user-42", team()),
    "delete session": lambda m, c: m.delete_session("user-42"),
}
S = "session:user-42"
# (key, foreign value, the operations that must refuse it with a SessionException naming the key)
CASES = [
    *[(S, value, ["read session", "open session", "restore agent"]) for value in (BAD_JSON, JSON_ARRAY, WRONG_SHAPE)],
    (S, "list", ["read session", "open session", "restore agent"]),
    *[
        (f"{S}:index", value, ["create another agent", "append message", "create multi-agent", "delete session"])
        for value in ("string", "list")
    ],
    *[
        (f"{S}:agent:assistant", value, ["read agent", "restore agent", "update agent"])
        for value in (BAD_JSON, JSON_ARRAY, WRONG_SHAPE)
    ],
    (f"{S}:agent:assistant", "list", ["read agent", "restore agent", "update agent", "create agent"]),
    *[
        (f"{S}:agent:assistant:messages", value, ["list messages", "restore agent", "append message", "delete session"])
        for value in ("string", "list")
    ],
    (f"{S}:agent:assistant:messages", "zset member", ["list messages", "restore agent"]),
    *[
        (
            f"{S}:agent:assistant:message:1",
            value,
            ["read message", "list messages", "restore agent", "append at its id", "update message"],
        )
        for value in (BAD_JSON, JSON_ARRAY, WRONG_SHAPE)
    ],
    (f"{S}:agent:assistant:message:1", "list", ["read message", "append at its id", "update message"]),
    *[
        (f"{S}:multi_agent:team", value, ["read multi-agent", "restore multi-agent", "update multi-agent"])
        for value in (BAD_JSON, JSON_ARRAY)
    ],
    (
        f"{S}:multi_agent:team",
        "list",
        ["read multi-agent", "restore multi-agent", "update multi-agent", "create multi-agent"],
    ),
]


LABELS = {BAD_JSON: "bad-json", JSON_ARRAY: "json-array", WRONG_SHAPE: "json-of-wrong-shape"}


@pytest.mark.parametrize(
    "key, value, operation",
    [
        pytest.param(key, value, operation, id=f"{key.removeprefix(S) or ':'}-{LABELS.get(value, value)}-{operation}")
        for key, value, operations in CASES
        for operation in operations
    ],
)
def test_foreign_value_is_named_in_a_session_exception_and_nothing_else_changes(
    stocked, client, key: str, value: str, operation: str
) -> None:
    manager = stocked(key, value)
    before = keyspace(client)

    with pytest.raises(SessionException) as failure:
        OPERATIONS[operation](manager, client)

    assert key in str(failure.value)
    assert keyspace(client) == before  # the foreign value and every other key, byte for byte


def test_message_of_another_type_is_skipped_with_a_warning_naming_it(stocked, client, caplog) -> None:
    stocked(f"{S}:agent:assistant:message:1", "list")

    with caplog.at_level(logging.WARNING):
        messages = open_agent(client, "user-42", "assistant").messages

    assert [m["content"][0]["text"] for m in messages] == ["hi"]
    assert any("message_ids=<[1]>" in record.getMessage() for record in caplog.records)


def test_foreign_members_of_the_index_never_lead_outside_the_session(stocked, client) -> None:
    client.set("session:user-420", "a neighbour")
    client.set("elsewhere", "unrelated")
    manager = stocked(f"{S}:index", "list")
    client.delete(f"{S}:index")
    client.sadd(f"{S}:index", "agent:assistant", "../../elsewhere", "*", "}{", "agent:ghost")

    manager.delete_session("user-42")

    assert client.get("session:user-420") == "a neighbour" and client.get("elsewhere") == "unrelated"


# -- ids crafted to reach another session's keys ------------------------------------------------

CRAFTED = [
    "user-42:agent:assistant",  # a separator: would name user-42's agent
    "user-4*",
    "user-4?",
    "user-4[2]",
    "user-[0-9]*",  # glob characters
    "{user-42}",
    "user-42}",
    "{user-42",  # hash-tag braces
    "user-42 ",
    "user-42\t",
    "user-42\n",
    "user-42\x00",
    "user-42\u2028",  # whitespace and control characters
    "user-42\ud800",  # a lone surrogate: no UTF-8 key can hold it
]


@pytest.fixture
def neighbour(client) -> dict[Any, bytes]:
    """Session user-42 with an agent and a Swarm, snapshotted; returns the snapshot (compare it after)."""
    open_agent(client, "user-42", "assistant", ["hello"])("hi")
    team(client)
    return keyspace(client)


@pytest.mark.parametrize("crafted", CRAFTED, ids=repr)
def test_crafted_session_id_is_refused_and_the_neighbour_untouched(client, neighbour, crafted: str) -> None:
    manager = ValkeySessionManager(session_id="user-4", client=client)
    before = keyspace(client)
    attempts = [
        lambda: ValkeySessionManager(session_id=crafted, client=client),
        lambda: manager.delete_session(crafted),
        lambda: manager.read_agent(crafted, "assistant"),
        lambda: manager.list_messages(crafted, "assistant"),
        lambda: manager.create_message(crafted, "assistant", MESSAGE_1),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="session_id=<"):  # our clear refusal, not an encoding error
            attempt()

    assert keyspace(client) == before


@pytest.mark.parametrize("crafted", ["assistant:message:0", "assistant*", "assist?nt", "{assistant}", "assistant\x00"])
def test_crafted_agent_id_is_refused_and_the_other_agent_untouched(client, neighbour, crafted: str) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    for attempt in [
        lambda: open_agent(client, "user-42", crafted),
        lambda: manager.list_messages("user-42", crafted),
        lambda: manager.create_message("user-42", crafted, MESSAGE_1),
        lambda: manager.read_multi_agent("user-42", crafted),
    ]:
        with pytest.raises(ValueError):
            attempt()

    assert keyspace(client) == neighbour


def test_prefix_neighbour_session_is_never_touched(client, neighbour) -> None:
    for session_id in ("user-4", "user-420", "user-42-", "user-42\u00a8", "user-42\uff1a"):  # ¨ and a fullwidth colon
        agent = open_agent(client, session_id, "assistant", ["x"])
        agent("hello")
        assert open_agent(client, session_id, "assistant").messages == agent.messages
        ValkeySessionManager(session_id=session_id, client=client).delete_session(session_id)

    assert keyspace(client) == neighbour


def test_ids_that_spell_bookkeeping_keys_stay_in_their_own_place(client, neighbour) -> None:
    # An agent, a Swarm and a message id can never produce the index, the id set or each other's keys.
    for agent_id in ("index", "messages", "message", "multi_agent", "agent"):
        agent = open_agent(client, "user-42", agent_id, ["x"])
        agent("hello")
        assert open_agent(client, "user-42", agent_id).messages == agent.messages
    team(client, "assistant")

    after = keyspace(client)
    assert {key: after[key] for key in neighbour if key != f"{S}:index"} == {
        key: value for key, value in neighbour.items() if key != f"{S}:index"
    }


@pytest.mark.parametrize("crafted", ["x}", "{x", "x*", "x:y"])
def test_crafted_id_cannot_escape_the_cluster_hash_tag(crafted: str) -> None:
    with pytest.raises(ValueError):
        KeySchema(cluster=True).session(crafted)
    assert KeySchema(cluster=True).session("x") == "session:{x}"


def test_every_printable_ascii_id_character_is_either_refused_or_harmless(client, neighbour) -> None:
    allowed = [c for c in string.printable if not refused_by_contract(c)]
    assert "".join(sorted(set(string.printable) - set(allowed))) == "".join(sorted(":{}*?[]\\/" + string.whitespace))
    session_id = "user-42" + "".join(allowed)
    agent = open_agent(client, session_id, "assistant", ["x"])
    agent("hello")
    ValkeySessionManager(session_id=session_id, client=client).delete_session(session_id)

    assert keyspace(client) == neighbour

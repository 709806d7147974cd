"""Key layout and id validation (CONTRACT.md, Key layout). Pure key building needs no server."""

from __future__ import annotations

import pytest
import valkey

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.keys import KeySchema

BAD_IDS = [
    "",
    "a:b",
    "a{b",
    "a}b",
    "a*",
    "a?",
    "a[b",
    "a]b",
    "a b",
    "a\tb",
    "a\u3000b",
    "a\x00b",
    "a\x7fb",
    "a\nb",
    "a\\b",
    "a/b",
]


def test_standalone_layout_matches_the_contract() -> None:
    keys = KeySchema()
    assert keys.session("user-42") == "session:user-42"
    assert keys.agent("user-42", "writer") == "session:user-42:agent:writer"
    assert keys.message("user-42", "writer", 7) == "session:user-42:agent:writer:message:7"
    assert keys.multi_agent("user-42", "swarm") == "session:user-42:multi_agent:swarm"


def test_bookkeeping_keys_start_with_the_session_key_and_a_colon() -> None:
    keys = KeySchema()
    assert keys.index("user-42").startswith("session:user-42:")
    assert keys.messages("user-42", "writer").startswith("session:user-42:")


def test_cluster_layout_wraps_the_session_id_in_a_hash_tag() -> None:
    keys = KeySchema(cluster=True)
    assert keys.session("user-42") == "session:{user-42}"
    assert keys.message("user-42", "writer", 0) == "session:{user-42}:agent:writer:message:0"
    assert keys.index("user-42") == "session:{user-42}:index"


def test_key_prefix_replaces_session() -> None:
    assert KeySchema(prefix="tenant-a:session").agent("s", "a") == "tenant-a:session:s:agent:a"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_session_id_is_rejected_before_anything_is_written(client: valkey.Valkey, bad: str) -> None:
    with pytest.raises(ValueError, match="session_id"):
        ValkeySessionManager(session_id=bad, client=client)
    assert client.dbsize() == 0


@pytest.mark.parametrize("bad", BAD_IDS[1:])  # Agent(agent_id="") falls back to "default"
def test_bad_agent_id_is_rejected_before_anything_is_written(client: valkey.Valkey, make_agent, bad: str) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    before = sorted(client.keys("*"))
    with pytest.raises(ValueError, match="agent_id"):
        make_agent(manager, agent_id=bad)
    assert sorted(client.keys("*")) == before


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_non_string_ids_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        KeySchema().session(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1", 1.0, True])
def test_message_id_must_be_an_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="message_id"):
        KeySchema().message("s", "a", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a{", "a*", "a b", "ten\\ant"])
def test_bad_key_prefix_is_rejected(client: valkey.Valkey, bad: str) -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        ValkeySessionManager(session_id="s", client=client, key_prefix=bad)
    assert client.dbsize() == 0


def test_unicode_ids_are_allowed(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="sessão-ü-🦜", client=client), agent_id="агент")("hi")
    assert client.exists("session:sessão-ü-🦜:agent:агент:message:1")


@pytest.mark.parametrize("cluster", [False, True])
def test_every_key_built_reads_back_to_its_session_and_member(cluster: bool) -> None:
    keys = KeySchema("tenant-a:session", cluster=cluster)
    built = {
        keys.session("s-1"): ("session", "", None),
        keys.index("s-1"): ("index", "", None),
        keys.agent("s-1", "a-1"): ("agent", "a-1", None),
        keys.messages("s-1", "a-1"): ("messages", "a-1", None),
        keys.message("s-1", "a-1", 12): ("message", "a-1", 12),
        keys.multi_agent("s-1", "swarm"): ("multi_agent", "swarm", None),
        keys.lock("s-1", keys.agent_suffix("a-1")): ("lock", "a-1", None),
    }
    for key, (kind, member_id, message_id) in built.items():
        parsed = keys.parse(key)
        assert parsed is not None, key
        assert (parsed.session_id, parsed.kind, parsed.member_id, parsed.message_id) == (
            "s-1",
            kind,
            member_id,
            message_id,
        )


@pytest.mark.parametrize(
    "key",
    [
        "other:s-1",
        "session:",
        "session:s-1:agent:",
        "session:s-1:agent:a:message:x",
        "session:s-1:unknown:a",
        "session:a*b",
        "session:s-1:agent:a:b",
    ],
)
def test_a_key_outside_the_layout_reads_back_as_none(key: str) -> None:
    assert KeySchema().parse(key) is None


def test_a_standalone_key_is_not_read_as_a_cluster_key() -> None:
    assert KeySchema(cluster=True).parse("session:s-1") is None
    assert KeySchema(cluster=True).session_pattern("user-*") == "session:{user-*}"

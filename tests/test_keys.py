"""Key layout and id validation (CONTRACT.md, Key layout). Pure key building needs no server."""

from __future__ import annotations

import pytest
import valkey

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.keys import KeySchema

BAD_IDS = ["", "a:b", "a{b", "a}b", "a*", "a?", "a[b", "a]b", "a b", "a\tb", "a\u3000b", "a\x00b", "a\x7fb", "a\nb"]


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


@pytest.mark.parametrize("bad", ["", "a{", "a*", "a b"])
def test_bad_key_prefix_is_rejected(client: valkey.Valkey, bad: str) -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        ValkeySessionManager(session_id="s", client=client, key_prefix=bad)
    assert client.dbsize() == 0


def test_unicode_ids_are_allowed(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="sessão-ü-🦜", client=client), agent_id="агент")("hi")
    assert client.exists("session:sessão-ü-🦜:agent:агент:message:1")

"""The codec's fast paths give exactly what the SDK's own (slower) to_dict()/from_dict() give."""

from __future__ import annotations

import json

import pytest
import valkey
from hypothesis import given, settings
from hypothesis import strategies as st
from strands.types.exceptions import SessionException
from strands.types.session import SessionMessage

from strands_valkey_session_manager import ValkeySessionManager, codec

# JSON-like values as messages hold them, bytes included (images, documents); no NaN (NaN != NaN).
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
)
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant"]),
        "content": st.lists(st.dictionaries(st.text(), values), max_size=3),
    }
)

VARIED = [
    {"role": "user", "content": [{"text": "hello"}]},
    {"role": "assistant", "content": [{"text": "ünïcödé ✓ 🚀 中文"}], "metadata": {"usage": {"inputTokens": 3}}},
    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "search", "input": {"q": [1, 2.5]}}}]},
    {
        "role": "user",
        "content": [
            {
                "toolResult": {
                    "toolUseId": "t1",
                    "status": "success",
                    "content": [{"image": {"format": "png", "source": {"bytes": b"\x89PNG\r\n\x1a\n\x00\xff"}}}],
                }
            }
        ],
    },
    {"role": "user", "content": [{"document": {"format": "txt", "name": "d", "source": {"bytes": b""}}}]},
    {"role": "user", "content": [{"text": "lone surrogate \ud800 here"}]},
]


def record(message: dict, message_id: int = 7, redact: dict | None = None) -> SessionMessage:
    session_message = SessionMessage.from_message(message, message_id)  # type: ignore[arg-type]
    session_message.redact_message = redact  # type: ignore[assignment]
    return session_message


@pytest.mark.parametrize("message", VARIED)
def test_encode_writes_the_same_json_as_the_sdks_to_dict(message: dict) -> None:
    session_message = record(message, redact={"role": "user", "content": [{"text": "[redacted]"}]})

    assert codec.encode(session_message) == codec.dumps(session_message.to_dict())


@pytest.mark.parametrize("message", VARIED)
@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_load_record_builds_what_the_sdks_from_dict_builds(message: dict, as_text: bool) -> None:
    raw = codec.dumps(record(message).to_dict())
    stored = raw.decode("utf-8") if as_text else raw

    loaded = codec.load_record(SessionMessage, stored, "key")

    assert loaded == SessionMessage.from_dict(json.loads(raw))


@settings(max_examples=150, deadline=None)
@given(message=messages, message_id=st.integers(min_value=0, max_value=10**6))
def test_fast_paths_match_the_sdk_on_generated_messages(message: dict, message_id: int) -> None:
    session_message = record(message, message_id)
    raw = codec.dumps(session_message.to_dict())

    assert codec.encode(session_message) == raw
    assert codec.load_record(SessionMessage, raw, "key") == SessionMessage.from_dict(json.loads(raw))


def test_load_record_drops_fields_the_sdk_does_not_know_as_from_dict_does() -> None:
    data = record(VARIED[0]).to_dict() | {"written_by": "a newer version"}
    raw = json.dumps(data)

    assert codec.load_record(SessionMessage, raw, "key") == SessionMessage.from_dict(json.loads(raw))


@pytest.mark.parametrize("raw", [b' {"a": 1} ', "\n{}\t", b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16")])
def test_loads_accepts_what_json_loads_accepts(raw: bytes | str) -> None:
    assert codec.loads(raw, "key") == json.loads(raw)


@pytest.mark.parametrize("raw", [b'{"a": 1} x', b"{", b"", b"\xff{}", "[1]", b"null"])
def test_loads_refuses_what_is_not_one_json_object_naming_the_key(raw: bytes | str) -> None:
    with pytest.raises(SessionException, match="key=<the-key>"):
        codec.loads(raw, "the-key")


def test_list_messages_returns_what_from_dict_gives_for_every_stored_value(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(session_id="parity", client=client)
    for message_id, message in enumerate(VARIED):
        manager.create_message("parity", "agent", record(message, message_id))

    listed = manager.list_messages("parity", "agent")

    stored = [client.get(f"session:parity:agent:agent:message:{index}") for index in range(len(VARIED))]
    assert listed == [SessionMessage.from_dict(json.loads(value)) for value in stored]


ODD_MESSAGES = [
    b' {"message": {"role": "user", "content": []}, "message_id": 1, "created_at": "x", "updated_at": "x"} ',
    b'{"message": {"role": "user", "content": []}, "message_id": 2, "created_at": "x", "updated_at": "x", "new": 1}',
    '{"message":{"role":"user","content":[]},"message_id":3,"created_at":"x","updated_at":"x"}'.encode("utf-16"),
]
BAD_MESSAGES = [b'{"message": {"role": "user"}, "message_id": 4}', b"[1]", b"\xff{}", b'{"a": 1} x', b""]


def test_load_messages_builds_what_load_record_builds_and_refuses_what_it_refuses() -> None:
    plain = [codec.dumps(record(message, number).to_dict()) for number, message in enumerate(VARIED)]
    found = [(f"key-{number}", raw) for number, raw in enumerate(plain + ODD_MESSAGES)]

    keys, raws = [key for key, _ in found], [raw for _, raw in found]
    assert codec.load_messages(keys, raws) == [codec.load_record(SessionMessage, raw, key) for key, raw in found]
    for bad in BAD_MESSAGES:
        with pytest.raises(SessionException, match="key=<the-bad-one>") as raised:
            codec.load_messages([*keys, "the-bad-one"], [*raws, bad])
        with pytest.raises(SessionException) as expected:
            codec.load_record(SessionMessage, bad, "the-bad-one")
        assert str(raised.value) == str(expected.value)

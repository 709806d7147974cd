"""``strands-valkey delete``, ``expire`` and ``persist``: every key of a session, atomically, nothing else."""

from __future__ import annotations

import pytest
from helpers import CommandCounter, add_messages

from strands_valkey_session_manager import ValkeySessionManager


def _ttls(client, session_id: str) -> list[int]:
    return [client.ttl(key) for key in [*client.keys(f"session:{session_id}"), *client.keys(f"session:{session_id}:*")]]


def test_delete_asks_and_deletes_when_confirmed(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))

    result = cli("delete", "user-42", input="y\n")

    assert result.exit_code == 0, result.stderr
    assert "Delete session user-42 and all its keys?" in result.stderr
    assert "deleted session user-42 (10 keys)" in result.stdout
    assert client.keys("*") == []


def test_delete_not_confirmed_deletes_nothing(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))

    result = cli("delete", "user-42", input="n\n")

    assert result.exit_code == 4
    assert len(client.keys("session:user-42*")) == 10


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_delete_yes_removes_every_key_of_each_session_and_no_other(cli, seed, client) -> None:
    for session_id in ("user-4", "user-42", "user-420"):
        seed(session_id, agents=("solo",))

    with CommandCounter(client) as counter:
        result = cli("delete", "user-4", "user-420", "--yes")

    assert result.exit_code == 0
    assert {key.split(":")[1] for key in client.keys("*")} == {"user-42"}
    assert len(client.keys("session:user-42*")) == 10
    assert counter.calls("scan", "keys") == 0


def test_delete_of_an_unknown_session_exits_1_after_deleting_the_others(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))

    result = cli("delete", "nobody", "user-42", "--yes")

    assert result.exit_code == 1
    assert "no session nobody" in result.stderr
    assert client.keys("*") == []


def test_expire_gives_every_key_of_the_session_the_same_new_ttl(cli, seed, client) -> None:
    seed("user-42")
    seed("user-420", agents=("solo",))

    result = cli("expire", "user-42", "120")

    assert result.exit_code == 0, result.stderr
    assert "its 18 keys now expire in 120s" in result.stdout
    ttls = _ttls(client, "user-42")
    assert len(ttls) == 18 and all(118 <= ttl <= 120 for ttl in ttls)
    assert all(ttl > 3500 for ttl in _ttls(client, "user-420"))


def test_expire_gives_every_key_one_deadline_however_many_keys_it_moves(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))
    add_messages(client, 3000, "user-42", "solo")  # several milliseconds of the server's time to move

    assert cli("expire", "user-42", "120").exit_code == 0

    keys = [*client.keys("session:user-42"), *client.keys("session:user-42:*")]
    assert len(keys) == 3010 and len({client.pexpiretime(key) for key in keys}) == 1


def test_persist_removes_the_expiry_of_every_key_of_the_session(cli, seed, client) -> None:
    seed("user-42")

    result = cli("persist", "user-42")

    assert result.exit_code == 0, result.stderr
    assert _ttls(client, "user-42") == [-1] * 18


def test_expire_and_persist_of_an_unknown_session_exit_1_and_create_nothing(cli, client) -> None:
    assert cli("expire", "nobody", "60").exit_code == 1
    assert cli("persist", "nobody").exit_code == 1
    assert client.keys("*") == []


def test_a_session_of_one_key_is_counted_in_the_singular(cli, client) -> None:
    ValkeySessionManager("lonely", client)  # no agents: the session record is its one key

    expired = cli("expire", "lonely", "60")
    deleted = cli("delete", "lonely", "--yes")

    assert "session lonely: its 1 key now expire in 60s" in expired.stdout
    assert "deleted session lonely (1 key)" in deleted.stdout

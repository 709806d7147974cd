"""Expiry (CONTRACT.md, Expiry): one deadline per session, sliding, amortised, co-expiring."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import valkey
from helpers import CommandCounter, add_messages, wait_until

from strands_valkey_session_manager import ValkeySessionManager

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def deadlines(client: valkey.Valkey, session: str = "s") -> dict[str, int]:
    keys = client.keys(f"session:{session}") + client.keys(f"session:{session}:*")
    return {key: client.pexpiretime(key) for key in keys}


def move_deadline(client: valkey.Valkey, seconds_from_now: float, session: str = "s", now=time.time) -> int:
    """Put every key of the session on a new common deadline, as if time had passed."""
    at = int((now() + seconds_from_now) * 1000)
    for key in deadlines(client, session):
        client.pexpireat(key, at)
    return at


def test_every_key_gets_the_default_ttl_of_an_hour(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client))("hi")
    ttls = [client.ttl(key) for key in deadlines(client)]
    assert len(ttls) == 6 and all(3590 <= ttl <= 3600 for ttl in ttls)


def test_ttl_none_sets_no_expiry_on_any_key(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=None))("hi")
    assert set(deadlines(client).values()) == {-1}


def test_ttl_accepts_a_timedelta(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=timedelta(minutes=5)))("hi")
    assert all(290 <= client.ttl(key) <= 300 for key in deadlines(client))


#: ttls refused: not positive, not finite, beyond the documented maximum (10 years), not a number, a bool.
BAD_TTLS = [0, -1, float("inf"), float("nan"), 10**30, timedelta.max, timedelta(0), "60", True]


@pytest.mark.parametrize("bad", BAD_TTLS, ids=repr)
def test_a_bad_ttl_is_rejected_naming_the_range_before_anything_is_written(client: valkey.Valkey, bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"^ttl=<.*> \| must be a positive number of seconds up to 315360000 \(10 years\)"
    ):
        ValkeySessionManager(session_id="s", client=client, ttl=bad)  # type: ignore[arg-type]
    assert client.dbsize() == 0


def test_the_longest_ttl_is_ten_years(client: valkey.Valkey) -> None:
    ValkeySessionManager(session_id="s", client=client, ttl=timedelta(days=3650))
    assert 0.99 * 315_360_000 < client.ttl("session:s") <= 315_360_000


def test_all_keys_of_a_session_share_one_deadline(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    for turn in range(3):
        agent(f"turn {turn}")
    assert len(set(deadlines(client).values())) == 1


def test_a_key_written_later_takes_the_sessions_remaining_life(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    agent("one")
    at = move_deadline(client, 95)  # still above 90% of ttl: no refresh due

    agent("two")

    assert set(deadlines(client).values()) == {at}
    assert client.exists("session:s:agent:assistant:message:3")


def test_a_write_finds_the_deadline_another_process_moved_and_takes_it(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    agent("one")
    at = move_deadline(client, 99.5)  # another process's refresh: later than the one this manager knows

    with CommandCounter(client) as counter:
        agent("two")

    assert set(deadlines(client).values()) == {at}
    assert counter.calls("multi") == 2 and counter.calls("fcall") == 1  # the first append settles, once


def test_a_due_refresh_is_judged_by_the_servers_clock_not_this_hosts(
    client: valkey.Valkey, make_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 60)  # this host's clock a minute behind the server's
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    agent("one")
    move_deadline(client, 50, now=real)  # due by the server's clock; 110 s left by this host's

    agent("two")

    assert all(client.pttl(key) >= 90_000 for key in deadlines(client))


def test_a_write_slides_every_key_once_the_deadline_is_due(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    agent("one")
    move_deadline(client, 50)  # below 90% of ttl: due

    agent("two")

    ttls = {key: client.pttl(key) for key in deadlines(client)}
    assert len(ttls) == 8
    assert all(ttl >= 90_000 for ttl in ttls.values()), ttls
    assert len(set(deadlines(client).values())) == 1


def test_a_refresh_gives_every_key_one_deadline_however_many_keys_it_moves(client: valkey.Valkey, make_agent) -> None:
    # 3,000 keys take the server several milliseconds to move: a deadline taken relative to a clock read per key
    # (Redis OSS 7.0 does so for PEXPIRE inside a script) would differ between them.
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    agent("one")
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100), agent_id="other")("one")
    add_messages(client, 3000, "s", "other")
    move_deadline(client, 50)

    agent("two")

    assert client.pttl("session:s") >= 90_000
    assert len(set(deadlines(client).values())) == 1


def test_restoring_an_agent_slides_every_key_once_the_deadline_is_due(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))("one")
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100), agent_id="other")("one")
    move_deadline(client, 50)

    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))

    assert all(client.pttl(key) >= 90_000 for key in deadlines(client))


def test_refresh_is_amortised_writes_do_not_touch_old_keys_until_due(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=100))
    for turn in range(10):
        agent(f"turn {turn}")

    with CommandCounter(client) as counter:
        agent("one more")

    assert counter.calls("pexpireat", "pexpire") <= 4  # the two new messages, their id set and the index
    move_deadline(client, 50)
    with CommandCounter(client) as due:
        agent("and another")
    assert due.calls("pexpireat", "pexpire") >= 20  # now due: every key of the session, once


def test_an_idle_session_expires_entirely_and_restores_as_new(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=1))
    agent("hello")
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=1), agent_id="other")("hello")

    wait_until(lambda: client.dbsize() == 0, timeout=15, what="every key of the session to expire")

    restored = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=1))
    assert restored.messages == []


def test_writing_to_an_expired_session_raises_rather_than_leaving_orphans(client: valkey.Valkey, make_agent) -> None:
    from strands.types.exceptions import SessionException

    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=1))
    agent("hello")
    wait_until(lambda: client.dbsize() == 0, timeout=15, what="the session to expire")

    with pytest.raises(SessionException, match="no longer exists"):
        agent("anyone there?")
    assert client.dbsize() == 0

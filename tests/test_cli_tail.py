"""``strands-valkey tail``: a real tail process follows a session while another real process writes to it.

Standalone, cluster and through an ACL user with the documented rule; it ends by itself when the session is
deleted or expires, and says which; it never SCANs or KEYS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import valkey
from helpers import command_counts, wait_until
from strands import Agent
from test_acl import rule
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.cli import tail as tail_module
from strands_valkey_session_manager.cli.store import Store
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.server import LocalValkey

# The other process: two agents (one with a tool) and a Swarm write to the session given.
WRITER = """
import sys, valkey
from valkey.cluster import ValkeyCluster
from strands import Agent, tool
from strands.multiagent import Swarm
from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel

@tool
def lookup(topic: str) -> str:
    '''Look a topic up.

    Args:
        topic: The topic.
    '''
    return f"facts about {topic}"

url, session_id, cluster = sys.argv[1], sys.argv[2], sys.argv[3] == "cluster"
client = (ValkeyCluster if cluster else valkey.Valkey).from_url(url)
manager = ValkeySessionManager(session_id, client)
replies = [{"tool": "lookup", "input": {"topic": "valkey"}}, "Valkey is fast."]
researcher = Agent(agent_id="researcher", model=ScriptedModel(replies), tools=[lookup], session_manager=manager,
                   callback_handler=None)
writer = Agent(agent_id="writer", model=ScriptedModel(["A short report."]), session_manager=manager,
               callback_handler=None)
researcher("Research Valkey.")
writer("Write it up.")
node = Agent(name="node", agent_id="node", model=ScriptedModel(["done"]), callback_handler=None)
Swarm([node], session_manager=ValkeySessionManager(session_id, client))("task")
"""


@dataclass
class Tailing:
    """A ``strands-valkey tail`` process and the lines it printed so far (stdout, stderr)."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def finish(self, timeout: float = 30) -> int:
        """Wait for the process to end by itself; return its exit code, every line read."""
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return code


def start_tail(*args: str, interval: str = "0.1") -> Tailing:
    """Start ``strands-valkey tail ARGS`` as a real process; return once it follows the session."""
    command = [sys.executable, "-m", "strands_valkey_session_manager.cli", "tail", *args, "--interval", interval]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tailing = Tailing(process)
    for stream, into in ((process.stdout, tailing.lines), (process.stderr, tailing.errors)):
        reader = threading.Thread(
            target=lambda s=stream, i=into: i.extend(line.rstrip("\n") for line in s), daemon=True
        )
        reader.start()
        tailing.readers.append(reader)
    wait_until(lambda: any("following session" in line for line in tailing.errors) or process.poll() is not None)
    return tailing


def write(url: str, session_id: str, cluster: bool = False) -> None:
    command = [sys.executable, "-c", WRITER, url, session_id, "cluster" if cluster else "standalone"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def check_followed(events: list[dict], session_id: str) -> None:
    """The writer's messages, each once, in order per agent, then the Swarm's states, then the end."""
    messages = [event for event in events if event["kind"] == "message"]
    by_agent: dict[str, list[dict]] = {}
    for event in messages:
        assert event["session_id"] == session_id
        by_agent.setdefault(event["agent_id"], []).append(event)
    assert [event["message_id"] for event in by_agent["researcher"]] == [1, 2, 3, 4, 5]  # 1 first, by -n 1
    assert [event["role"] for event in by_agent["researcher"]] == [
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert by_agent["researcher"][0]["message"]["content"][0]["text"] == "an old answer"
    assert "toolUse" in by_agent["researcher"][2]["message"]["content"][0]
    assert "toolResult" in by_agent["researcher"][3]["message"]["content"][0]
    assert [event["message"]["content"][0]["text"] for event in by_agent["writer"]] == [
        "Write it up.",
        "A short report.",
    ]
    assert set(by_agent) == {"researcher", "writer"}  # a Swarm's nodes keep no messages in the session: its state
    states = [event for event in events if event["kind"] == "state"]
    assert states and states[-1]["multi_agent_id"] == "default_swarm" and states[-1]["state"]["status"] == "completed"
    assert events[-1] == {"session_id": session_id, "kind": "end", "reason": "deleted"}


@pytest.fixture
def started(make_agent: Callable[..., Agent]) -> Callable[..., None]:
    """``started(client, session_id)``: a session where the researcher had one turn already (messages 0 and 1)."""

    def start(on: valkey.Valkey | ValkeyCluster, session_id: str) -> None:
        make_agent(ValkeySessionManager(session_id, on), "researcher", replies=["an old answer"])("an old question")

    return start


def _agent(agent_id: str):  # noqa: ANN202
    from strands.types.session import SessionAgent

    return SessionAgent(agent_id=agent_id, state={}, conversation_manager_state={})


def _message(message_id: int, text: str):  # noqa: ANN202
    from strands.types.session import SessionMessage

    return SessionMessage({"role": "user", "content": [{"text": text}]}, message_id)


def test_tail_follows_another_process_until_the_session_is_deleted(
    server: LocalValkey, client: valkey.Valkey, started: Callable[..., None]
) -> None:
    started(client, "live-1")
    before = command_counts(client)
    tailing = start_tail("live-1", "--url", server.url, "--json", "-n", "1")
    write(server.url, "live-1")
    wait_until(lambda: any('"status": "completed"' in line for line in tailing.lines), what="the Swarm's last state")
    ValkeySessionManager("live-1", client).delete_session("live-1")
    assert tailing.finish() == 0, tailing.errors
    check_followed(tailing.json(), "live-1")
    after = command_counts(client)
    assert after.get("scan", 0) == before.get("scan", 0) and after.get("keys", 0) == before.get("keys", 0)


def test_tail_lines_say_time_agent_role_and_text_and_that_the_session_expired(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    manager = ValkeySessionManager("short-1", client)
    manager.create_agent("short-1", _agent("researcher"))
    tailing = start_tail("short-1", "--url", server.url)
    manager.create_message("short-1", "researcher", _message(0, "hello there"))
    manager.create_message("short-1", "researcher", _message(1, "tool time"))
    Store.of(client).expire("short-1", 1500)  # strands-valkey expire short-1 1.5: gone in 1.5 s
    assert tailing.finish(timeout=30) == 0
    sample = "\n".join(tailing.lines)
    print(sample, "\n".join(tailing.errors), sep="\n")  # the report quotes it (pytest -s)
    assert [line.split(" ", 1)[1] for line in tailing.lines] == [
        "researcher user hello there",
        "researcher user tool time",
    ]
    assert all(len(line.split(" ")[0]) == 8 and line[2] == ":" for line in tailing.lines)  # HH:MM:SS
    assert tailing.errors[-1] == "session short-1 expired"


def test_tail_of_a_missing_session_is_not_found(cli: Callable[..., Any]) -> None:
    result = cli("tail", "nobody")
    assert result.exit_code == 1 and "no session nobody" in result.stderr


def test_tail_on_a_cluster(cluster: LocalCluster, cluster_client: ValkeyCluster, started: Callable[..., None]) -> None:
    started(cluster_client, "live-2")
    tailing = start_tail("live-2", "--url", cluster.url, "--json", "-n", "1")
    write(cluster.url, "live-2", cluster=True)
    wait_until(lambda: any('"status": "completed"' in line for line in tailing.lines), what="the Swarm's last state")
    ValkeySessionManager("live-2", cluster_client).delete_session("live-2")
    assert tailing.finish() == 0, tailing.errors
    check_followed(tailing.json(), "live-2")


def test_tail_through_an_acl_user_with_the_documented_rule(
    server: LocalValkey, client: valkey.Valkey, started: Callable[..., None]
) -> None:
    client.execute_command("ACL", "SETUSER", "tailer", "reset", "on", ">tail-pw", *rule().split())
    try:
        started(client, "live-3")
        url = f"valkey://tailer:tail-pw@127.0.0.1:{server.port}"
        tailing = start_tail("live-3", "--url", url, "--json", "-n", "1")
        write(url, "live-3")
        wait_until(lambda: any('"status": "completed"' in line for line in tailing.lines), what="the Swarm's state")
        ValkeySessionManager("live-3", client).delete_session("live-3")
        assert tailing.finish() == 0, tailing.errors
        check_followed(tailing.json(), "live-3")
    finally:
        client.execute_command("ACL", "DELUSER", "tailer")


def test_keyspace_notifications_wake_the_tail(server: LocalValkey, client: valkey.Valkey) -> None:
    """With notifications on, a tail waiting its (long) interval shows a new message at once."""
    client.config_set("notify-keyspace-events", "KA")
    try:
        manager = ValkeySessionManager("notified", client)
        manager.create_agent("notified", _agent("researcher"))
        tailing = start_tail("notified", "--url", server.url, interval="30")
        manager.create_message("notified", "researcher", _message(0, "ping"))
        wait_until(lambda: tailing.lines, timeout=10, what="the line (30 s interval: only a notification shows it)")
        tailing.process.terminate()
        tailing.process.wait(10)
    finally:
        client.config_set("notify-keyspace-events", "")
    assert tailing.lines[0].endswith("researcher user ping")


def test_since_parses_durations_and_times() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    assert tail_module.parse_since("10m", now) == datetime(2026, 12, 6, 11, 50, tzinfo=timezone.utc)
    assert tail_module.parse_since("2026-12-06T08:00:00", now) == datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        tail_module.parse_since("yesterday", now)

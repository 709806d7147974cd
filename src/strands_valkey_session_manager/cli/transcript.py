"""A stored session as a readable transcript: per agent, its messages, state and timestamps."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape
from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage

from .. import codec
from .output import Output, seconds
from .store import SessionDump

ROLE_STYLE = {"user": "cyan", "assistant": "green"}
PREVIEW = 400  # characters of a tool input or result shown


def stamp(iso: object) -> str:
    """Format an ISO timestamp as ``2026-11-25 13:30:16Z`` (or as stored, if it is not one)."""
    if not isinstance(iso, str):
        return "?"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    zone = "Z" if moment.utcoffset() is not None and not moment.utcoffset() else moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + zone


def short(value: Any) -> str:
    """Return a value as text, cut after ``PREVIEW`` characters (saying how long it was)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= PREVIEW else f"{text[:PREVIEW]}… ({len(text)} characters)"


def _media(kind: str, block: dict[str, Any]) -> str:
    """``[image png, 1234 bytes]``: media is noted by format and size, never printed."""
    source = block.get("source", {}) if isinstance(block.get("source"), dict) else {}
    data = source.get("bytes")
    size = f", {len(data)} bytes" if isinstance(data, bytes) else ""
    location = source.get("location") or source.get("s3Location")
    where = f", at {short(location)}" if location else ""
    name = f" {block['name']}" if isinstance(block.get("name"), str) else ""
    return f"[{kind}{name} {block.get('format', '?')}{size}{where}]"


def describe_block(block: dict[str, Any]) -> str:
    """One content block as a line of rich markup (user content escaped)."""
    if "text" in block:
        return escape(str(block["text"]))
    if "toolUse" in block:
        use = block["toolUse"]
        return f"[magenta]→ {escape(str(use.get('name')))}[/magenta]({escape(short(use.get('input')))})" + (
            f" [dim]{escape(str(use.get('toolUseId')))}[/dim]"
        )
    if "toolResult" in block:
        result = block["toolResult"]
        parts = [describe_block(part) for part in result.get("content", []) if isinstance(part, dict)]
        status = result.get("status", "?")
        return f"[magenta]← {escape(str(status))}[/magenta] [dim]{escape(str(result.get('toolUseId')))}[/dim] " + (
            " ".join(parts)
        )
    if "json" in block:
        return escape(short(block["json"]))
    for kind in ("image", "document", "video"):
        if kind in block and isinstance(block[kind], dict):
            return f"[yellow]{escape(_media(kind, block[kind]))}[/yellow]"
    if "reasoningContent" in block:
        reasoning = block["reasoningContent"].get("reasoningText", {})
        return f"[dim]\\[reasoning] {escape(short(reasoning.get('text', '')))}[/dim]"
    return f"[dim]\\[{escape(', '.join(block))}][/dim]"


def message_lines(message: dict[str, Any]) -> list[str]:
    """Describe a message's content blocks as lines of rich markup."""
    return [describe_block(block) for block in message.get("content", []) if isinstance(block, dict)]


def _role(role: str) -> str:
    style = ROLE_STYLE.get(role, "magenta")
    return f"[bold {style}]{escape(role)}[/bold {style}]"


def render(out: Output, dump: SessionDump) -> None:
    """Print the session: header, then each agent's state and messages, then multi-agent states."""
    key = f"session {dump.session_id}"
    try:
        session = codec.load_record(Session, dump.record, key)
        created = stamp(session.created_at)
    except SessionException as error:
        created = f"(unreadable: {error})"
    out.say(f"[bold]Session {escape(dump.session_id)}[/bold]  created {escape(created)}  ttl {seconds(dump.ttl_ms)}")
    for agent_id, agent in dump.agents.items():
        out.heading(f"agent {agent_id}")
        if agent.record is not None:
            try:
                record = codec.load_record(SessionAgent, agent.record, f"agent {agent_id}")
                out.say(f"created {stamp(record.created_at)}  updated {stamp(record.updated_at)}")
                out.say(f"state {escape(json.dumps(record.state, ensure_ascii=False, default=repr))}")
            except SessionException as error:
                out.say(f"[red]agent record unreadable: {escape(str(error))}[/red]")
        else:
            out.say("[yellow](no agent record: only messages are stored)[/yellow]")
        _render_messages(out, agent.messages, agent_id)
    for multi_id, raw in dump.multi_agents.items():
        out.heading(f"multi-agent {multi_id}")
        try:
            state = codec.loads(raw, f"multi-agent {multi_id}")
            out.say(escape(short(state)))
        except SessionException as error:
            out.say(f"[red]{escape(str(error))}[/red]")
    if dump.skipped:
        out.say(f"[dim]other keys of the session, not shown: {escape(', '.join(dump.skipped))}[/dim]")


#: A message to print: its number, when it was created (if known), the message (or why it is unreadable), redacted.
Row = tuple[int, str | None, dict[str, Any] | SessionException, bool]


def _render_messages(out: Output, messages: dict[int, bytes], agent_id: str) -> None:
    """Print an agent's stored messages (SessionMessage records), each with its id and when it was created."""
    rows: list[Row] = []
    for message_id, raw in messages.items():
        where = f"agent {agent_id}, message {message_id}"
        try:
            record = codec.load_record(SessionMessage, raw, where)
        except SessionException as error:
            rows.append((message_id, None, error, False))
            continue
        rows.append((message_id, record.created_at, dict(_shown(record)), record.redact_message is not None))
    render_messages(out, rows)


def render_messages(out: Output, rows: list[Row]) -> None:
    """Print messages, numbers right-aligned and roles padded so that every text starts in one column.

    The one rendering of a conversation, for both layouts (a snapshot's messages have no time of their own).
    """
    shown = [message for _, _, message, _ in rows if isinstance(message, dict)]
    role_width = max((len(str(message.get("role"))) for message in shown), default=0)
    id_width = max((len(str(number)) for number, _, _, _ in rows), default=0)
    for number, created_at, message, redacted in rows:
        label = f"#{number}".rjust(id_width + 1)
        if isinstance(message, SessionException):
            out.say(f"[red]{label} unreadable: {escape(str(message))}[/red]")
            continue
        lines = message_lines(message) or ["[dim](no content)[/dim]"]
        if redacted:
            lines[0] = f"[yellow](redacted)[/yellow] {lines[0]}"
        role = str(message.get("role"))
        when = f" {stamp(created_at)}" if created_at is not None else ""
        head = f"[dim]{label}{when}[/dim] {_role(role)}{' ' * (role_width - len(role))}"
        out.labelled(head, lines[0], indent=0)
        for line in lines[1:]:
            out.labelled(" " * 4, line, indent=0)


def _shown(record: SessionMessage) -> Any:
    """Return the message to show: its redacted form if it was redacted."""
    return record.redact_message if record.redact_message is not None else record.message

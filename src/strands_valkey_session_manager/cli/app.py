"""The ``strands-valkey`` commands: arguments, exit codes and what each prints (docs/cli.md)."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..directory import MAX_PAGE, SessionDirectory, SessionInfo
from ..keys import validate_id, validate_prefix
from ..values import Keyring
from . import connect, demo, models, sealed, snapshots, tail, transcript, transfer
from .errors import INTERRUPTED, NOT_FOUND, REFUSED, USAGE, CliError
from .output import Output, named, plural, seconds, shorten, ttl_seconds
from .store import SCAN_COUNT, SessionDump, SessionExists, SessionSummary, Store, key_count, pipelined

F = TypeVar("F", bound=Callable[..., Any])


URL_HELP = (
    "valkey://, valkeys:// (TLS), redis://, rediss:// or unix:// URL. "
    f"Default: $VALKEY_URL, else $REDIS_URL, else {connect.DEFAULT_URL}."
)
#: The client libraries --client picks from, and the variable read when it is not given.
CLIENTS = ("valkey", "glide")
CLIENT_VARIABLE = "STRANDS_VALKEY_CLIENT"
CLIENT_HELP = (
    "valkey (valkey-py) or glide (Valkey GLIDE's glide_sync: the glide extra; no unix:// URLs). "
    f"Default: ${CLIENT_VARIABLE}, else valkey."
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Start with: strands-valkey demo. Each command's options and examples: strands-valkey COMMAND --help.",
)
@click.version_option(__version__, "--version", prog_name="strands-valkey", message="%(prog)s %(version)s")
@click.option("-u", "--url", metavar="URL", help=f"{URL_HELP} Before the command or after it.")
@click.option(
    "--client",
    "library",
    type=click.Choice(CLIENTS),
    envvar=CLIENT_VARIABLE,
    default="valkey",
    show_default=True,
    help=f"{CLIENT_HELP} Before the command or after it.",
)
@click.pass_context
def app(ctx: click.Context, url: str | None, library: str) -> None:
    """Run the Valkey session tutorial as a demo, and inspect and manage Strands Agents sessions in Valkey.

    Every command takes -u/--url, before it or after it (default: $VALKEY_URL, else $REDIS_URL, else
    valkey://localhost:6379), and --key-prefix (default: session); those that read or change sessions also
    take --cluster, and those that read --json. Both layouts are seen: ValkeySessionManager's, and
    SnapshotSessionManager's through ValkeyStorage (--storage-prefix, default: strands); --layout
    manager|snapshot picks one where an id is in both.

    Exit codes: 0 ok, 1 not found, 2 usage error, 3 Valkey unreachable or failing, 4 refused (would
    overwrite, not confirmed, or a key this library did not write), 130 interrupted.
    """
    ctx.meta["library"] = library


def _ids(ctx: click.Context, param: click.Parameter, values: Any) -> Any:
    """Check session ids as the library does (a usage error, exit 2, if one is not usable)."""
    for value in values if isinstance(values, (list, tuple)) else [values] if values is not None else []:
        try:
            validate_id(value, "session_id")
        except ValueError as error:  # "session_id=<'...'> | why": name the id shortened, a 10 kB id stays readable
            reason = str(error).partition(" | ")[2]
            raise click.BadParameter(f"session id {shorten(value)!r} {reason}", ctx, param) from error
    return values


def _prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check --key-prefix as the library does, before connecting: a usage error (exit 2), not a connection one."""
    try:
        return validate_prefix(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from error


def _connection(fn: F) -> F:
    """Add the options that say where the sessions are: --url and --key-prefix."""
    fn = click.option(
        "--key-prefix",
        default="session",
        show_default=True,
        metavar="PREFIX",
        callback=_prefix,
        help="First part of every key.",
    )(fn)
    fn = click.option("--client", type=click.Choice(CLIENTS), expose_value=False, callback=_library, help=CLIENT_HELP)(
        fn
    )
    return click.option("-u", "--url", metavar="URL", callback=_url, help=URL_HELP)(fn)


def _library(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--client after the command replaces the one before it (or ``$STRANDS_VALKEY_CLIENT``)."""
    if value is not None:
        ctx.meta["library"] = value


def _url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--url after the command, else -u/--url before it (valkey-cli's habit: strands-valkey -u URL sessions)."""
    return value if value is not None else ctx.find_root().params.get("url")


def _store_options(fn: F) -> F:
    fn = click.option("--cluster", is_flag=True, help="Use a cluster client (a cluster is also recognised by itself).")(
        fn
    )
    return _connection(fn)


#: Where --storage-prefix and --layout keep their values for the command that runs (``ctx.meta``).
_SNAPSHOT_META = "strands_valkey.snapshots"


def _snapshot_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Keep the value of --storage-prefix (checked as --key-prefix is) or --layout for :func:`_snapshot_choice`."""
    if param.name == "storage_prefix" and value is not None:
        value = _prefix(ctx, param, value)
    ctx.meta.setdefault(_SNAPSHOT_META, {})[param.name] = value
    return value


def _snapshot_choice() -> tuple[str, str | None]:
    """Return the running command's --storage-prefix and --layout (``None``: both layouts)."""
    given = click.get_current_context().meta.get(_SNAPSHOT_META, {})
    return given.get("storage_prefix", "strands"), given.get("layout")


def _storage_prefix_option(fn: F) -> F:
    """Add --storage-prefix: where ValkeyStorage keeps SnapshotSessionManager sessions (read by _snapshot_choice)."""
    return click.option(
        "--storage-prefix",
        default="strands",
        show_default=True,
        metavar="PREFIX",
        expose_value=False,
        callback=_snapshot_option,
        help="The key_prefix of the ValkeyStorage that keeps SnapshotSessionManager sessions.",
    )(fn)


def _snapshot_options(fn: F) -> F:
    """Add --storage-prefix and --layout: where ValkeyStorage keeps SnapshotSessionManager sessions; which layout.

    They are read with :func:`_snapshot_choice`, not passed to the command: its signature stays the same.
    """
    fn = click.option(
        "--layout",
        type=click.Choice([snapshots.MANAGER, snapshots.SNAPSHOT]),
        expose_value=False,
        callback=_snapshot_option,
        help="Only this layout: manager (ValkeySessionManager) or snapshot (SnapshotSessionManager through "
        "ValkeyStorage). Needed when a session id exists in both.",
    )(fn)
    return _storage_prefix_option(fn)


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(fn)


def _session_argument(fn: F) -> F:
    return click.argument("session", metavar="SESSION", callback=_ids)(fn)


def _guarded(fn: F) -> F:
    """Turn a ``CliError`` (or Ctrl-C) into a message on stderr and the exit code it carries."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CliError as error:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"[bold red]error:[/bold red] {escape(str(error))}"
            )
            raise click.exceptions.Exit(error.code) from None
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            raise click.exceptions.Exit(INTERRUPTED) from None

    return run  # type: ignore[return-value]


def command(*examples: str, **options: Any) -> Callable[[F], click.Command]:
    """Register a command with its examples at the end of its ``--help``, its errors guarded."""
    epilog = "\b\nExamples:\n" + "\n".join(f"  $ {line}" for line in examples) if examples else None
    return lambda fn: app.command(epilog=epilog, **options)(_guarded(fn))


def _open(url: str | None, key_prefix: str, cluster: bool = False) -> AbstractContextManager[Store]:
    library = click.get_current_context().meta.get("library", "valkey")
    return connect.store(connect.resolve_url(url)[0], key_prefix, cluster, library)


def _not_found(session_ids: list[str], key_prefix: str) -> CliError:
    listing = "List sessions with: strands-valkey sessions"
    given = click.get_current_context().meta.get(_SNAPSHOT_META, {})
    also = given.get("layout") != snapshots.MANAGER and "storage_prefix" in given
    storage = f", nor under storage prefix {given.get('storage_prefix')!r}" if also else ""
    return CliError(f"no session {named(session_ids)} (under key prefix {key_prefix!r}{storage}). {listing}", NOT_FOUND)


def _pick(store: Store, session_id: str) -> snapshots.SnapshotStore | None:
    """Return the snapshot sessions if ``session_id`` is to be found there, else ``None`` (the manager's layout)."""
    storage_prefix, layout = _snapshot_choice()
    found = snapshots.beside(store, storage_prefix)
    return found if snapshots.pick(store, found, session_id, layout) == snapshots.SNAPSHOT else None


def _counts(dumps: Sequence[SessionDump | snapshots.SnapshotDump]) -> str:
    """``2 sessions (3 records, 5000 messages)``: what export wrote and import read, counted alike.

    Records are the session, agent and Swarm/Graph records; messages are counted apart. Snapshot sessions
    are counted apart too, by stored value: ``and 1 snapshot session (4 values)``.
    """
    managed = [dump for dump in dumps if isinstance(dump, SessionDump)]
    snapped = [dump for dump in dumps if isinstance(dump, snapshots.SnapshotDump)]
    records = sum(1 + len(d.multi_agents) + sum(a.record is not None for a in d.agents.values()) for d in managed)
    messages = sum(len(agent.messages) for dump in managed for agent in dump.agents.values())
    counts = [f"{plural(len(managed), 'session')} ({plural(records, 'record')}, {plural(messages, 'message')})"]
    values = sum(len(dump.values) for dump in snapped)
    snapshot_count = f"{plural(len(snapped), 'snapshot session')} ({plural(values, 'value')})"
    return " and ".join(counts[: 1 if managed or not snapped else 0] + ([snapshot_count] if snapped else []))


# -- the demo ---------------------------------------------------------------------------------


@command(
    "strands-valkey demo",
    "strands-valkey demo --url valkey://localhost:6380 --keep",
    "strands-valkey demo --model bedrock",
    "strands-valkey demo --embedded --pause",
    name="demo",
)
@_connection
@click.option(
    "--model",
    default=models.SCRIPTED,
    show_default=True,
    metavar="MODEL",
    help="scripted (offline), bedrock[:<model id>], anthropic:<id>, openai:<id> or ollama:<id>.",
)
@click.option(
    "--session",
    metavar="SESSION",
    callback=_ids,
    help=f"Session id; refused if it exists. Default: {demo.SESSION_ID}, or a fresh id if that one exists.",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Run on a throwaway server (valkey-server on PATH, else the embedded one) even if one answers at the default.",
)
@click.option("--pause", is_flag=True, help="Wait for Enter between the steps.")
@click.option("--keep", is_flag=True, help="Skip the logout step: leave the session to explore.")
def demo_command(
    url: str | None, key_prefix: str, model: str, session: str | None, embedded: bool, pause: bool, keep: bool
) -> None:
    """Run the tutorial end to end (start here).

    Two agents share a session, a second process resumes it, its raw keys are listed, and it is
    deleted on logout. It never deletes a session it did not make.
    Uses the offline scripted model unless --model names a real one. Valkey is --url, else $VALKEY_URL ($REDIS_URL),
    else localhost:6379; when nothing answers there, a throwaway server (valkey-server on PATH, else the
    embedded one) is started on a free loopback port and stopped at the end.
    """
    demo.run(Output(), url, key_prefix, model, session, embedded=embedded, pause=pause, keep=keep)


@command(name="demo-resume", hidden=True)
@_connection
@click.option("--model", default=models.SCRIPTED)
@click.option("--session", default=demo.SESSION_ID, callback=_ids)
def demo_resume(url: str | None, key_prefix: str, model: str, session: str) -> None:
    """Run the demo's second process: resume the writer and print what happened as JSON."""
    result = demo.resume(connect.resolve_url(url)[0], key_prefix, model, session)
    sys.stdout.write(json.dumps(result, default=repr) + "\n")


# -- reading ----------------------------------------------------------------------------------


def _summary_json(summary: SessionSummary) -> dict[str, Any]:
    return {
        "session_id": summary.session_id,
        "layout": snapshots.MANAGER,
        "agents": summary.agents,
        "multi_agents": summary.multi_agents,
        "messages": summary.messages,
        "checkpoints": None,
        "size": None,
        "ttl": ttl_seconds(summary.ttl_ms),
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
    }


#: How many sessions ``sessions`` lists in a table by default (--limit N, --all: more).
PAGE = 50


@command(
    "strands-valkey sessions",
    "strands-valkey sessions --match 'user-*' --limit 20",
    "strands-valkey sessions --all",
    "strands-valkey sessions --json | jq -r '.[].session_id'",
    "strands-valkey sessions --owner alice",
)
@click.option("--match", default="*", show_default=True, metavar="GLOB", help="Only session ids matching this glob.")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help=f"Stop after N sessions (default: {PAGE}, --json: all)."
)
@click.option("--all", "every", is_flag=True, help="List every session (no --limit).")
@click.option("--owner", metavar="OWNER", help="Only this owner's sessions, most recently used first (no SCAN).")
@sealed.keyring_option
@_store_options
@_snapshot_options
@_json_option
def sessions(
    match: str,
    limit: int | None,
    every: bool,
    owner: str | None,
    keyring_file: str | None,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    as_json: bool,
) -> None:
    """List sessions of both layouts with agents, messages, TTL and last update.

    The first 50 found, sorted by session id (--limit N for N, --all for every one; --json lists all).
    LAYOUT is manager (ValkeySessionManager) or snapshot (SnapshotSessionManager through ValkeyStorage,
    whose SIZE is the bytes of its snapshots and stash).

    Scans incrementally (SCAN MATCH <prefix>:<glob> TYPE string COUNT 1000) and reads each batch's counts
    from the session indexes in two pipelined round trips, so it stays usable on millions of keys. Snapshot
    sessions are found in the storage's registry of groups (no SCAN) and summarised in two more round trips.
    With --owner: that owner's sessions (SessionDirectory), newest first, up to 1000 per three round trips.
    """
    if every and limit is not None:
        raise click.UsageError("--all lists every session: leave out --limit")
    if limit is None and not every and not as_json:
        limit = PAGE
    if owner is not None:
        _owner_sessions(owner, match, limit, as_json, (url, key_prefix, cluster), sealed.keyring(keyring_file))
        return
    out = Output(as_json)
    storage_prefix, layout = _snapshot_choice()
    found: list[SessionSummary] = []
    snapshot_found: list[snapshots.SnapshotSummary] = []
    fetch = None if limit is None else limit + 1  # one more than shown: whether more match
    with _open(url, key_prefix, cluster) as store, out.progress("scanning") as tick:
        if layout != snapshots.MANAGER:
            snapshot_store = snapshots.beside(store, storage_prefix)
            snapshot_found = snapshot_store.summaries(snapshot_store.session_ids(match)[:fetch])
        total = key_count(store.client)

        def progress(matched: int, sessions_found: int) -> None:
            tick(advance=0, text=f"scanning {total} keys: {matched} matched, {sessions_found} sessions")

        batch = min(fetch, SCAN_COUNT) if fetch else SCAN_COUNT
        for summary in store.summaries(match, batch=batch, progress=progress) if layout != snapshots.SNAPSHOT else ():
            found.append(summary)
            if fetch is not None and len(found) >= fetch:
                break
    listed = sorted(
        [_summary_json(summary) for summary in found] + [snapshots.summary_json(s) for s in snapshot_found],
        key=lambda entry: (entry["session_id"], entry["layout"]),
    )
    if limit is not None and len(listed) > limit:
        listed = listed[:limit]
        out.note(f"showing the first {limit} sessions found, sorted by id; more match: --limit N or --all to see them")
    if as_json:
        out.json(listed)
        return
    if not listed:
        where = f"under key prefix {key_prefix!r} or storage prefix {storage_prefix!r}"
        out.note(f"no sessions matching {match!r} {where}")
        return
    rows = [
        [
            entry["session_id"],
            entry["layout"],
            entry["agents"],
            "-" if entry["messages"] is None else entry["messages"],
            "-" if entry["size"] is None else entry["size"],
            seconds(None if entry["ttl"] is None else entry["ttl"] * 1000),
            transcript.stamp(entry["updated_at"]),
        ]
        for entry in listed
    ]
    columns = ["SESSION", "LAYOUT", "AGENTS", "MESSAGES", "SIZE", "TTL", "UPDATED"]
    out.table(columns, rows, right=["AGENTS", "MESSAGES", "SIZE", "TTL"])


def _owner_sessions(
    owner: str, match: str, limit: int | None, as_json: bool, where: tuple[str | None, str, bool], ring: Keyring | None
) -> None:
    """List an owner's sessions (``sessions --owner``); ``where``: the store's url, key prefix and cluster flag."""
    if match != "*":
        raise click.UsageError("--match and --owner do not go together: an owner's listing is not scanned")
    _checked("--owner", owner)
    out = Output(as_json)
    found: list[SessionInfo] = []
    url, key_prefix, cluster = where
    with _open(url, key_prefix, cluster) as store:
        listing, cursor = SessionDirectory(store.client, key_prefix, encryption=ring), None
        while limit is None or len(found) < limit:
            page, cursor = listing.list(owner, limit=min(limit or MAX_PAGE, MAX_PAGE), cursor=cursor)
            found += page
            if cursor is None:
                break
    found = found[:limit]
    if as_json:
        out.json([session.to_dict() for session in found])
        return
    if not found:
        out.note(f"no sessions of owner {owner!r} under key prefix {key_prefix!r}")
        return
    rows = [
        [
            s.session_id,
            s.title or "",
            len(s.agents),
            s.message_count,
            _expires(s.expires_in),
            transcript.stamp(s.updated_at),
        ]
        for s in found
    ]
    out.table(["SESSION", "TITLE", "AGENTS", "MESSAGES", "TTL", "UPDATED"], rows, right=["AGENTS", "MESSAGES", "TTL"])


def _expires(expires_in: int | None) -> str:
    return seconds(None if expires_in is None else expires_in * 1000)


def _checked(option: str, value: str) -> str:
    try:
        return validate_id(value, "owner")
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@command(
    "strands-valkey show workflow-001",
    "strands-valkey show workflow-001 --json | jq '.agents.writer'",
    "strands-valkey show user-43 --checkpoints",
    "strands-valkey show user-43 --checkpoint 019ae0c4-4e1c-7d2a-9c1f-2b6f0e8a1d37",
)
@_session_argument
@click.option("--checkpoints", is_flag=True, help="Snapshot layout: list the immutable checkpoints, oldest first.")
@click.option(
    "--checkpoint", metavar="SNAPSHOT_ID", help="Snapshot layout: show this checkpoint instead of the latest."
)
@_store_options
@_snapshot_options
@_json_option
@sealed.keyring_option
@sealed.raw_option
def show(
    session: str,
    checkpoints: bool,
    checkpoint: str | None,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    as_json: bool,
    keyring_file: str | None,
    raw: bool,
) -> None:
    """Print a session's transcript per agent.

    Roles, text, tool calls and results, media noted by size, agent state, timestamps. For a snapshot
    session, the latest snapshot of each agent; --checkpoints lists its checkpoints, --checkpoint shows one.

    --json prints the session as one entry of the export format (strands-valkey export --help); a snapshot
    session as its latest snapshots, as the SDK stores them, with the ids of its checkpoints. Encrypted or
    compressed values are opened (given the keyring); --raw prints the entry with the values as stored.
    """
    out = Output(as_json)
    settings = None if raw else sealed.values(keyring_file)
    with _open(url, key_prefix, cluster) as store:
        snapshot_store = _pick(store, session)
        if snapshot_store is not None:
            if raw:
                raise CliError("--raw shows a session manager's session; export a snapshot session as stored", USAGE)
            if not snapshots.show(out, snapshot_store, session, checkpoints, checkpoint, settings):
                raise _not_found([session], key_prefix)
            return
        if checkpoints or checkpoint is not None:
            raise CliError(f"session {shorten(session)} is no snapshot session: it has no checkpoints", USAGE)
        dump = store.dump(session)
        if dump is not None and settings is not None:
            dump = sealed.opened(store, dump, settings)
    if dump is None:
        raise _not_found([session], key_prefix)
    if as_json or raw:
        out.json(transfer.session_entry(dump))
    else:
        transcript.render(out, dump)


@command("strands-valkey keys workflow-001", "strands-valkey keys workflow-001 --json")
@_session_argument
@_store_options
@_snapshot_options
@_json_option
def keys(session: str, url: str | None, key_prefix: str, cluster: bool, as_json: bool) -> None:
    """List a session's raw keys with type, TTL and size.

    Size is LENGTH (a string's bytes, or the members of a set or sorted set) and MEMORY (MEMORY USAGE, bytes).

    The keys are found through the session's index key (<prefix>:<session>:index) in one Lua script,
    not with KEYS or SCAN; a snapshot session's through the indexes of its two storage groups, its
    snapshots and its context stash.
    """
    out = Output(as_json)
    with _open(url, key_prefix, cluster) as store:
        snapshot_store = _pick(store, session)
        if snapshot_store is None:
            infos, index = store.key_infos(session), f"the session index {store.keys.index(session)}"
        else:
            infos, index = snapshot_store.key_infos(session), f"the storage indexes {snapshot_store.index(session)}..."
    if not infos:
        raise _not_found([session], key_prefix)
    if as_json:
        out.json(
            [
                {"key": i.key, "type": i.type, "ttl": ttl_seconds(i.ttl_ms), "length": i.length, "memory": i.memory}
                for i in infos
            ]
        )
        return
    rows = [[i.key, i.type, seconds(i.ttl_ms), i.length, i.memory] for i in infos]
    out.table(["KEY", "TYPE", "TTL", "LENGTH", "MEMORY"], rows, right=["TTL", "LENGTH", "MEMORY"])
    out.note(f"{plural(len(infos), 'key')}, found through {index} (no KEYS, no SCAN)")


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    try:
        return None if value is None else tail.parse_since(value)
    except ValueError as error:
        expected = "expected a duration (90s, 10m, 2h, 1d) or an ISO time"
        raise click.BadParameter(f"{value!r}: {expected}", ctx, param) from error


@command(
    "strands-valkey tail workflow-001",
    "strands-valkey tail workflow-001 -n 20",
    "strands-valkey tail workflow-001 --since 10m --json | jq -r .role",
    name="tail",
)
@_session_argument
@click.option("-n", "--lines", "last", type=click.IntRange(min=0), default=0, help="First show the N newest messages.")
@click.option("--since", metavar="WHEN", callback=_since, help="First show what was written since WHEN (10m, a time).")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=tail.INTERVAL, show_default=True, help="Seconds per look."
)
@_store_options
@_json_option
@sealed.keyring_option
def tail_command(
    session: str,
    last: int,
    since: Any,
    interval: float,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    as_json: bool,
    keyring_file: str | None,
) -> None:
    """Follow a session live: a line per new message of every agent, and per Swarm/Graph state change.

    Time (UTC), agent, role and a short rendering of text, tool use and tool result; --json prints one
    object per line (the message as stored). Runs until Ctrl-C, or until the session is deleted or
    expires, which it says. Reads the session's indexes (never SCAN or KEYS); woken by keyspace
    notifications where the server has them on, else it looks every --interval seconds.
    """
    settings = sealed.values(keyring_file)
    with _open(url, key_prefix, cluster) as store:
        if not tail.follow(Output(as_json), store, session, last=last, since=since, interval=interval, values=settings):
            raise _not_found([session], key_prefix)


# -- export and import ------------------------------------------------------------------------


def _named(session: tuple[str, ...], match: str | None) -> list[str]:
    """Return the sessions named (each once), checked before connecting: at least one, or a ``--match``."""
    wanted = list(dict.fromkeys(session))
    if not wanted and match is None:
        raise CliError("name at least one SESSION, or --match GLOB", USAGE)
    return wanted


def _write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (``-``: stdout), replacing the file only once it is complete."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


@command(
    "strands-valkey export workflow-001 -o workflow-001.json",
    "strands-valkey export user-1 user-2 > users.json",
    "strands-valkey export --match 'user-*' -o users.json",
)
@click.argument("session", nargs=-1, metavar="[SESSION]...", callback=_ids)
@click.option("--match", metavar="GLOB", help="Also every session whose id matches this glob.")
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE", help="File to write; - is stdout.")
@_store_options
@_snapshot_options
@sealed.keyring_option
@sealed.raw_option
def export(
    session: tuple[str, ...],
    match: str | None,
    output: str,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    keyring_file: str | None,
    raw: bool,
) -> None:
    """Export sessions to a JSON file, byte for byte.

    Every record of each session, byte for byte, and the TTL it has left. Each session is read at
    one instant (one Lua script). A snapshot session is exported as every value of its storage keys
    (latest snapshots, checkpoints, context stash).

    The file is one JSON document: {"format": "strands-valkey-sessions", "version": 1, "exported_at", "sessions":
    [{"session_id", "ttl_ms", "session", "agents": {ID: {"agent", "messages": {ID: record}}}, "multi_agents"}]};
    each record is the JSON object stored (or its text, when re-encoding it would not give the same bytes). A
    snapshot session has "layout": "snapshot" and "values": {storage key: value} in place of the records.
    Encrypted or compressed values are exported opened (plain JSON; encrypted ones need the keyring), or as
    stored with --raw (importable under the same key names only: an encrypted value is bound to its key name).
    """
    out = Output()
    storage_prefix, layout = _snapshot_choice()
    settings = None if raw else sealed.values(keyring_file)
    wanted = _named(session, match)
    dumps: list[SessionDump | snapshots.SnapshotDump] = []
    missing: list[str] = []
    with _open(url, key_prefix, cluster) as store:
        if match is not None:
            with out.progress(f"finding sessions matching {match!r}"):
                found = [s.session_id for s in store.summaries(match)] if layout != snapshots.SNAPSHOT else []
                if layout != snapshots.MANAGER:
                    found += snapshots.beside(store, storage_prefix).session_ids(match)
                wanted += [session_id for session_id in dict.fromkeys(found) if session_id not in wanted]
        with out.progress("exporting", total=len(wanted)) as tick:
            for session_id in wanted:
                snapshot_store = _pick(store, session_id)
                dump = store.dump(session_id) if snapshot_store is None else snapshot_store.dump(session_id)
                if dump is None:
                    missing.append(session_id)
                elif settings is not None and isinstance(dump, SessionDump):
                    dumps.append(sealed.opened(store, dump, settings))
                else:
                    dumps.append(dump)
                tick()
    if missing:
        raise _not_found(missing, key_prefix)
    for key in (key for dump in dumps if isinstance(dump, SessionDump) for key in dump.skipped):
        out.note(f"[yellow]not exported: {escape(key)} is no record this library writes[/yellow]")
    entries = [
        transfer.session_entry(dump) if isinstance(dump, SessionDump) else transfer.snapshot_entry(dump)
        for dump in dumps
    ]
    _write(output, transfer.to_bytes(transfer.document(entries)))
    where = "stdout" if output == "-" else output
    out.note(f"exported {_counts(dumps)} to {escape(where)}")


@command(
    "strands-valkey import workflow-001.json",
    "strands-valkey import users.json --force",
    "strands-valkey export s1 | strands-valkey import - --url valkey://other:6379",
    name="import",
)
@click.argument("file", metavar="FILE")
@click.option("--force", is_flag=True, help="Replace sessions that exist (all their keys).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), help="Compress the values, as the manager does.")
@_store_options
@_storage_prefix_option
@sealed.keyring_option
def import_(
    file: str,
    force: bool,
    compression: str | None,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    keyring_file: str | None,
) -> None:
    """Import sessions from an export file.

    Reads FILE (- is stdin) and writes each session atomically, with the TTL it had left at export.
    With a keyring (--keyring-file, $STRANDS_VALKEY_KEYRING) or --compression, plain values of manager sessions
    are encrypted or compressed as the session manager would write them; values exported with --raw are
    written as they are.

    Refuses (exit 4, nothing written) when a session exists, unless --force. The session index and
    message-id sets are rebuilt as the session manager writes them, for this --key-prefix and client.
    A snapshot session is written back under --storage-prefix, each of its two storage groups atomically.
    """
    out = Output()
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError as error:
        raise CliError(f"no file {file}", NOT_FOUND) from error
    except OSError as error:
        raise CliError(f"cannot read {file}: {error}", USAGE) from error
    try:
        dumps = transfer.read(data)
    except ValueError as error:
        raise CliError(f"{file}: {error}", USAGE) from error
    settings = sealed.values(keyring_file, compression)
    with _open(url, key_prefix, cluster) as store:
        snapshot_store = snapshots.beside(store, _snapshot_choice()[0])
        dumps = [sealed.sealed(store, dump, settings) if isinstance(dump, SessionDump) else dump for dump in dumps]
        if not force:
            reads: list[tuple[Any, ...]] = []
            for dump in dumps:
                keys = [store.keys.session(dump.session_id), store.keys.index(dump.session_id)]
                if isinstance(dump, snapshots.SnapshotDump):
                    keys = [snapshot_store.keys.index(group) for group in snapshot_store.groups(dump.session_id)]
                reads += [("EXISTS", key) for key in keys]  # one key per EXISTS: a snapshot session's groups' slots
            counts = iter(pipelined(store.client, reads))
            existing = [dump.session_id for dump in dumps if next(counts) + next(counts)]
            if existing:
                exists = "exists" if len(existing) == 1 else "exist"
                raise CliError(
                    f"session {named(existing)} {exists}; nothing imported. Pass --force to replace it.", REFUSED
                )
        with out.progress("importing", total=len(dumps)) as tick:
            for position, dump in enumerate(dumps):
                try:
                    if isinstance(dump, SessionDump):
                        store.restore(dump, force=force)
                    else:
                        snapshot_store.restore(dump, force=force)
                except SessionExists as error:  # created since the check above
                    done = f"{_counts(dumps[:position])} imported before it" if position else "nothing imported"
                    raise CliError(
                        f"session {shorten(dump.session_id)} was created meanwhile: {done}, stopped there. "
                        "Pass --force to replace it.",
                        REFUSED,
                    ) from error
                tick()
    out.note(f"imported {_counts(dumps)}, each with the TTL it had left at export")


# -- changing ---------------------------------------------------------------------------------


@command(
    "STRANDS_VALKEY_KEYRING_FILE=ring.json strands-valkey rekey --match '*'",
    "strands-valkey rekey user-42 --keyring-file ring.json",
)
@click.argument("session", nargs=-1, metavar="[SESSION]...", callback=_ids)
@click.option("--match", metavar="GLOB", help="Also every session whose id matches this glob.")
@_store_options
@sealed.keyring_option
def rekey(
    session: tuple[str, ...],
    match: str | None,
    url: str | None,
    key_prefix: str,
    cluster: bool,
    keyring_file: str | None,
) -> None:
    """Re-encrypt sessions with the keyring's current key.

    Every value not encrypted with the current key (an older key's, or plain) is re-encrypted, keeping its
    compression. Each session is read at one instant and its values replaced in one script, each only if it
    still holds what was read: a value written meanwhile is left to its writer and reported. Run it again to
    resume: values already on the current key are skipped. Then the older keys can leave the keyring.
    Session manager sessions only (not the snapshot layout).
    """
    out = Output()
    ring = sealed.keyring(keyring_file)
    if ring is None or ring.current is None:
        raise CliError(
            f"rekey needs the keyring, with a current key: --keyring-file FILE or ${sealed.KEYRING_ENV}", USAGE
        )
    wanted = _named(session, match)
    done = changed = 0
    with _open(url, key_prefix, cluster) as store:
        if match is not None:
            with out.progress(f"finding sessions matching {match!r}"):
                wanted += [s.session_id for s in store.summaries(match) if s.session_id not in wanted]
        with out.progress("re-encrypting", total=len(wanted)) as tick:
            for session_id in wanted:
                dump = store.dump(session_id)
                if dump is not None:
                    replaced, skipped = sealed.rekey(store, dump, ring)
                    done, changed = done + replaced, changed + skipped
                    if replaced:
                        out.note(f"session {escape(session_id)}: {plural(replaced, 'value')} re-encrypted")
                tick(text=f"re-encrypting: {session_id}, {plural(done, 'value')} so far")
    out.say(f"re-encrypted {plural(done, 'value')} of {plural(len(wanted), 'session')} with key {ring.current}")
    if changed:
        out.note(f"[yellow]{plural(changed, 'value')} changed while being read: run rekey again[/yellow]")


@command(
    "strands-valkey delete user-42", "strands-valkey delete user-1 user-2 --yes", "strands-valkey delete --owner alice"
)
@click.argument("session", nargs=-1, metavar="SESSION...", callback=_ids)
@click.option("--owner", metavar="OWNER", help="Erase every session of this owner, and its listing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@sealed.keyring_option
@_store_options
@_snapshot_options
def delete(
    session: tuple[str, ...],
    owner: str | None,
    yes: bool,
    keyring_file: str | None,
    url: str | None,
    key_prefix: str,
    cluster: bool,
) -> None:
    """Delete sessions and every key of theirs.

    Each session atomically, its keys found through its index, as delete_session() does. A snapshot
    session: its snapshots and its context stash, as SnapshotSessionManager.delete_session() does, each
    of the two storage groups atomically. With --owner: every session of the owner (SessionDirectory.erase;
    safe to run again if interrupted).
    """
    if (owner is None) == (not session):
        raise click.UsageError("name the sessions to delete, or --owner (not both)")
    out = Output()
    if owner is not None:
        _checked("--owner", owner)
        if not yes and not _confirmed(f"Erase every session of owner {escape(owner)} and all their keys?"):
            raise CliError("nothing deleted (not confirmed; pass --yes to delete without asking)", REFUSED)
        with _open(url, key_prefix, cluster) as store:
            erased = SessionDirectory(store.client, key_prefix, encryption=sealed.keyring(keyring_file)).erase(owner)
        out.say(f"erased {plural(erased, 'session')} of owner {escape(owner)}")
        return
    if not yes:
        if not _confirmed(f"Delete session {named(session)} and all its keys?"):
            raise CliError("nothing deleted (not confirmed; pass --yes to delete without asking)", REFUSED)
    missing = []
    with _open(url, key_prefix, cluster) as store:
        for session_id in session:
            snapshot_store = _pick(store, session_id)
            deleted = store.delete(session_id) if snapshot_store is None else snapshot_store.delete(session_id)
            if deleted:
                kind = "" if snapshot_store is None else "snapshot "
                out.say(f"deleted {kind}session {escape(session_id)} ({plural(deleted, 'key')})")
            else:
                missing.append(session_id)
    if missing:
        raise _not_found(missing, key_prefix)


def _confirmed(question: str) -> bool:
    try:
        return click.confirm(question, err=True)
    except click.exceptions.Abort:
        return False


def _expire(session: str, ttl_ms: int | None, url: str | None, key_prefix: str, cluster: bool) -> None:
    with _open(url, key_prefix, cluster) as store:
        snapshot_store = _pick(store, session)
        changed = store.expire(session, ttl_ms) if snapshot_store is None else snapshot_store.expire(session, ttl_ms)
    if not changed:
        raise _not_found([session], key_prefix)
    what = "never expire" if ttl_ms is None else f"expire in {seconds(ttl_ms)}"
    keys = "its 1 key now" if changed == 1 else f"its {changed} keys now"
    Output().say(f"session {escape(session)}: {keys} {what}")


@command("strands-valkey expire user-42 600")
@_session_argument
@click.argument("seconds_", metavar="SECONDS", type=click.IntRange(min=1))
@_store_options
@_snapshot_options
def expire(session: str, seconds_: int, url: str | None, key_prefix: str, cluster: bool) -> None:
    """Make a session expire SECONDS from now.

    Every key of the session gets the same deadline, atomically.

    A session manager with a ttl that writes to the session afterwards slides its expiry again.
    """
    _expire(session, seconds_ * 1000, url, key_prefix, cluster)


@command("strands-valkey persist user-42")
@_session_argument
@_store_options
@_snapshot_options
def persist(session: str, url: str | None, key_prefix: str, cluster: bool) -> None:
    """Remove a session's expiry.

    From every key of the session, atomically; a session manager with a ttl that writes to the session
    later gives it one again.
    """
    _expire(session, None, url, key_prefix, cluster)

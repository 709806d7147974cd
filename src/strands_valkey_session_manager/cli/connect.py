"""Which Valkey the CLI talks to: ``--url``, else ``$VALKEY_URL``, else localhost; cluster or not."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import valkey
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.exceptions import ValkeyError

from .errors import REFUSED, UNAVAILABLE, USAGE, CliError
from .store import ForeignRecord, Store

DEFAULT_URL = "valkey://localhost:6379"
TIMEOUT = 5.0
SCHEMES = ("valkey", "valkeys", "redis", "rediss", "unix")


def resolve_url(option: str | None) -> tuple[str, bool]:
    """Return the URL to use, and whether the user chose it (``--url`` or ``$VALKEY_URL``) or it is the default."""
    chosen = option or os.environ.get("VALKEY_URL")
    return (chosen, True) if chosen else (DEFAULT_URL, False)


def redact(url: str) -> str:
    """Return the URL with its password, if any, replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def unreachable(url: str, error: BaseException) -> CliError:
    """Build the error for a server that cannot be reached or fails, with what to do about it."""
    return CliError(
        f"cannot reach Valkey at {redact(url)}: {type(error).__name__}: {str(error).rstrip('.')}. Start a server "
        "(valkey-server), or point --url / VALKEY_URL at one (valkey://, valkeys:// for TLS, redis://, rediss://).",
        UNAVAILABLE,
    )


def _client(url: str, cluster: bool) -> valkey.Valkey | ValkeyCluster:
    """Open a client for ``url`` (bytes, not decoded), as a cluster client if asked or if the server is one."""
    if not url.lower().startswith(tuple(f"{scheme}:" for scheme in SCHEMES)):
        raise CliError(f"--url {redact(url)!r}: expected valkey://, valkeys://, redis://, rediss:// or unix://", USAGE)
    options = {"decode_responses": False, "socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    if not cluster:
        client = valkey.Valkey.from_url(url, **options)
        if str(cast("dict[str, Any]", client.info("cluster")).get("cluster_enabled", 0)) != "1":
            return client
        client.close()  # type: ignore[no-untyped-call]
    return cast(ValkeyCluster, ValkeyCluster.from_url(url, **options))  # type: ignore[no-untyped-call]


@contextmanager
def store(url: str, key_prefix: str, cluster: bool = False) -> Iterator[Store]:
    """Open the sessions under ``key_prefix`` at ``url``; the client is closed on leaving."""
    try:
        client = _client(url, cluster)
    except ValueError as error:  # a malformed URL
        raise CliError(f"--url {redact(url)!r}: {error}", USAGE) from error
    except ValkeyError as error:
        raise unreachable(url, error) from error
    try:
        try:
            opened = Store.of(client, key_prefix)
        except ValueError as error:
            raise CliError(f"--key-prefix: {error}", USAGE) from error
        yield opened
    except (ValkeyConnectionError, ValkeyTimeoutError) as error:
        raise unreachable(url, error) from error
    except ValkeyError as error:
        raise CliError(f"Valkey at {redact(url)} failed: {type(error).__name__}: {error}", UNAVAILABLE) from error
    except ForeignRecord as error:
        raise CliError(str(error), REFUSED) from error
    except SessionException as error:
        raise CliError(str(error), UNAVAILABLE) from error
    finally:
        client.close()  # type: ignore[no-untyped-call]

"""Which Valkey the CLI talks to (``--url``, else ``$VALKEY_URL``, else ``$REDIS_URL``, else localhost), and why not.

A connection that fails gets one line saying what happened and a hint that matches the cause: nothing
listening, authentication, a TLS/plaintext mismatch (both ways), an untrusted certificate, an unknown host,
``--cluster`` on a server that is no cluster.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import valkey
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster
from valkey.exceptions import AuthenticationError, NoPermissionError, ValkeyClusterException, ValkeyError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from ..connection import driver_for
from ..connection import redact as redact  # re-exported: the demo names it connect.redact
from ..driver import drive
from .errors import REFUSED, UNAVAILABLE, USAGE, CliError
from .store import ForeignRecord, Store

DEFAULT_URL = "valkey://localhost:6379"
#: The environment variables read for the URL, in this order, when there is no --url.
URL_VARIABLES = ("VALKEY_URL", "REDIS_URL")
TIMEOUT = 5.0
#: Seconds a probe (is this port TLS or plaintext?) waits: a server of the kind asked answers in milliseconds.
PROBE_TIMEOUT = 1.0
SCHEMES = ("valkey", "valkeys", "redis", "rediss", "unix")
TLS_SCHEMES = ("valkeys", "rediss")


def resolve_url(option: str | None) -> tuple[str, bool]:
    """Return the URL to use, and whether the user chose it (``--url`` or a variable) or it is the default.

    An empty variable counts as unset; an empty ``--url`` is a usage error, not a silent fallback.
    """
    if option is not None:
        if not option.strip():
            variables = " / ".join(f"${name}" for name in URL_VARIABLES)
            raise CliError(f"--url is empty: give a URL (valkey://host:6379), or leave it out for {variables}", USAGE)
        return option, True
    for name in URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value, True
    return DEFAULT_URL, False


def _address(url: str) -> tuple[str, int] | None:
    """Host and port of a TCP URL (``None`` for unix sockets and URLs without a host)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "unix" or not parts.hostname:
        return None
    try:
        return parts.hostname, parts.port or 6379
    except ValueError:  # a port that is no number: valkey-py says so when it parses the URL
        return None


def _speaks_plaintext(address: tuple[str, int]) -> bool:
    """Whether the server at ``address`` answers a plaintext PING (so a TLS handshake there would hang)."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(1)[:1] in (b"+", b"-")  # +PONG, or -NOAUTH: a plaintext server either way
    except OSError:
        return False


def _speaks_tls(address: tuple[str, int]) -> bool:
    """Whether the server at ``address`` completes a TLS handshake (certificate not checked: only asking)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT) as raw, context.wrap_socket(raw):
            return True
    except OSError:  # ssl.SSLError is an OSError
        return False


def _hint(url: str, error: BaseException) -> str:
    """Say what to do about ``error``, matched to its cause."""
    text = str(error).lower()
    address = _address(url)
    if isinstance(error, AuthenticationError) or "wrongpass" in text or "noauth" in text:
        return "Authentication failed: check the user and password in the URL (valkey://user:password@host:port)."
    if isinstance(error, NoPermissionError):
        return "The ACL user lacks a permission this command needs: see the ACL rule in docs/production.md."
    if "certificate verify failed" in text:
        return (
            "The server's TLS certificate is not trusted: give its CA in the URL, ?ssl_ca_certs=/path/to/ca.crt "
            "(or ssl_cert_reqs=none to skip the check, not in production)."
        )
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "The host name does not resolve: check the host in the URL."
    if "connection refused" in text or "no such file or directory" in text:
        return "Nothing listens there: start a server (valkey-server), or point --url / $VALKEY_URL at one."
    scheme = urlsplit(url).scheme.lower()
    if address is not None and scheme not in TLS_SCHEMES and _speaks_tls(address):
        return f"The server speaks TLS: use a valkeys:// URL (valkeys://{address[0]}:{address[1]})."
    if isinstance(error, ValkeyTimeoutError):
        return f"No answer within {TIMEOUT:g}s: check the host, the port and any firewall in between."
    return (
        "Start a server (valkey-server), or point --url / $VALKEY_URL at one "
        "(valkey://, valkeys:// for TLS, redis://, rediss://)."
    )


def unreachable(url: str, error: BaseException) -> CliError:
    """Build the error for a server that cannot be reached or fails, with what to do about it."""
    detail = str(error).rstrip(".")
    return CliError(
        f"cannot reach Valkey at {redact(url)}: {type(error).__name__}: {detail}. {_hint(url, error)}", UNAVAILABLE
    )


def _client(url: str, cluster: bool, library: str = "valkey") -> Any:
    """Open a client for ``url`` (bytes, not decoded), as a cluster client if asked or if the server is one.

    ``library``: ``valkey`` (valkey-py) or ``glide`` (a ``glide_sync`` client, the ``glide`` extra).
    """
    if not url.lower().startswith(tuple(f"{scheme}:" for scheme in SCHEMES)):
        raise CliError(f"--url {redact(url)!r}: expected valkey://, valkeys://, redis://, rediss:// or unix://", USAGE)
    address, scheme = _address(url), urlsplit(url).scheme.lower()
    if scheme in TLS_SCHEMES and address is not None and not _speaks_tls(address) and _speaks_plaintext(address):
        # A TLS handshake with a plaintext server waits for the whole timeout (it waits for a command's end):
        # a handshake of our own, cut short, tells in a second. (A plaintext PING first would be quicker, but
        # a TLS server logs it as a warning, on every run.)
        plain = scheme[:-1] + url[url.index(":") :].split("?")[0]
        raise CliError(
            f"cannot reach Valkey at {redact(url)}: the server there does not speak TLS. Use a {scheme[:-1]}:// "
            f"URL ({redact(plain)}), or enable TLS on the server.",
            UNAVAILABLE,
        )
    if library == "glide":
        return _glide_client(url, cluster)
    options = {"decode_responses": False, "socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    if not cluster:
        client = valkey.Valkey.from_url(url, **options)
        try:
            cluster_info = cast("dict[str, Any]", client.info("cluster"))
        except NoPermissionError:  # an ACL user of the manager's rule (docs/production.md): --cluster says if it is one
            return client
        if str(cluster_info.get("cluster_enabled", 0)) != "1":
            return client
        client.close()  # type: ignore[no-untyped-call]
    try:
        return cast(ValkeyCluster, ValkeyCluster.from_url(url, **options))  # type: ignore[no-untyped-call]
    except ValkeyClusterException as error:
        if "cluster mode is not enabled" in str(error).lower():
            raise CliError(
                f"--cluster: the server at {redact(url)} is not a cluster (cluster mode is not enabled): "
                "leave out --cluster (a cluster is recognised by itself)",
                UNAVAILABLE,
            ) from error
        raise unreachable(url, error) from error


def _glide_client(url: str, cluster: bool) -> Any:
    """Open a ``glide_sync`` client for ``url``: a cluster client if asked or if the server is one."""
    try:
        from ..connection import glide_client
    except ImportError as error:
        raise CliError(
            f"--client glide needs Valkey GLIDE ({error}): pip install 'strands-valkey-session-manager[glide]'", USAGE
        ) from error
    settings = {"request_timeout": int(TIMEOUT * 1000), "connection_timeout": int(TIMEOUT * 1000)}
    if not cluster:
        client = glide_client(url, False, settings)
        try:
            info = drive(driver_for(client).command("INFO", "cluster"))
        except NoPermissionError:  # as for valkey-py: --cluster says if it is one
            return client
        if b"cluster_enabled:1" not in info:
            return client
        client.close()
    return glide_client(url, True, settings)


@contextmanager
def store(url: str, key_prefix: str, cluster: bool = False, library: str = "valkey") -> Iterator[Store]:
    """Open the sessions under ``key_prefix`` at ``url`` (``library``: see ``_client``); closed on leaving."""
    try:
        client = _client(url, cluster, library)
    except ValueError as error:  # a malformed URL
        raise CliError(f"--url {redact(url)!r}: {error}", USAGE) from error
    except ValkeyError as error:
        raise unreachable(url, error) from error
    try:
        yield Store.of(client, key_prefix)  # key_prefix checked by the option (app._prefix)
    except (ValkeyConnectionError, ValkeyTimeoutError) as error:
        raise unreachable(url, error) from error
    except ValkeyError as error:
        hint = f" {_hint(url, error)}" if isinstance(error, NoPermissionError) else ""
        failed = f"Valkey at {redact(url)} failed: {type(error).__name__}: {error}.{hint}"
        raise CliError(failed, UNAVAILABLE) from error
    except ForeignRecord as error:
        raise CliError(str(error), REFUSED) from error
    except SessionException as error:
        raise CliError(str(error), UNAVAILABLE) from error
    finally:
        client.close()

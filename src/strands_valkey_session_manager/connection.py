"""Clients built from a URL (``from_url``), and the check that a value passed as a client is a usable one.

``ValkeySessionManager.from_url`` and ``ValkeyStorage.from_url`` build their client here, with the settings
docs/reliability.md asks for: bounded timeouts, and (standalone) a retry policy for connection errors and
timeouts, safe because every write of this library is idempotent. A cluster client is left its own retries:
it refreshes its slot map and retries a command on the same errors (``cluster_error_retry_attempts``);
a connection-level retry under it would multiply the attempts.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import valkey
import valkey.asyncio
import valkey.asyncio.retry
import valkey.retry
from strands.types.exceptions import SessionException
from valkey.backoff import ExponentialBackoff
from valkey.cluster import KWARGS_DISABLED_KEYS, VALKEY_ALLOWED_KEYS, ValkeyCluster
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.exceptions import ValkeyClusterException, ValkeyError

from .driver import AsyncioDriver, Driver, SyncDriver, glide_kind
from .options import Client

#: Seconds a reply may take (``socket_timeout``) and a connection (TCP and TLS handshake) may take to open.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
#: Retries of a command that failed on the wire (standalone clients), with exponential backoff up to 1 s.
RETRIES = 3

#: What to pass as a client, for the TypeError of a value that is none.
SYNC_CLIENTS = (
    "valkey.Valkey(...) / valkey.Valkey.from_url(url), or valkey.cluster.ValkeyCluster(...), or a GLIDE "
    "glide_sync.GlideClient / GlideClusterClient"
)
ASYNC_CLIENTS = (
    "valkey.asyncio.Valkey(...) / valkey.asyncio.Valkey.from_url(url), or valkey.asyncio.ValkeyCluster(...), or a "
    "GLIDE glide.GlideClient / GlideClusterClient"
)


#: Constructor arguments that say where the server is: the URL says that.
_LOCATION = frozenset({"self", "kwargs", "url", "host", "port", "startup_nodes", "connection_pool", "unix_socket_path"})


def redact(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))


#: The client class ``from_url`` builds, by (asyncio, cluster), with the name users know it by.
_CLASSES: dict[tuple[bool, bool], tuple[Any, str]] = {
    (False, False): (valkey.Valkey, "valkey.Valkey"),
    (False, True): (ValkeyCluster, "valkey.cluster.ValkeyCluster"),
    (True, False): (valkey.asyncio.Valkey, "valkey.asyncio.Valkey"),
    (True, True): (valkey.asyncio.ValkeyCluster, "valkey.asyncio.ValkeyCluster"),
}


def client_class(asyncio: bool, cluster: bool) -> Any:
    """Return the client class ``from_url`` builds."""
    return _CLASSES[asyncio, cluster][0]


def client_option_names(kind: Any) -> frozenset[str]:
    """Return the settings a client class takes by name (a sync cluster's include those it hands its nodes)."""
    names = set(inspect.signature(kind.__init__).parameters)
    if kind is ValkeyCluster:  # takes **kwargs, silently dropping any name outside this list
        names |= set(VALKEY_ALLOWED_KEYS) - set(KWARGS_DISABLED_KEYS)
    return frozenset(names - _LOCATION)


def keyword_options(function: Any) -> list[str]:
    """Return the keyword-only parameters of ``function``: a constructor's options (``ttl``, ``key_prefix``...)."""
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY]


def split_options(
    caller: str, owner: str, owner_names: Collection[str], asyncio: bool, cluster: bool, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``caller``'s options into the owner's (``ttl``, ...) and the client's (``socket_timeout``, ...).

    Raises:
        TypeError: For a name that is neither, with the closest known name if there is one.
    """
    kind, kind_name = _CLASSES[asyncio, cluster]
    client_names = client_option_names(kind)
    mine = {name: value for name, value in options.items() if name in owner_names}
    theirs = {name: value for name, value in options.items() if name not in owner_names}
    for name in theirs:
        if name in client_names:
            continue
        hint = None
        if name in client_option_names(client_class(asyncio, not cluster)):
            switch = "leave out cluster=True" if cluster else "pass cluster=True"
            hint = f"It is a setting of {_CLASSES[asyncio, not cluster][1]}: {switch}."
        takes = f"the options of {owner} ({', '.join(owner_names)}) and " if owner_names else ""
        known = [*owner_names, *client_names]
        raise unknown_option(caller, name, known, f"{takes}the settings of {kind_name}", hint)
    return mine, theirs


def closest(name: str, known: Collection[str]) -> str | None:
    """Return the known name that ``name`` most likely misspells, if any.

    The most similar one (``ttll``, ``key_prefx``), else the known name its first words make (``ttl_seconds``,
    ``lock_timeout_s``), which similarity alone misses when the rest is long.
    """
    similar = difflib.get_close_matches(name, known, n=1)
    if similar:
        return similar[0]
    words = name.split("_")
    heads = ("_".join(words[:count]) for count in range(len(words) - 1, 0, -1))
    return next((head for head in heads if head in known), None)


def unknown_option(caller: str, name: str, known: Collection[str], takes: str, hint: str | None = None) -> TypeError:
    """Return the ``TypeError`` for an option ``caller`` does not take: it names it, and the closest known one.

    ``takes`` says what ``caller`` takes instead; ``hint`` replaces the "Did you mean" (a better lead, if any).
    """
    if hint is None:
        close = closest(name, known)
        hint = f"Did you mean {close!r}?" if close else ""
    return TypeError(f"{caller} got an unknown option {name!r}. {hint}{' ' if hint else ''}It takes {takes}.")


def defaults(asyncio: bool, cluster: bool) -> dict[str, Any]:
    """Return the client settings ``from_url`` starts from: replies as bytes, timeouts, (standalone) retries."""
    settings: dict[str, Any] = {
        # The library decodes what it reads itself (once, in codec); bytes also let a value that is not
        # UTF-8 be reported naming its key.
        "decode_responses": False,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if not cluster:
        retry = valkey.asyncio.retry.Retry if asyncio else valkey.retry.Retry
        settings["retry"] = retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)
        settings["retry_on_error"] = [ValkeyConnectionError, ValkeyTimeoutError]
    return settings


def open_url(
    owner: Any,
    url: object,
    asyncio: bool,
    cluster: bool,
    options: dict[str, Any],
    failure: type[Exception],
    library: str = "valkey",
) -> tuple[dict[str, Any], Any]:
    """Split ``owner.from_url``'s options, and build the client: return the owner's options and the client.

    ``owner`` is the class whose keyword-only constructor options it takes (``None``: client settings only).
    The client gets :func:`defaults` overridden by the settings in ``options``. A sync cluster client connects
    here, to read the slot map; other clients connect on first use.

    Raises:
        TypeError: If an option is unknown, ``url`` is no string, or a setting does not apply to this URL
            (``ssl_*`` without TLS).
        ValueError: If ``url`` is not a Valkey URL.
        failure: (``SessionException``, ``StorageError``) If a cluster client cannot reach the cluster.
    """
    caller = f"{owner.__name__}.from_url()" if owner is not None else "client_from_url()"
    names = keyword_options(owner.__init__) if owner is not None else []
    if library != "valkey":
        return _open_glide(caller, names, url, asyncio, cluster, options, failure, library)
    mine, settings = split_options(caller, getattr(owner, "__name__", ""), names, asyncio, cluster, options)
    if not isinstance(url, str):
        raise TypeError(
            f"url=<{type(url).__module__}.{type(url).__qualname__}> | {caller} takes a URL string (valkey://host:6379, "
            "valkeys:// for TLS, redis://, rediss://); a client you already have goes to the constructor instead"
        )
    kind = client_class(asyncio, cluster)
    try:
        client = kind.from_url(url, **{**defaults(asyncio, cluster), **settings})
    except ValueError as error:
        raise ValueError(f"url=<{redact(url)}> | {error}") from error
    except (ValkeyError, ValkeyClusterException) as error:
        hint = "Check that Valkey is reachable and the url, credentials and timeouts."
        if "cluster mode is not enabled" in str(error).lower():
            hint = "The server is not a cluster: leave out cluster=True."
        raise failure(f"url=<{redact(url)}> | connecting to the cluster failed: {error}. {hint}") from error
    if not cluster:
        _check_connection_settings(client.connection_pool, url)
    return mine, client


def _open_glide(
    caller: str,
    names: list[str],
    url: object,
    asyncio: bool,
    cluster: bool,
    options: dict[str, Any],
    failure: type[Exception],
    library: str,
) -> tuple[dict[str, Any], Any]:
    """:func:`open_url` for ``client="glide"``: a ``glide_sync`` client (:func:`glide_configuration`)."""
    if library != "glide":
        raise ValueError(f"client=<{library!r}> | {caller} builds client='valkey' (valkey-py) or client='glide'")
    if asyncio:
        raise TypeError(
            f"{caller} cannot build an asyncio GLIDE client: it belongs to the event loop it is made on. On that "
            "loop: client = await glide.GlideClient.create(glide_configuration(url)), then "
            "await ValkeySessionManager.open(session_id, client); or leave out asyncio=True for a glide_sync client"
        )
    if not isinstance(url, str):
        raise TypeError(f"url=<{type(url).__qualname__}> | {caller} takes a URL string (valkey://host:6379)")

    mine = {name: value for name, value in options.items() if name in names}
    try:
        return mine, glide_client(url, cluster, {k: v for k, v in options.items() if k not in names})
    except ValkeyError as error:
        raise failure(f"url=<{redact(url)}> | connecting failed: {error}. Check the url, credentials") from error


def client_from_url(url: str, *, cluster: bool = False, **settings: Any) -> Client:
    """Build a synchronous client for ``url`` with the defaults ``ValkeySessionManager.from_url`` uses.

    For a client shared by many managers (a web app: one manager per request, one connection pool). Settings
    by name (``socket_timeout``, ``ssl_ca_certs``, ``max_connections``, ...) replace the defaults.

    Raises:
        TypeError: If a setting is unknown, or does not apply to this URL; ``url`` is not a string.
        ValueError: If ``url`` is not a Valkey URL.
        SessionException: If ``cluster`` and the cluster cannot be reached.
    """
    client: Client = open_url(None, url, False, cluster, settings, SessionException)[1]
    return client


def _check_connection_settings(pool: Any, url: str) -> None:
    """Build (not open) one connection now, so a setting this URL's connection does not take fails here."""
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as error:
        scheme = urlsplit(url).scheme
        raise TypeError(
            f"url=<{redact(url)}> | a setting does not apply to a {scheme}:// connection ({error}). TLS settings "
            "(ssl_*) need a valkeys:// or rediss:// URL, which alone turns TLS on (no ssl=True)."
        ) from error


def is_glide(client: object) -> bool:
    """Whether ``client`` is a Valkey GLIDE client (``glide_sync``, or the asyncio ``glide``)."""
    return glide_kind(client) is not None


def is_asyncio(client: object) -> bool:
    """Whether ``client`` is an asyncio client: ``valkey.asyncio``'s, or GLIDE's ``glide``."""
    kind = glide_kind(client)
    if kind is not None:
        return kind[0]
    return isinstance(client, (valkey.asyncio.Valkey, valkey.asyncio.ValkeyCluster))


def check_client(client: object, owner: str, asyncio: bool, glide: bool = False) -> bool:
    """Return whether ``client`` is a cluster client; ``TypeError`` saying what was passed and what to pass.

    ``owner`` (``ValkeySessionManager``, ``ValkeyStorage``) needs a synchronous client, or an asyncio one
    if ``asyncio``; with ``glide``, a GLIDE client of that kind too, unless it compresses values
    (:func:`check_glide`).
    """
    if glide and is_glide(client) and is_asyncio(client) == asyncio:
        check_glide(client, owner)
        return bool(glide_kind(client) == (asyncio, True))
    standalone, cluster = client_class(asyncio, False), client_class(asyncio, True)
    if isinstance(client, (standalone, cluster)):
        return isinstance(client, cluster)
    wanted = ASYNC_CLIENTS if asyncio else SYNC_CLIENTS
    if not glide:
        wanted = wanted.rpartition(", or a")[0]
    raise TypeError(
        f"client=<{type(client).__module__}.{type(client).__qualname__}> | {owner} got "
        f"{_describe(client, asyncio, glide)}; "
        f"pass {'an asyncio' if asyncio else 'a synchronous'} client: {wanted}. Or let {owner}.from_url(url, ...) "
        "build one."
    )


def _describe(client: object, asyncio: bool, glide: bool) -> str:
    """Say what a value that is not a usable client is, for the TypeError."""
    if isinstance(client, str):
        url = ": a URL goes to from_url()" if "://" in client else ""
        return f"a string ({redact(client)!r}), not a client{url}"
    if isinstance(client, (valkey.ConnectionPool, valkey.asyncio.ConnectionPool)):
        module = "valkey.asyncio" if asyncio else "valkey"
        return f"a connection pool, not a client: wrap it, {module}.Valkey(connection_pool=pool)"
    if not asyncio and is_asyncio(client):
        return "an asyncio client, where a synchronous one is needed"
    if is_glide(client) and not glide:
        return "a GLIDE client, which it does not take yet (ValkeySessionManager does)"
    if asyncio and (isinstance(client, (valkey.Valkey, ValkeyCluster)) or is_glide(client)):
        return "a synchronous client, but the SDK awaits its Storage on event loops"
    return "something that is not a Valkey client"


def driver_for(client: Any) -> Driver:
    """Return the driver of ``client``: GLIDE's for a GLIDE client, asyncio for a ``valkey.asyncio`` one, else sync."""
    if isinstance(client, valkey.asyncio.Valkey | valkey.asyncio.ValkeyCluster):
        return AsyncioDriver(client)
    if glide_kind(client) is not None:
        from .driver_glide import GlideDriver  # GLIDE is an extra: imported once a GLIDE client shows up

        return GlideDriver(client)
    return SyncDriver(client)


def check_glide(client: Any, owner: str) -> None:
    """``TypeError`` for a GLIDE client that cannot keep the contract: one that compresses values."""
    config = getattr(client, "config", None) or getattr(client, "_config", None)
    compression = getattr(config, "compression", None)
    if compression is not None and getattr(compression, "enabled", True):
        raise TypeError(
            f"client=<{type(client).__qualname__}> | {owner} got a GLIDE client with compression on: it would "
            "change the stored values (the contract says what they are). Make it without compression= "
            '(compression="zstd" on the manager compresses values the contract\'s way).'
        )


#: The client settings ``from_url(..., client="glide")`` takes by name (the URL says where and who).
GLIDE_SETTINGS = ("request_timeout", "connection_timeout", "ssl_ca_certs", "client_name")
#: ``request_timeout`` (ms) of a GLIDE client ``from_url`` builds: as valkey-py's ``socket_timeout`` there.
REQUEST_TIMEOUT_MS = 5000
CONNECTION_TIMEOUT_MS = 2000


def glide_configuration(url: str, *, cluster: bool = False, **settings: Any) -> Any:
    """Return the GLIDE configuration for ``url``: ``glide_sync`` and asyncio ``glide`` clients are made from it.

    ``valkey://[user:password@]host:port[/db]``, ``valkeys://`` for TLS, ``redis://``, ``rediss://``. GLIDE has no
    URL parser of its own. Settings by name: ``request_timeout`` and ``connection_timeout`` (ms; defaults 5000
    and 2000), ``ssl_ca_certs`` (a CA file to trust, TLS), ``client_name``. No compression (values stay what the
    contract says), RESP3 as GLIDE defaults.

    An asyncio GLIDE client belongs to the loop it is made on: ``await glide.GlideClient.create(config)`` there.

    Raises:
        ValueError: If ``url`` is not a valkey://, valkeys://, redis:// or rediss:// URL.
        TypeError: If a setting is unknown, or ``ssl_ca_certs`` is given without TLS.
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    import glide_sync

    parts = urlsplit(url)
    if parts.scheme not in ("valkey", "valkeys", "redis", "rediss"):
        raise ValueError(
            f"url=<{redact(url)}> | a GLIDE client takes valkey://, valkeys:// (TLS), redis:// or rediss:// (TLS) URLs"
        )
    query = dict(parse_qsl(parts.query))
    settings = {**{name: value for name, value in query.items() if name in GLIDE_SETTINGS}, **settings}
    for name in settings:
        if name not in GLIDE_SETTINGS:
            raise unknown_option("from_url(client='glide')", name, GLIDE_SETTINGS, f"the settings {GLIDE_SETTINGS}")
    tls = parts.scheme in ("valkeys", "rediss")
    advanced: dict[str, Any] = {"connection_timeout": int(settings.get("connection_timeout", CONNECTION_TIMEOUT_MS))}
    if "ssl_ca_certs" in settings:
        if not tls:
            raise TypeError(f"url=<{redact(url)}> | ssl_ca_certs needs a valkeys:// or rediss:// URL (TLS)")
        with open(settings["ssl_ca_certs"], "rb") as ca:
            advanced["tls_config"] = glide_sync.TlsAdvancedConfiguration(root_pem_cacerts=ca.read())
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    database = int(parts.path.strip("/") or 0) if parts.path.strip("/") else None
    options: dict[str, Any] = {
        "use_tls": tls,
        "credentials": glide_sync.ServerCredentials(password, username) if password else None,
        "request_timeout": int(settings.get("request_timeout", REQUEST_TIMEOUT_MS)),
        "client_name": settings.get("client_name"),
        "lazy_connect": True,  # as valkey-py's: the first command connects, and says why it could not
    }
    addresses = [glide_sync.NodeAddress(parts.hostname or "localhost", parts.port or 6379)]
    if cluster:
        on_cluster = glide_sync.AdvancedGlideClusterClientConfiguration(**advanced)
        return glide_sync.GlideClusterClientConfiguration(addresses, advanced_config=on_cluster, **options)
    if database:
        options["database_id"] = database
    standalone = glide_sync.AdvancedGlideClientConfiguration(**advanced)
    return glide_sync.GlideClientConfiguration(addresses, advanced_config=standalone, **options)


def glide_client(url: str, cluster: bool, settings: dict[str, Any]) -> Any:
    """Return a ``glide_sync`` client for ``url`` (see :func:`glide_configuration`)."""
    import glide_sync
    from glide_shared.exceptions import GlideError

    from .driver_glide import valkey_error

    config = glide_configuration(url, cluster=cluster, **settings)
    try:
        return (glide_sync.GlideClusterClient if cluster else glide_sync.GlideClient).create(config)
    except GlideError as error:
        raise valkey_error(error) from error

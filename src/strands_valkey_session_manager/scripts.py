"""Server-side Lua scripts: loaded once, called as FUNCTIONs (or by SHA), reloaded when the server lost them.

The scripts live in ``lua/``: ``base.lua`` is put first in every one (ValkeyStorage's too), and
``session.lua`` after it in the session scripts, which are called one way (:func:`run`): KEYS are the
session record, its index, the script's own keys, the lock key of a fenced write, then the keys a walk of
the session needs; ARGV the ttl, the fence token, how many walk keys, then the script's own arguments.
Every key a script touches is declared, as Valkey's scripting rules (and a cluster's migrating slots)
require. Errors the scripts raise start with a code that ``errors.error_code`` reads back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Any

import valkey
from valkey.client import NEVER_DECODE
from valkey.exceptions import NoScriptError, ResponseError

from . import errors, replication, values
from .connection import driver_for
from .driver import Driver, drive

logger = logging.getLogger(__name__)


def _lua(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


#: The preludes: the base for every script, the session part for the session scripts.
BASE = (_lua(__package__, "base"),)
SESSION = (
    *BASE,
    f"local SEALED = '{values.MAGIC}'  -- how a sealed value starts (values.py)",
    _lua(__package__, "session"),
)

#: How many times a session script may learn undeclared keys of its session and call again: once per level
#: of the index it did not know (members, then their messages), more only while other writers add keys.
MAX_WALKS = 6


class Script:
    """One Lua script: its source (shebang first, then its prelude, then its body) and its SHA.

    A script of a :class:`Library` is also a Valkey FUNCTION, called by FCALL where the server and the client
    allow it (see ``_run``), which skips running the prelude on every call.
    """

    def __init__(self, name: str, package: str = __package__, prelude: tuple[str, ...] = SESSION) -> None:
        """Load ``lua/<name>.lua`` of ``package`` (this one, or ``storage``) and put ``prelude`` before it."""
        body = _lua(package, name)
        shebang, _, self.body = body.partition("\n") if body.startswith("#!") else ("", "", body)
        self.name = name
        self.flags = shebang.partition("flags=")[2].split(",") if "flags=" in shebang else []
        self.source = "\n".join(part for part in (shebang, *prelude, self.body) if part)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self.function = ""  # its FUNCTION name, once a Library registers it
        self.library: Library | None = None
        ALL.append(self)

    async def _run(self, call: Callable[..., Awaitable[Any]], keys: list[str], args: list[Any], fcall: bool) -> Any:
        """Run the script through ``call(*command)``, which sends one command on the client at hand.

        With ``fcall``: FCALL, and when the server lost the library (restart without persistence, a new node,
        FUNCTION FLUSH) load it and retry. Else, or once FCALL or FUNCTION LOAD is refused (an ACL rule
        without them, a server without functions): EVALSHA, and on NOSCRIPT (restart, failover, SCRIPT FLUSH)
        load the script and retry. This is the one definition for both kinds of client: a synchronous client's
        ``call`` returns without suspending.
        """
        if fcall and self.library is not None:
            command = ("FCALL", self.function, len(keys), *keys, *args)
            try:
                try:
                    return await call(*command)
                except ResponseError as error:
                    if "function not found" not in str(error).lower():
                        raise
                await call("FUNCTION", "LOAD", "REPLACE", self.library.source)
                return await call(*command)
            except ResponseError as error:
                if not _functions_refused(error):
                    raise
                raise FunctionsRefused from error
        evalsha = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await call(*evalsha)
        except NoScriptError:
            await call("SCRIPT LOAD", self.source)  # a cluster client loads it on every primary
            return await call(*evalsha)

    async def on(
        self,
        driver: Driver,
        keys: list[str],
        args: list[Any],
        wait: replication.WaitForReplicas | None = None,
        **options: Any,
    ) -> Any:
        """Run the script through ``driver``; with ``wait``, ``WAIT`` for replicas in the same round trip.

        On a cluster the call follows the session's slot while it moves (replication.execute_on); with
        ``target_nodes=`` it goes there. ``options`` go with the script's call (``NEVER_DECODE``: its reply as
        bytes). A client on which FCALL or FUNCTION LOAD is refused calls by EVALSHA from then on.
        """

        async def call(*command: Any) -> Any:
            if command[0] in _SCRIPT_CALLS:
                return await replication.execute_on(driver, keys[0] if keys else "", command, wait, **options)
            return await replication.execute_on(driver, keys[0] if keys else "", command, None)

        while True:
            try:
                return await self._run(call, keys, args, driver.client not in _NO_FUNCTIONS)
            except FunctionsRefused as refused:
                logger.debug("calling the scripts by EVALSHA on this client: %s", refused.__cause__)
                _NO_FUNCTIONS.add(driver.client)

    def __call__(
        self,
        client: valkey.Valkey | Any,
        keys: list[str],
        args: list[Any],
        wait: replication.WaitForReplicas | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`on` a synchronous client (valkey-py's or ``glide_sync``)."""
        return drive(self.on(driver_for(client), keys, args, wait, **options))


class Library:
    """Scripts registered as the FUNCTIONs of one Valkey library, loaded once per server (``FUNCTION LOAD``).

    Its name carries the hash of its source, so two versions of this package on one server each keep their
    own library. The prelude is defined once per load, not once per call as for EVALSHA.
    """

    def __init__(self, scripts: list[Script], prelude: tuple[str, ...] = SESSION) -> None:
        """Build the library's source from the scripts' bodies; each script is then called by its FUNCTION name."""
        bodies = "".join(f"{script.name}\n{script.flags}\n{script.body}\n" for script in scripts)
        self.name = "strands_valkey_" + hashlib.sha1(("".join(prelude) + bodies).encode("utf-8")).hexdigest()[:12]
        registrations = []
        for script in scripts:
            script.function, script.library = f"{self.name}_{script.name}", self
            flags = ", ".join(f"'{flag}'" for flag in script.flags)
            registrations.append(
                f"redis.register_function{{function_name = '{script.function}', flags = {{ {flags} }},\n"
                f"callback = function(KEYS, ARGV)\n{script.body}\nend}}"
            )
        self.source = "\n".join((f"#!lua name={self.name}", *prelude, *registrations))


class FunctionsRefused(Exception):
    """FCALL or FUNCTION LOAD was refused (ACL, or a server without functions): use EVALSHA on that client."""


#: Clients on which FCALL or FUNCTION LOAD was refused: their scripts are called by EVALSHA.
_NO_FUNCTIONS: weakref.WeakSet[Any] = weakref.WeakSet()
#: The commands that run a script (a write, for wait_replicas), as opposed to loading one.
_SCRIPT_CALLS = ("EVALSHA", "FCALL")


def _functions_refused(error: ResponseError) -> bool:
    """Whether FCALL or FUNCTION LOAD itself was refused (not a command run inside the function)."""
    text = str(error).lower()
    about_functions = "'fcall'" in text or "'function" in text or "unknown command" in text
    return about_functions and "script:" not in text


async def run_on(
    script: Script,
    driver: Driver,
    keys: list[str],
    args: list[Any],
    *,
    ttl_ms: int = 0,
    fence: tuple[str, str] | None = None,
    walk: Iterable[str] = (),
    known: dict[str, None] | None = None,
    wait: replication.WaitForReplicas | None = None,
    raw: bool = False,
    session: bool = True,
) -> Any:
    """Run a session script (lua/session.lua says how it is called), declaring what its walk must reach.

    Args:
        script: The session script.
        driver: The client's driver (driver.py).
        keys: The session record key, its index key, then the script's own keys.
        args: The script's own arguments.
        ttl_ms: The session's ttl (0: none of its own).
        fence: The lock key and token of a write fenced by the session lock.
        walk: Keys of the session to declare from the first call (a script that always walks).
        known: Keys of the session the caller knows of, declared once the script asked for keys; the keys it
            asked for are added to it, so a caller that keeps it declares them at once the next time.
        wait: ``WAIT`` for replicas after the script, in the same round trip.
        raw: The reply as bytes, whatever the client decodes (a stored value, which may be binary: values.py).
        session: False for a script that is no session script (ValkeyStorage's): ``args`` are all its ARGV, and
            the keys it must reach are declared after ``keys``.

    A script that must walk the whole session (a due TTL refresh, a delete) and reaches keys that were not
    declared fails with ``UNDECLARED`` and their names, having changed nothing; they are declared and the
    script called again (at most ``MAX_WALKS`` times). The round trips this takes depend on the levels of
    the index that were not known, never on the number of keys.
    """
    own = [*keys, fence[0]] if fence else keys
    extra = list(walk)
    for _ in range(MAX_WALKS):
        try:
            options = {NEVER_DECODE: True} if raw else {}
            argv = [ttl_ms, fence[1] if fence else "", len(extra), *args] if session else args
            return await script.on(driver, [*own, *extra], argv, wait, **options)
        except ResponseError as error:
            learnt = undeclared(error, keys[0])
        if known is not None:  # declare every key known, not only those asked for: fewer calls to come
            known.update(dict.fromkeys(learnt))
            declared = set(extra)
            learnt = [key for key in list(known) if key not in declared]  # list(): one step, other threads add
        extra += learnt
    raise errors.SessionChanging(f"{keys[0]}: its keys changed during {MAX_WALKS} calls of {script.name}")


def run(script: Script, client: valkey.Valkey | Any, keys: list[str], args: list[Any], **how: Any) -> Any:
    """:func:`run_on` a synchronous client (valkey-py's or ``glide_sync``)."""
    return drive(run_on(script, driver_for(client), keys, args, **how))


def run_each(
    script: Script,
    client: valkey.Valkey | Any,
    calls: list[tuple[list[str], list[Any], list[str]]],
    again: Callable[[list[str], list[Any], list[str]], Any] | None = None,
) -> list[Any]:
    """Run a session script once per session, unfenced and with no ttl, in one pipeline (a round trip per node).

    Each call is (keys, args, walk) as for :func:`run`, sent by SHA with every key of its walk declared. A call
    that did not simply succeed (keys it had to learn, ``NOSCRIPT``, a slot moving, any error) is run again on
    its own by ``again(keys, args, walk)``, by default :func:`run`, which learns, loads and follows as it does.
    Returns each call's reply, in order.
    """
    again = again or (lambda keys, args, walk: run(script, client, keys, args, walk=walk))
    sent = [
        (keys[0], [("EVALSHA", script.sha, len(keys) + len(walk), *keys, *walk, 0, "", len(walk), *args)])
        for keys, args, walk in calls
    ]
    replies = [reply for (reply,) in drive(replication.each_slot_on(driver_for(client), sent))]
    return [
        again(keys, args, walk) if isinstance(reply, Exception) else reply
        for (keys, args, walk), reply in zip(calls, replies, strict=True)
    ]


async def delete_session(
    call: Callable[[list[Any], list[str]], Awaitable[int]], walk: list[str], record: Any = ""
) -> int:
    """Delete a session by lua/delete_session.lua, sent by ``call(args, walk)``; returns how many keys went.

    Atomically, as a rule. A walk must declare every key it reaches, and writers adding messages faster than
    calls can learn them keep the atomic delete from ever running (``SessionChanging``): then the record goes
    first, alone (if it is still ``record``, when given): no write lands in a session without its record (a
    script fails NOSESSION, a plain append takes itself back), and the remnants go next, in a walk nothing
    outruns. A crash between the two leaves remnants, which keep their deadline and which the next open of the
    id (or a delete) deletes first.
    """
    try:
        return await call(["", record], walk)
    except errors.SessionChanging:
        logger.debug("key=<%s> | writers kept adding keys: deleting the record first", walk[:1])
    deleted = await call(["record", record], [])
    return deleted + await call(["remnants", ""], walk) if deleted or not record else 0


def undeclared(error: ResponseError, key: str) -> list[str]:
    """Return the keys a script reached without their being declared (an ``UNDECLARED`` reply); else raise ``error``."""
    code, detail = errors.error_code(error)
    if code != errors.UNDECLARED:
        raise error
    learnt: list[str] = json.loads(detail)
    logger.debug("key=<%s>, keys=<%d> | declaring the keys the script must reach, calling again", key, len(learnt))
    return learnt


#: Every script defined, for tests and tools that load them up front (:func:`load`).
ALL: list[Script] = []

READ_RECORD = Script("read_record")
WRITE_RECORD = Script("write_record")
APPEND_MESSAGES = Script("append_messages")
SETTLE_APPEND = Script("settle_append")
DELETE_SESSION = Script("delete_session")
LOCK = Script("lock")
KEEP_ALIVE = Script("keep_alive")
# The admin scripts (cli/store.py): the CLI's session walks reuse walk() rather than a second walker.
SESSION_KEYS = Script("session_keys")
DUMP_SESSION = Script("dump_session")
IMPORT_SESSION = Script("import_session")
EXPIRE_SESSION = Script("expire_session")

#: The session scripts, as FUNCTIONs (called by FCALL unless refused on that client, see ``Script._run``).
SESSION_LIBRARY = Library(
    [
        READ_RECORD,
        WRITE_RECORD,
        APPEND_MESSAGES,
        SETTLE_APPEND,
        DELETE_SESSION,
        LOCK,
        KEEP_ALIVE,
        SESSION_KEYS,
        DUMP_SESSION,
    ]
    + [IMPORT_SESSION, EXPIRE_SESSION]
)

# An owner's listing (directory.py): scripts on the owner's slot, with the base prelude only.
OWNER_TOUCH = Script("owner_touch", prelude=BASE)
OWNER_PAGE = Script("owner_page", prelude=BASE)
OWNER_FORGET = Script("owner_forget", prelude=BASE)
OWNER_LIBRARY = Library([OWNER_TOUCH, OWNER_PAGE, OWNER_FORGET], prelude=BASE)


def load(client: Any) -> None:
    """Load every script (``SCRIPT LOAD``) and the libraries (``FUNCTION LOAD``), on every primary.

    Never needed (a call loads what the server lacks), but a server loaded up front runs every later call
    at its steady cost: tests and benchmarks use it.
    """
    for script in ALL:
        client.script_load(script.source)
    for library in (SESSION_LIBRARY, OWNER_LIBRARY):
        client.function_load(library.source, replace=True)

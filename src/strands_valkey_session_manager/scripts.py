"""Server-side Lua scripts: loaded once, called by SHA, with a fallback when the server lost them.

Every write of a session is one of these scripts, which is where a write becomes atomic. The
scripts live in ``lua/``; ``lua/common.lua`` (prepended to each) holds the one place where TTLs
are refreshed. Errors the scripts raise start with a code that ``errors.error_code`` reads back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import valkey
from valkey.exceptions import NoScriptError

from . import replication

_COMMON = resources.files(__package__).joinpath("lua").joinpath("common.lua").read_text(encoding="utf-8")


class Script:
    """One Lua script: its source (shebang first, then common.lua, then its body) and its SHA."""

    def __init__(self, name: str, package: str = __package__) -> None:
        """Load ``lua/<name>.lua`` of ``package`` (this one, or ``storage``) and prepend the shared helpers."""
        body = resources.files(package).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")
        shebang, _, rest = body.partition("\n") if body.startswith("#!") else ("", "", body)
        self.name = name
        self.source = f"{shebang}\n{_COMMON}\n{rest}" if shebang else f"{_COMMON}\n{rest}"
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        ALL.append(self)

    async def _run(self, call: Callable[..., Awaitable[Any]], keys: list[str], args: list[Any]) -> Any:
        """Run the script through ``call(*command)``, which sends one command on the client at hand.

        EVALSHA, and on NOSCRIPT (restart, failover, SCRIPT FLUSH) load the script and retry. This is the one
        definition for both kinds of client: a synchronous client's ``call`` returns without suspending.
        """
        evalsha = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await call(*evalsha)
        except NoScriptError:
            await call("SCRIPT LOAD", self.source)  # a cluster client loads it on every primary
            return await call(*evalsha)

    def __call__(
        self,
        client: valkey.Valkey | Any,
        keys: list[str],
        args: list[Any],
        wait: replication.WaitForReplicas | None = None,
    ) -> Any:
        """Run the script on a synchronous client; with ``wait``, ``WAIT`` for replicas in the same round trip."""

        async def call(*command: Any) -> Any:  # returns at once: the coroutine never suspends
            return replication.execute(client, keys[0], command, wait if command[0] == "EVALSHA" else None)

        steps = self._run(call, keys, args)
        try:
            steps.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError(f"script {self.name} suspended on a synchronous client")  # pragma: no cover

    async def run_async(self, client: Any, keys: list[str], args: list[Any], **options: Any) -> Any:
        """Run the script on a ``valkey.asyncio`` client; ``options`` go with each command (``target_nodes=``)."""

        async def call(*command: Any) -> Any:
            return await client.execute_command(*command, **options)

        return await self._run(call, keys, args)


#: Every script defined, for tests and tools that load them up front (``SCRIPT LOAD``).
ALL: list[Script] = []

READ_RECORD = Script("read_record")
WRITE_RECORD = Script("write_record")
APPEND_MESSAGES = Script("append_messages")
DELETE_SESSION = Script("delete_session")
LOCK = Script("lock")
KEEP_ALIVE = Script("keep_alive")
# The admin scripts (cli/store.py): the CLI's session walks reuse each_key() rather than a second walker.
SESSION_KEYS = Script("session_keys")
DUMP_SESSION = Script("dump_session")
IMPORT_SESSION = Script("import_session")
EXPIRE_SESSION = Script("expire_session")

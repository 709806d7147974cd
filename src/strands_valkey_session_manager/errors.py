"""What went wrong, said once: script error codes and Valkey errors turned into each part's exception.

The session manager raises the SDK's ``SessionException``, ``ValkeyStorage`` its ``StorageError``; both
say the same thing the same way: the key or operation, what happened, and what to do about it, with the
original error chained. The scripts raise errors whose first word is a code (``fail`` in lua/base.lua);
:func:`error_code` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import OutOfMemoryError, ResponseError, ValkeyError

from .replication import ReplicasNotAcknowledged, SlotMigrating

#: Codes the scripts raise (see ``fail`` in lua/base.lua).
NOSESSION = "NOSESSION"
NOTFOUND = "NOTFOUND"
CONFLICT = "CONFLICT"
BADVALUE = "BADVALUE"
FENCED = "FENCED"
FOREIGN = "FOREIGN"  # the session record was not written by this library: nothing changed
UNDECLARED = "UNDECLARED"  # a walk reached keys the call did not declare (scripts.run declares them, calls again)
CODES = (NOSESSION, NOTFOUND, CONFLICT, BADVALUE, FENCED, FOREIGN, UNDECLARED)

#: The Valkey type of the keys PyPI's strands-valkey-session-manager 0.1.0 wrote (RedisJSON documents).
REDISJSON_TYPE = "ReJSON-RL"
#: What lua/session.lua says a string at a session record key holds when this library did not write it.
NOT_A_RECORD = "not a session record"


class SessionChanging(ValkeyError):
    """Other writers kept adding keys to a session while a script was learning them; it did not run."""


def error_code(error: ResponseError) -> tuple[str, str]:
    """Split a script's error reply into its code and detail (``("", text)`` for other errors)."""
    text = str(error)
    code, _, detail = text.partition(" ")
    if code in CODES:
        # The server appends " script: <sha>, on @user_script:<line>." to errors raised in scripts.
        return code, detail.split(" script: ")[0]
    return "", text


def refused(error: BaseException | None) -> bool:
    """Whether a script refused the call on purpose (a code, nothing written), unlike a failure on the wire."""
    return isinstance(error, ResponseError) and bool(error_code(error)[0])


def session_gone(error: BaseException | None) -> bool:
    """Whether a script refused the call because the session no longer exists (deleted, or expired)."""
    return isinstance(error, ResponseError) and error_code(error)[0] == NOSESSION


def explain(error: Exception, operation: str, key: str, not_found: str = "") -> str:
    """Say what ``error`` means for ``operation`` on ``key``, and what to do."""
    if isinstance(error, OutOfMemoryError):
        return (
            f"key=<{key}> | {operation} refused, nothing was written: Valkey is out of memory (maxmemory "
            f"reached under a noeviction policy). Free memory or raise maxmemory, then retry. ({error})"
        )
    if isinstance(error, ResponseError):
        code, detail = error_code(error)
        if code == NOTFOUND and not_found:
            return not_found
        if code == CONFLICT:
            return (
                f"key=<{detail}> | {operation} refused: that message id already holds a different message. "
                "Another writer is appending to the same (session_id, agent_id); give each agent its own "
                "agent_id (Agent(agent_id=...)), or open the session again to continue from what is stored. "
                "If there is no other writer, the session's records were evicted or deleted while its "
                "messages remain: run Valkey with maxmemory-policy noeviction."
            )
        if code == NOSESSION:
            return (
                f"key=<{detail}> | {operation} refused: the session no longer exists (it was deleted, or "
                "expired after ttl idle seconds). Open a new ValkeySessionManager to start it again."
            )
        if code == FENCED:
            return (
                f"key=<{detail}> | {operation} refused: this invocation lost the session lock (its lease ran "
                "out unrenewed: the process was paused, stalled or cut off) and another invocation may hold it "
                "now. Nothing was written; invoke the agent again to continue from what is stored."
            )
        if code == FOREIGN:
            return foreign(operation, *detail.partition(" ")[::2])
        if code == BADVALUE:
            bad_key, _, reason = detail.partition(" ")
            return (
                f"key=<{bad_key}> | {operation} failed: the key holds a value this library did not write "
                f"({reason}). Delete or repair that key."
            )
        return f"key=<{key}> | {operation} failed: {error}"
    if isinstance(error, SlotMigrating):
        return (
            f"key=<{key}> | {operation} not done: the key's cluster slot is being migrated to another node "
            f"(resharding) and stayed so for longer than this call waits ({error}). Nothing was written; the "
            "write is safe to repeat once the migration has finished."
        )
    if isinstance(error, SessionChanging):
        return (
            f"key=<{key}> | {operation} not done: other writers kept adding keys to the session while this "
            f"call was finding them ({error}). Nothing was changed; it is safe to repeat."
        )
    if isinstance(error, ReplicasNotAcknowledged):
        return (
            f"key=<{key}> | {operation} not confirmed: {error}. Check the replicas (INFO replication), or "
            "raise wait_timeout_ms; the write is safe to repeat (an agent re-sends a message with its next one)."
        )
    if isinstance(error, UnicodeDecodeError):
        return (
            f"key=<{key}> | {operation} failed: it holds a value that is not UTF-8 text, which a client with "
            f"decode_responses=True cannot read ({error}). This library writes UTF-8 JSON, or values it reads as "
            "bytes (encrypted, compressed): another writer put it there. Delete or repair that key."
        )
    if isinstance(error, ValkeyConnectionError) and "Too many connections" in str(error):
        return (
            f"key=<{key}> | {operation} failed: the client's connection pool is exhausted ({error}); the server "
            "was not asked. Share the client through a valkey.BlockingConnectionPool (callers wait for a free "
            "connection) or raise the pool's max_connections."
        )
    return (
        f"key=<{key}> | {operation} failed: {type(error).__name__}: {error}. Check that Valkey is reachable "
        "and the client's url, credentials and timeouts."
    )


def foreign(operation: str, key: str, holds: str) -> str:
    """Say that ``key`` holds ``holds`` (a Valkey type, or "not a session record"), so ``operation`` left it alone."""
    if holds == REDISJSON_TYPE:
        return (
            f"key=<{key}> | {operation} refused, nothing changed: the key holds a RedisJSON document (type "
            f"{REDISJSON_TYPE}), which strands-valkey-session-manager 0.1.0 (RedisJSON based) wrote; this version "
            "does not read it. Delete the key if that session is no longer needed, keep 0.1.0 for those sessions, "
            "or give this version another key_prefix."
        )
    what = f"a string that is {holds}" if holds == NOT_A_RECORD else f"a value of type {holds}"
    return (
        f"key=<{key}> | {operation} refused, nothing changed: the key holds {what}, which this library did not "
        "write (another application may use the same key prefix). Use another key_prefix, or remove that key "
        "yourself if it is not needed."
    )


@contextmanager
def translated(exception: type[Exception], operation: str, key: str, not_found: str = "") -> Iterator[None]:
    """Turn anything Valkey raises inside the block into ``exception`` naming the operation and key.

    That includes a reply a ``decode_responses=True`` client could not decode (``UnicodeDecodeError``): a
    value that is not UTF-8, which this library never writes.

    Args:
        exception: What this part raises (``SessionException``, ``StorageError``).
        operation: What was being done, for the message ("append message").
        key: The key it was about.
        not_found: The message for a ``NOTFOUND`` refusal (the SDK's own "... does not exist" wording).
    """
    try:
        yield
    except (ValkeyError, UnicodeDecodeError) as error:
        raise exception(explain(error, operation, key, not_found)) from error

"""OpenTelemetry spans and metrics of session operations: one tracer, one meter, one way to wrap an operation.

Every session operation (what the user, or the SDK on the user's behalf, did: restore an agent, append a
message, sync an agent, take the session lock, keep a session alive, a ``ValkeyStorage`` read...) runs
inside :class:`Operation`, a context manager that works alike around synchronous code and inside
``async def``: one span, a child of whatever span is current (the agent's invocation span for the hooks),
and the ``db.client.operation.duration`` histogram. An operation run inside another (the SDK's restore
reads the agent, then lists its messages) adds to the outer one rather than opening a span of its own: a
span is what the user did, never a command. What only the code knows (bytes written, plain commands or a
script, messages restored, re-sent messages) is noted on the current operation where it is known
(:func:`wrote`, :func:`restored`, ...).

Attributes follow OpenTelemetry's database client conventions, ``db.system.name`` being ``valkey`` (the
registry has no Valkey value yet; it is the product this library is for, whichever server answers). No
stored value is ever recorded, and the session id (a user identifier) only if the environment variable
``STRANDS_VALKEY_TRACE_SESSION_ID`` is ``true`` (or ``1``) when the manager or storage is created.

With no tracer or meter provider configured, an operation does nothing but check that (:func:`live`): the
hooks' time per turn is that of a manager without telemetry (docs/observability.md has the figures).
Attributes are built only for a span that records.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER, OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.trace import SpanKind, Status, StatusCode
from valkey.exceptions import ResponseError

from . import __version__, errors

NAME = "strands_valkey_session_manager"
TRACER = trace.get_tracer(NAME, __version__)
METER = metrics.get_meter(NAME, __version__)

if OTEL_PYTHON_TRACER_PROVIDER in os.environ or OTEL_PYTHON_METER_PROVIDER in os.environ:
    trace.get_tracer_provider(), metrics.get_meter_provider()  # providers named in the environment: load them now

_live = False


def live() -> bool:
    """Whether a tracer or meter provider is set; until one is, operations do nothing at all (free when off).

    Reads the API's globals (opentelemetry-api 1.x: ``trace._TRACER_PROVIDER``, ``metrics._internal.
    _METER_PROVIDER``) since ``get_tracer_provider()`` reads ``os.environ`` on every call (2 us, more than
    the rest of an operation). A provider, once set, stays: so does the answer.
    """
    global _live
    if not _live:
        # a later API without these names: taken as live (correct, a few microseconds dearer when off)
        found = (getattr(trace, "_TRACER_PROVIDER", True), getattr(metrics_internal, "_METER_PROVIDER", True))
        _live = any(provider is not None for provider in found)
    return _live


#: ``db.system.name``: the registry has no Valkey value yet (``redis`` would misname a Valkey server).
SYSTEM = "valkey"
#: Set to ``true`` (or ``1``) to record the session id (``session.id``) on spans; read when a manager is made.
SESSION_ID_ENV = "STRANDS_VALKEY_TRACE_SESSION_ID"

# -- attributes: OpenTelemetry's database client conventions, then this library's ---------------------------------
DB_SYSTEM = "db.system.name"
DB_OPERATION = "db.operation.name"
DB_NAMESPACE = "db.namespace"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
SESSION_ID = "session.id"
AGENT_ID = "gen_ai.agent.id"
MULTI_AGENT_ID = "strands_valkey.multi_agent.id"
MESSAGE_ID = "strands_valkey.message.id"
MESSAGES_RESTORED = "strands_valkey.messages.restored"
MESSAGES_WRITTEN = "strands_valkey.messages.written"
BYTES_WRITTEN = "strands_valkey.bytes.written"
WRITE_MODE = "strands_valkey.write.mode"
RETRIES = "strands_valkey.retries"
CONFLICT = "strands_valkey.conflict"
LOCK_ATTEMPTS = "strands_valkey.lock.attempts"
LOCK_WAIT = "strands_valkey.lock.wait"

#: ``strands_valkey.write.mode``: plain commands (``MULTI``/``EXEC``, ``SET``) or a Lua script.
PLAIN = "plain"
SCRIPT = "script"

# -- operations (span names and db.operation.name) -----------------------------------------------------------------
CREATE_SESSION = "session.create"
READ_SESSION = "session.read"
DELETE_SESSION = "session.delete"
RESTORE_AGENT = "session.restore_agent"
RESTORE_MULTI_AGENT = "session.restore_multi_agent"
APPEND_MESSAGE = "session.append_message"
SYNC_AGENT = "session.sync_agent"
SYNC_MULTI_AGENT = "session.sync_multi_agent"
REDACT_MESSAGE = "session.redact_message"
CREATE_AGENT = "session.create_agent"
READ_AGENT = "session.read_agent"
UPDATE_AGENT = "session.update_agent"
CREATE_MESSAGE = "session.create_message"
READ_MESSAGE = "session.read_message"
UPDATE_MESSAGE = "session.update_message"
LIST_MESSAGES = "session.list_messages"
CREATE_MULTI_AGENT = "session.create_multi_agent"
READ_MULTI_AGENT = "session.read_multi_agent"
UPDATE_MULTI_AGENT = "session.update_multi_agent"
KEEP_ALIVE = "session.keep_alive"
LOCK_ACQUIRE = "session.lock.acquire"
LOCK_RENEW = "session.lock.renew"
LOCK_RELEASE = "session.lock.release"
STORAGE_READ = "storage.read"
STORAGE_WRITE = "storage.write"
STORAGE_DELETE = "storage.delete"
STORAGE_LIST = "storage.list"
STORAGE_SEARCH = "storage.search"
LIST_SESSIONS = "sessions.list"
ERASE_SESSIONS = "sessions.erase"

# -- metrics -------------------------------------------------------------------------------------------------------
DURATION = METER.create_histogram(
    "db.client.operation.duration",
    unit="s",
    description="Duration of session operations, by db.operation.name, error.type (absent: success) and write mode.",
    explicit_bucket_boundaries_advisory=[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0],
)
MESSAGES = METER.create_counter("strands_valkey.messages.written", "{message}", "Messages written, by write mode.")
BYTES = METER.create_counter("strands_valkey.bytes.written", "By", "Bytes of records written, by write mode.")
RESTORED = METER.create_counter("strands_valkey.messages.restored", "{message}", "Messages read by restores.")
CONFLICTS = METER.create_counter("strands_valkey.conflicts", "{conflict}", "Writes refused: a different message.")
RETRIES_SENT = METER.create_counter("strands_valkey.retries", "{message}", "Messages re-sent after a failed write.")
REFRESHES = METER.create_counter("strands_valkey.refreshes", "{refresh}", "Keep-alives of a running invocation.")
LOCK_WAITS = METER.create_histogram(
    "strands_valkey.lock.wait",
    unit="s",
    description="Time spent taking the session lock, by error.type (absent: taken).",
    explicit_bucket_boundaries_advisory=[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
)
LOCK_REFUSALS = METER.create_counter("strands_valkey.lock.refusals", "{refusal}", "Locks not taken in lock_timeout.")


class Target:
    """Where a manager's (or storage's) operations go: the server attributes, worked out once."""

    def __init__(self, client: Any = None) -> None:
        """Read host, port and database from ``client`` (any valkey-py client; unknown ones give none)."""
        host, port, database = _server(client)
        self.attributes: dict[str, Any] = {DB_SYSTEM: SYSTEM, DB_NAMESPACE: str(database)}
        if host is not None:
            self.attributes[SERVER_ADDRESS] = host
        if port is not None:
            self.attributes[SERVER_PORT] = int(port)
        self.session_ids = os.environ.get(SESSION_ID_ENV, "").strip().lower() in ("1", "true", "yes")
        self._starts: dict[str, dict[str, Any]] = {}

    def start(self, operation: str) -> dict[str, Any]:
        """Return the attributes every span of ``operation`` starts with (one dict per operation, made once)."""
        found = self._starts.get(operation)
        if found is None:
            found = self._starts[operation] = {**self.attributes, DB_OPERATION: operation}
        return found


def _server(client: Any) -> tuple[str | None, int | None, int]:
    """Host (or unix socket path), port and database number of a valkey-py client."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:  # standalone
        settings = getattr(pool, "connection_kwargs", {})
        return settings.get("host") or settings.get("path"), settings.get("port"), settings.get("db", 0) or 0
    node = None
    get_default_node = getattr(client, "get_default_node", None)
    if get_default_node is not None:
        node = get_default_node()
    if node is None:  # an asyncio cluster not yet connected: the node it was given
        nodes = getattr(client, "startup_nodes", None) or []
        node = nodes[0] if nodes else None
    return getattr(node, "host", None), getattr(node, "port", None), 0


_NOWHERE = Target()


def target(owner: Any) -> Target:
    """Return the :class:`Target` of a manager (made from its ``client`` on first use) or a storage (made with it)."""
    try:
        found: Target = owner._telemetry_target
        return found
    except AttributeError:
        pass
    made = Target(getattr(owner, "client", None)) if owner is not None else _NOWHERE
    if owner is not None:
        owner._telemetry_target = made
    return made


#: The outermost operation running in this context (thread, or asyncio task).
_CURRENT: contextvars.ContextVar[Operation | None] = contextvars.ContextVar("strands_valkey_operation", default=None)


class Operation:
    """One session operation: a span, the duration histogram, and what was noted while it ran.

    ``with Operation(name, target, attributes) as op:`` in sync code and in ``async def`` alike. Inside
    another operation it is that one (``__enter__`` returns the outer operation, which the notes go to).
    ``attributes`` is called (for ids) only when the span records.
    """

    __slots__ = (
        "name",
        "target",
        "attributes",
        "span",
        "outer",
        "_reset",
        "_attached",
        "_started",
        "messages",
        "bytes",
        "mode",
        "restored",
        "retries",
        "refreshes",
        "attempts",
        "_inert",
    )

    def __init__(self, name: str, where: Target, attributes: Callable[[], dict[str, Any]] | None = None) -> None:
        """Describe the operation; nothing starts before ``__enter__``."""
        self.name = name
        self.target = where
        self.attributes = attributes
        self.span: trace.Span = trace.INVALID_SPAN
        self.outer: Operation | None = None
        self._reset: contextvars.Token[Operation | None] | None = None
        self._attached: object = None
        self._started = 0.0
        self.messages = self.bytes = self.restored = self.retries = self.refreshes = self.attempts = 0
        self.mode: str | None = None
        self._inert = False

    def __enter__(self) -> Operation:
        """Start the span (a child of the current one), or join the operation already running."""
        if not live():
            self._inert = True
            return self
        outer = _CURRENT.get()
        if outer is not None:
            self.outer = outer
            if self.attributes is not None and outer.span.is_recording():
                found = self.attributes()
                outer.span.set_attributes({key: value for key, value in found.items() if key not in _set(outer)})
            return outer
        self._reset = _CURRENT.set(self)
        span = self.span = TRACER.start_span(self.name, kind=SpanKind.CLIENT, attributes=self.target.start(self.name))
        if span.is_recording():
            if self.attributes is not None:
                span.set_attributes(self.attributes())
            self._attached = otel_context.attach(trace.set_span_in_context(span))
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """End the span and record the metrics (the outermost operation only)."""
        if self.outer is not None or self._inert:
            return
        elapsed = time.perf_counter() - self._started
        assert self._reset is not None
        _CURRENT.reset(self._reset)
        failure = error_type(error) if error is not None and isinstance(error, Exception) else None
        span = self.span
        if span.is_recording():
            self._finish_span(span, error, failure, elapsed)
            otel_context.detach(self._attached)  # type: ignore[arg-type]
            span.end()
        self._record(elapsed, failure)

    def _finish_span(self, span: trace.Span, error: BaseException | None, failure: str | None, elapsed: float) -> None:
        notes: dict[str, Any] = {}
        if self.mode is not None:
            notes[WRITE_MODE] = self.mode
        if self.messages:
            notes[MESSAGES_WRITTEN] = self.messages
        if self.bytes:
            notes[BYTES_WRITTEN] = self.bytes
        if self.restored or self.name == RESTORE_AGENT or self.name == LIST_MESSAGES:
            notes[MESSAGES_RESTORED] = self.restored
        if self.retries:
            notes[RETRIES] = self.retries
        if self.attempts:
            notes[LOCK_ATTEMPTS] = self.attempts
            notes[LOCK_WAIT] = elapsed
        if failure is not None and error is not None:
            notes[ERROR_TYPE] = failure
            if failure == errors.CONFLICT:
                notes[CONFLICT] = True
            span.set_status(Status(StatusCode.ERROR, failure))
            if self.target.session_ids:
                span.record_exception(error)
            else:  # its message names keys, and keys hold the session id
                span.add_event("exception", {"exception.type": _qualified(type(error))})
        span.set_attributes(notes)

    def _record(self, elapsed: float, failure: str | None) -> None:
        attributes = {DB_SYSTEM: SYSTEM, DB_OPERATION: self.name}
        if failure is not None:
            attributes[ERROR_TYPE] = failure
            if failure == errors.CONFLICT:
                CONFLICTS.add(1, attributes)
        if self.mode is not None:
            written = {DB_OPERATION: self.name, WRITE_MODE: self.mode}
            DURATION.record(elapsed, {**attributes, WRITE_MODE: self.mode})
            if self.messages:
                MESSAGES.add(self.messages, written)
            if self.bytes:
                BYTES.add(self.bytes, written)
        else:
            DURATION.record(elapsed, attributes)
        if self.restored:
            RESTORED.add(self.restored, {DB_OPERATION: self.name})
        if self.retries:
            RETRIES_SENT.add(self.retries, {DB_OPERATION: self.name})
        if self.refreshes:
            REFRESHES.add(self.refreshes, {DB_OPERATION: self.name})
        if self.name == LOCK_ACQUIRE:
            LOCK_WAITS.record(elapsed, attributes)
            if failure is not None and failure.endswith(".SessionBusyError"):
                LOCK_REFUSALS.add(1, attributes)


def _set(operation: Operation) -> frozenset[str]:
    """Attribute names a recording span already has (the SDK's span keeps them; an empty set otherwise)."""
    found = getattr(operation.span, "attributes", None)
    return frozenset(found) if found else frozenset()


def _qualified(kind: type[BaseException]) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def error_type(error: BaseException) -> str:
    """``error.type``: a script's refusal code (``CONFLICT``, ``NOSESSION``, ...), else the underlying class's name."""
    cause = error.__cause__ if error.__cause__ is not None and not isinstance(error, ResponseError) else error
    if isinstance(cause, ResponseError):
        code = errors.error_code(cause)[0]
        if code:
            return code
    return _qualified(type(cause))


# -- notes, where each is known --------------------------------------------------------------------------------------


def wrote(mode: str, messages: int, size: int) -> None:
    """Note a write of the current operation: plain commands or a script, messages and bytes it carried."""
    operation = _CURRENT.get()
    if operation is not None:
        operation.mode = SCRIPT if SCRIPT in (mode, operation.mode) else mode
        operation.messages += messages
        operation.bytes += size


def restored(messages: int) -> None:
    """Note messages read to restore an agent."""
    operation = _CURRENT.get()
    if operation is not None:
        operation.restored += messages


def retried(messages: int) -> None:
    """Note messages re-sent with this write (their first write failed on the wire)."""
    operation = _CURRENT.get()
    if operation is not None:
        operation.retries += messages


def refreshed() -> None:
    """Note that the current operation pushed the session's deadline out (a keep-alive)."""
    operation = _CURRENT.get()
    if operation is not None:
        operation.refreshes += 1


def attempted() -> None:
    """Note one attempt to take the session lock."""
    operation = _CURRENT.get()
    if operation is not None:
        operation.attempts += 1


@contextmanager
def within(context: otel_context.Context | None) -> Iterator[None]:
    """Run the block with ``context`` current (the invocation a keep-alive thread works for)."""
    token = otel_context.attach(context) if context is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


# -- the decorator for methods ---------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])

#: Parameters whose values name what an operation is about: (parameter, attribute, how to read it).
_IDS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("agent", AGENT_ID, lambda agent: agent.agent_id),
    ("agent_id", AGENT_ID, str),
    ("session_agent", AGENT_ID, lambda record: record.agent_id),
    ("session_message", MESSAGE_ID, lambda record: record.message_id),
    ("message_id", MESSAGE_ID, int),
    ("multi_agent", MULTI_AGENT_ID, lambda source: source.id),
    ("source", MULTI_AGENT_ID, lambda source: source.id),
    ("multi_agent_id", MULTI_AGENT_ID, str),
)


def traced(name: str) -> Callable[[F], F]:
    """Run a method of a manager (or a storage) as the operation ``name``: sync or ``async def`` alike.

    The ids among its arguments (agent, message, Swarm/Graph; the session id only if opted in) become span
    attributes, read only when the span records.
    """

    def wrap(method: F) -> F:
        parameters = list(inspect.signature(method).parameters)
        picks = [(parameters.index(p), p, attribute, read) for p, attribute, read in _IDS if p in parameters]
        session_at = parameters.index("session_id") if "session_id" in parameters else None

        def operation(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Operation:
            where = target(owner)

            def attributes() -> dict[str, Any]:
                found: dict[str, Any] = {}
                for at, parameter, attribute, read in picks:
                    value = args[at - 1] if at - 1 < len(args) else kwargs.get(parameter)
                    if value is not None:
                        found[attribute] = read(value)
                if where.session_ids:
                    found[SESSION_ID] = (
                        args[session_at - 1]
                        if session_at is not None and session_at - 1 < len(args)
                        else kwargs.get("session_id", getattr(owner, "session_id", None))
                    )
                return {key: value for key, value in found.items() if value is not None}

            return Operation(name, where, attributes)

        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                if not _live and not live():
                    return await method(self, *args, **kwargs)
                with operation(self, args, kwargs):
                    return await method(self, *args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _live and not live():
                return method(self, *args, **kwargs)
            with operation(self, args, kwargs):
                return method(self, *args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap

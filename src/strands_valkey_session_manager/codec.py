"""(De)serialisation of the SDK's session records to the JSON strings stored in Valkey.

Values are plain UTF-8 JSON, readable with ``GET``: ``json.loads(value)`` is the record's
``to_dict()``; or, with encryption or compression on, that JSON sealed (values.py), which every read
here opens first (``values=``). Anything that does not decode to the expected shape raises ``SessionException``
naming the key, so a foreign value never surfaces as a raw traceback from deep inside the SDK.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, TypeVar

from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage, decode_bytes_values, encode_bytes_values

from .values import PLAIN, Values

_BYTES_MARKER = b"__bytes_encoded__"

Record = TypeVar("Record", Session, SessionAgent, SessionMessage)

# The SDK's from_dict() looks these up with inspect.signature() on every call (~0.1 ms a message);
# computed once here, the result is the same and a 1000-message restore is ~100 ms faster.
_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(inspect.signature(cls).parameters) for cls in (Session, SessionAgent, SessionMessage)
}


_DECODER = json.JSONDecoder()
#: The decoder's own scanner: ``json.loads`` less its per-call work (type checks, two whitespace regexes).
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]
#: SessionMessage is a plain dataclass (strands-agents 1.62: no __post_init__, no __slots__): a stored message
#: with every one of its fields is built by setting them, without __init__ (~0.35 ms a 1000-message restore).
_PLAIN_MESSAGE = not hasattr(SessionMessage, "__post_init__") and not hasattr(SessionMessage, "__slots__")
_new = object.__new__
#: A message's fields, in the order to_dict() writes them (dataclasses.fields() is looked up once, here).
_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(SessionMessage))

#: Records as the session manager is handed them: the SDK's dataclasses, or a multi-agent's state dict.
Encodable = Session | SessionAgent | SessionMessage | dict[str, Any]

_TOO_DEEP = "is nested too deeply to encode (Python's recursion limit); nothing was written"
_TOO_DEEP_TO_DECODE = "is nested too deeply to decode (Python's recursion limit)"


def to_dict(record: Encodable) -> dict[str, Any]:
    """Return the dict to store for a record (its ``to_dict()``); ``ValueError`` if nested too deeply."""
    try:
        return record if isinstance(record, dict) else record.to_dict()
    except RecursionError as error:
        raise ValueError(f"{type(record).__name__} {_TOO_DEEP}") from error


def dumps(data: dict[str, Any], default: Any = None) -> bytes:
    """Encode a record as compact UTF-8 JSON (escaped ASCII only where UTF-8 cannot go).

    Raises:
        ValueError: If the record is nested too deeply to encode.
    """
    try:
        try:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=default).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: valid in a Python str, not in UTF-8
            return json.dumps(data, separators=(",", ":"), default=default).encode("ascii")
    except RecursionError as error:
        raise ValueError(f"record {_TOO_DEEP}") from error


def _sdk_json(value: object) -> Any:
    """JSON for what ``json`` cannot encode itself, as the SDK's ``to_dict()`` has it (bytes as base64)."""
    if isinstance(value, bytes):
        return encode_bytes_values(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(record: Encodable) -> bytes:
    """Return the JSON stored for a record: ``dumps(to_dict(record))``.

    A message (encoded on every append) is encoded from its fields as they are, with bytes base64'd on
    the way out: the same JSON, without the two deep copies ``to_dict()`` makes first (``asdict``,
    then ``encode_bytes_values``), at a quarter of the cost.
    """
    if isinstance(record, SessionMessage):
        fields = {name: getattr(record, name) for name in _MESSAGE_FIELDS}
        return dumps(fields, default=_sdk_json)
    return dumps(to_dict(record))


def as_bytes(raw: bytes | str) -> bytes:
    """Return a stored value as bytes, as this library writes it, whether or not the client decodes replies."""
    return raw if isinstance(raw, bytes) else raw.encode("utf-8")


def split_created_at(data: dict[str, Any]) -> tuple[bytes, bytes]:
    """Split a record into its ``created_at`` (a JSON string) and the rest of its JSON object.

    The write script joins them as ``{"created_at":<created_at>,<rest>`` so that an update can
    swap in the stored ``created_at`` without a round trip to read it first.
    """
    rest = dict(data)
    created_at = dumps({"v": rest.pop("created_at")})[5:-1]
    body = dumps(rest)
    return created_at, (b"," + body[1:]) if len(body) > 2 else b"}"


def created_at_of(stored: bytes, key: str, values: Values) -> bytes:
    """Return the ``created_at`` of a stored record as a JSON string (as ``split_created_at`` gives it), or ``b""``.

    A plain record of this library starts with it; a sealed one is opened (``b""`` if it cannot be).
    """
    if stored.startswith(b'{"created_at":"'):
        return stored[14 : stored.index(b'"', 15) + 1]
    if not values.is_sealed(stored):
        return b""
    try:
        created_at = loads(stored, key, values).get("created_at")
    except SessionException:
        return b""
    return dumps({"v": created_at})[5:-1] if isinstance(created_at, str) else b""


def _json_loads(raw: bytes | str) -> Any:
    """``json.loads(raw)``, without its per-call overhead in the usual case (a whole UTF-8 JSON text).

    Anything else (surrounding whitespace, a BOM, another encoding, an error to raise) goes through
    ``json.loads`` itself, so the result and the errors are always ``json.loads``'s.
    """
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        data, end = _SCAN(text, 0)
        if end == len(text):
            return data
    except (ValueError, TypeError, StopIteration):  # UnicodeDecodeError, JSONDecodeError; StopIteration: no value
        pass
    return json.loads(raw)


def loads(raw: bytes | str, key: str, values: Values = PLAIN) -> dict[str, Any]:
    """Decode a stored JSON object (opened by ``values`` first), or raise ``SessionException`` naming the key."""
    return _loads_open(values.open(key, raw), key)


def _loads_open(raw: bytes | str, key: str) -> dict[str, Any]:
    """:func:`loads` of a value already opened."""
    try:
        data = _json_loads(raw)
    except (ValueError, TypeError) as error:
        raise SessionException(f"key=<{key}> | value is not valid JSON: {error}") from error
    except RecursionError as error:
        raise SessionException(f"key=<{key}> | value {_TOO_DEEP_TO_DECODE}") from error
    if not isinstance(data, dict):
        raise SessionException(f"key=<{key}> | value is JSON {type(data).__name__}, expected an object")
    return data


def load_record(cls: type[Record], raw: bytes | str, key: str, values: Values = PLAIN) -> Record:
    """Build a ``Session``, ``SessionAgent`` or ``SessionMessage`` from its stored value (opened by ``values``)."""
    raw = values.open(key, raw)
    fields = _loads_open(raw, key)
    if not fields.keys() <= _FIELDS[cls]:  # extra fields (allowed by the contract) are dropped, as from_dict() does
        fields = {name: value for name, value in fields.items() if name in _FIELDS[cls]}
    if (_BYTES_MARKER in raw) if isinstance(raw, bytes) else (_BYTES_MARKER.decode() in raw):
        try:
            fields = decode_bytes_values(fields)
        except RecursionError as error:
            raise SessionException(f"key=<{key}> | value {_TOO_DEEP_TO_DECODE}") from error
    try:
        record = cls(**fields)
    except TypeError as error:
        raise SessionException(f"key=<{key}> | value is not a {cls.__name__}: {error}") from error
    if isinstance(record, SessionMessage) and not _is_message(record.message):
        raise SessionException(f"key=<{key}> | value is not a SessionMessage: 'message' has no role and content")
    return record


def load_messages(keys: list[str], raws: list[bytes], values: Values = PLAIN) -> list[SessionMessage]:
    """:func:`load_record` of each message (``raws[i]``, stored at ``keys[i]``), in one loop: a restore has thousands.

    A plain UTF-8 JSON object of a message's fields only, with no base64'd bytes (what this library writes)
    is built right here; anything else goes through :func:`load_record`, which opens, checks and names the key.
    """
    fields_of, scan, marker, sealed = _FIELDS[SessionMessage], _SCAN, _BYTES_MARKER, values.is_sealed
    every_field = len(fields_of) if _PLAIN_MESSAGE else -1
    records = []
    for key, raw in zip(keys, raws, strict=True):
        if type(raw) is bytes and marker not in raw and not sealed(raw):
            try:
                text = raw.decode()
                fields, end = scan(text, 0)
                usable = end == len(text) and type(fields) is dict and fields.keys() <= fields_of
            except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError and JSONDecodeError: ValueErrors
                usable = False
            if usable and _is_message(fields.get("message")):
                if len(fields) == every_field:  # what __init__ would do with them, without matching keywords
                    record = _new(SessionMessage)
                    record.__dict__ = fields
                    records.append(record)
                    continue
                try:
                    records.append(SessionMessage(**fields))
                    continue
                except TypeError:  # a field missing: load_record says which
                    pass
        records.append(load_record(SessionMessage, raw, key, values))
    return records


def _is_message(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    return isinstance(message.get("role"), str) and isinstance(message.get("content"), list)

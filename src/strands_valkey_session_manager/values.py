"""What a stored value is: plain, or sealed (compressed, encrypted, or both) behind a small text header.

Every value this package writes or reads goes through :class:`Values` (``seal`` before a write, ``open``
after a read), called by the codec's users with the value's own Valkey key name. A sealed value is a short
ASCII header, by which the scripts tell it is this library's without a key, then the payload as raw bytes
(not base64, which would cost a third more memory: every read of a value asks for bytes, whatever the
client decodes)::

    ~svm1:<flags>:<key id>:<payload>

- ``~svm`` marks a sealed value, ``1`` is the format's version. A plain JSON value starts with ``{``: values
  written before a setting changed stay readable, and new writes follow the new setting.
- ``<flags>``: ``z`` (zstd) or ``g`` (gzip) when the payload is compressed, then ``e`` when it is encrypted
  (AES-256-GCM); compression comes first, encryption last.
- ``<key id>``: the keyring id of the key that encrypted it ('' when not encrypted).
- The payload, encrypted: a fresh 12-byte nonce, then the ciphertext and its 16-byte tag. The associated data
  is the header (up to and including its last ``:``) followed by the value's Valkey key name: a value moved to
  another key, session or agent, or whose header was changed, fails to decrypt instead of showing another
  user's data.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any, overload

from strands.types.exceptions import SessionException

#: The start of every sealed value (lua/session.lua's ``SEALED``, set from here by scripts.py).
MAGIC = "~svm"
VERSION = "1"
_PREFIX = f"{MAGIC}{VERSION}:".encode()
_MAGIC = MAGIC.encode()

#: Values up to this many bytes are never compressed: short chat turns shrink little (or grow), and cost time.
COMPRESS_ABOVE = 1024
#: The default ``max_value_bytes``: 32 MiB (see docs/security.md, "A bound on value size").
DEFAULT_MAX_VALUE_BYTES = 32 * 1024 * 1024
#: The largest ``max_value_bytes``: Valkey's default ``proto-max-bulk-len`` (512 MB), above which it refuses anyway.
MOST_VALUE_BYTES = 512 * 1024 * 1024

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[!-9;-~]{1,64}")  # printable ASCII without ':' or space, 1-64 characters
_COMPRESSION = {"gzip": "g", "zstd": "z"}
_ENCRYPTED = "e"


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as error:
        raise ImportError(
            "encryption needs the cryptography package: pip install 'strands-valkey-session-manager[encryption]'"
        ) from error
    return AESGCM


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as error:
        raise ImportError(
            "compression='zstd' needs the zstandard package: pip install 'strands-valkey-session-manager[zstd]'"
        ) from error
    return zstandard


#: Each thread's zstd compressor and decompressor: made once (a context costs more than a small value's
#: compression), never shared (they are not thread-safe).
_ZSTD = threading.local()


def _zstd_context(kind: str) -> Any:
    context = getattr(_ZSTD, kind, None)
    if context is None:
        context = _zstd().ZstdCompressor(level=3) if kind == "compressor" else _zstd().ZstdDecompressor()
        setattr(_ZSTD, kind, context)
    return context


#: A key provider: returns the 32-byte key of an id (from a KMS, a secrets manager, ...); see docs/security.md.
KeyProvider = Callable[[str], bytes]


class Keyring:
    """Encryption keys by id: the ``current`` one encrypts, every one decrypts, so keys rotate without downtime.

    Example:
        ```python
        Keyring({"2026-12": new_key, "2026-06": old_key}, current="2026-12")
        Keyring(kms_provider, current="2026-12")   # keys fetched (once each) by id, as values need them
        Keyring({"2026-06": old_key}, current=None)  # read only: new values are written unencrypted
        ```
    """

    def __init__(self, keys: Mapping[str, bytes] | KeyProvider, current: str | None) -> None:
        """Hold ``keys`` (id -> 32 raw bytes), or ask ``keys(id)`` for each id when first needed.

        Args:
            keys: The keys by id, or a key provider: a callable returning the key of an id (it may raise
                ``KeyError`` for an id it does not know).
            current: The id of the key that encrypts new values; ``None``: none is (turning encryption off, while
                what was encrypted stays readable).

        Raises:
            ValueError: If an id is not 1-64 printable ASCII characters without ``:`` or spaces, or a key is not 32
                bytes.
            LookupError: If ``current`` has no key (not in ``keys``, or the provider has none for it).
            ImportError: If the ``cryptography`` package is not installed (the ``encryption`` extra).
        """
        self._aead = _aesgcm()
        self._provider: KeyProvider | None = None
        self._ciphers: dict[str, Any] = {}
        if callable(keys):
            self._provider = keys
        else:
            for key_id, key in keys.items():
                self._ciphers[self._check_id(key_id)] = self._cipher(key_id, key)
        self.current = None if current is None else self._check_id(current)
        if self.current is not None:
            self.cipher(self.current)  # refuse a ring that cannot encrypt now, not at the first write

    @staticmethod
    def _check_id(key_id: object) -> str:
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"key id=<{key_id!r}> | must be 1-64 printable ASCII characters, without ':' or spaces")
        return key_id

    def _cipher(self, key_id: str, key: object) -> Any:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
            raise ValueError(f"key id=<{key_id}> | must be {KEY_BYTES} raw bytes (os.urandom(32)), got {size}")
        return self._aead(key)

    @property
    def ids(self) -> list[str]:
        """The ids of the keys held (or fetched so far, with a provider)."""
        return sorted(self._ciphers)

    def cipher(self, key_id: str) -> Any:
        """Return the AES-256-GCM cipher of ``key_id``; ``LookupError`` naming the id if the ring has no such key."""
        cipher = self._ciphers.get(key_id)
        if cipher is not None:
            return cipher
        if self._provider is None:
            raise LookupError(f"key id <{key_id}> is not in the keyring (it holds {', '.join(self.ids)})")
        try:
            key = self._provider(key_id)
        except KeyError as error:
            raise LookupError(f"the key provider has no key id <{key_id}> ({error})") from error
        self._ciphers[key_id] = cipher = self._cipher(key_id, key)
        return cipher

    def __repr__(self) -> str:
        """Show the ids, never the keys."""
        return f"Keyring(ids={self.ids!r}, current={self.current!r})"


class Values:
    """The settings of stored values (encryption, compression, size bound) and the one place they are applied."""

    def __init__(
        self,
        encryption: Keyring | None = None,
        compression: str | None = None,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        error: type[Exception] = SessionException,
    ) -> None:
        """Check the settings (``ValueError``/``TypeError`` naming the bad one); ``error`` is what refusals raise."""
        if encryption is not None and not isinstance(encryption, Keyring):
            raise TypeError(f"encryption=<{encryption!r}> | must be a Keyring (or None)")
        if compression is not None and compression not in _COMPRESSION:
            raise ValueError(f"compression=<{compression!r}> | must be None, 'gzip' or 'zstd'")
        if max_value_bytes is not None and (
            isinstance(max_value_bytes, bool)
            or not isinstance(max_value_bytes, int)
            or not 1 <= max_value_bytes <= MOST_VALUE_BYTES
        ):
            raise ValueError(
                f"max_value_bytes=<{max_value_bytes!r}> | must be an integer from 1 to {MOST_VALUE_BYTES} "
                "(Valkey's proto-max-bulk-len), or None for no bound"
            )
        self.keyring = encryption
        self.compression = compression
        self.max_value_bytes = max_value_bytes
        self.error = error
        if compression == "zstd":
            _zstd()  # ImportError now, not at the first write
        #: Whether new values are sealed (else they are written as they are: plain JSON for the session manager).
        self.sealing = (encryption is not None and encryption.current is not None) or compression is not None

    def bound(self, key: str, size: int) -> None:
        """Refuse (``error``) a value of ``size`` bytes above ``max_value_bytes``, before anything is written."""
        if self.max_value_bytes is not None and size > self.max_value_bytes:
            raise self.error(
                f"key=<{key}> | value of {size} bytes refused, nothing was written: it is above max_value_bytes="
                f"{self.max_value_bytes}. Keep large tool results out of the conversation (store them elsewhere "
                "and keep a reference), or raise max_value_bytes."
            )

    def seal(self, key: str, data: bytes) -> bytes:
        """Return what to store at ``key`` for ``data``: compressed and/or encrypted as set, or ``data`` itself.

        Raises:
            error: If ``data`` is above ``max_value_bytes``.
        """
        self.bound(key, len(data))
        if not self.sealing:
            return self._header("", "") + data if data[:4] == _MAGIC else data
        flags, payload = "", data
        if self.compression is not None and len(data) > COMPRESS_ABOVE:
            packed = self._compress(data)
            if len(packed) < len(data):
                flags, payload = _COMPRESSION[self.compression], packed
        ring = self.keyring
        if ring is None or ring.current is None:
            sealed = self._header(flags, "") + payload
            return sealed if flags and len(sealed) < len(data) else data
        header = self._header(flags + _ENCRYPTED, ring.current)
        nonce = os.urandom(NONCE_BYTES)
        encrypted: bytes = ring.cipher(ring.current).encrypt(nonce, payload, header + key.encode())
        return header + nonce + encrypted

    @staticmethod
    def _header(flags: str, key_id: str) -> bytes:
        return _PREFIX + f"{flags}:{key_id}:".encode()

    def _compress(self, data: bytes) -> bytes:
        if self.compression == "zstd":
            packed: bytes = _zstd_context("compressor").compress(data)
            return packed
        return gzip.compress(data, compresslevel=6, mtime=0)

    @staticmethod
    def is_sealed(raw: bytes | str) -> bool:
        """Whether a stored value is sealed (has the header), rather than plain."""
        return raw[:4] == (MAGIC if isinstance(raw, str) else _MAGIC)

    @classmethod
    def header(cls, raw: bytes) -> tuple[str, str] | None:
        """Return the flags and key id of a sealed value (``("ze", "2026-12")``), ``None`` for a plain one."""
        if not cls.is_sealed(raw):
            return None
        parts = raw.split(b":", 3)
        return (parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace")) if len(parts) == 4 else None

    @overload
    def open(self, key: str, raw: bytes) -> bytes: ...
    @overload
    def open(self, key: str, raw: bytes | str) -> bytes | str: ...
    def open(self, key: str, raw: bytes | str) -> bytes | str:
        """Return the plain value stored as ``raw`` at ``key``: ``raw`` itself unless it is sealed.

        Raises:
            error: If it is sealed and cannot be opened: encrypted without a keyring, with a key id the keyring
                lacks, or failing authentication (tampered with, moved from another key); or malformed.
        """
        if not self.is_sealed(raw):
            return raw
        stored = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        try:
            prefix, flags_raw, key_id_raw, payload = stored.split(b":", 3)
            flags, key_id = flags_raw.decode("ascii"), key_id_raw.decode("ascii")
        except ValueError as error:
            raise self.error(f"key=<{key}> | value has a malformed {MAGIC} header or payload ({error})") from error
        if prefix != _PREFIX[:-1]:
            raise self.error(
                f"key=<{key}> | value is in format {prefix.decode('ascii', 'replace')}, which a newer version of "
                "strands-valkey-session-manager wrote: upgrade this one to read it"
            )
        if _ENCRYPTED in flags:
            payload = self._decrypt(key, stored[: len(stored) - len(payload)], key_id, payload)
        compression = flags.replace(_ENCRYPTED, "")
        if compression:
            payload = self._decompress(key, compression, payload)
        return payload

    def _decrypt(self, key: str, header: bytes, key_id: str, payload: bytes) -> bytes:
        if self.keyring is None:
            raise self.error(
                f"key=<{key}> | value is encrypted with key id <{key_id}>, and no keyring was given: pass "
                f"encryption=Keyring(...) holding key <{key_id}> (the CLI: --keyring-file or STRANDS_VALKEY_KEYRING)"
            )
        try:
            cipher = self.keyring.cipher(key_id)
        except LookupError as error:
            raise self.error(f"key=<{key}> | value cannot be decrypted: {error}") from error
        from cryptography.exceptions import InvalidTag  # installed: the keyring needs it

        try:
            plain: bytes = cipher.decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:], header + key.encode())
        except (InvalidTag, ValueError) as error:  # ValueError: a payload too short to hold a nonce
            raise self.error(
                f"key=<{key}> | value fails authentication under key id <{key_id}>: it was changed, moved here from "
                "another key, session or agent, or encrypted with another key under that id. Nothing was read; "
                "restore the value from a backup or delete the key."
            ) from error
        return plain

    def _decompress(self, key: str, compression: str, payload: bytes) -> bytes:
        if compression not in _COMPRESSION.values():
            raise self.error(f"key=<{key}> | value has unknown flags <{compression}> in its {MAGIC} header")
        zstd = _zstd() if compression == _COMPRESSION["zstd"] else None
        failures = (OSError, EOFError, zlib.error, zstd.ZstdError) if zstd else (OSError, EOFError, zlib.error)
        try:
            plain: bytes = _zstd_context("decompressor").decompress(payload) if zstd else gzip.decompress(payload)
            return plain
        except failures as error:
            raise self.error(f"key=<{key}> | value fails to decompress ({type(error).__name__}: {error})") from error


#: Plain values, read with sealed ones recognised (a sealed one without its keyring is a clear error).
PLAIN = Values()

"""``ValkeyStorage``: the SDK's unified ``Storage`` protocol in Valkey (its own keys, scripts and I/O thread)."""

from .valkey_storage import ValkeyStorage

__all__ = ["ValkeyStorage"]

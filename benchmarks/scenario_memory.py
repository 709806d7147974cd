"""Valkey memory per stored message against the size of its JSON, for three message sizes.

``MEMORY USAGE <key> SAMPLES 0`` of every message key (the value, the key name and the object
overhead) and the library's bookkeeping per message (its id ZSET, index, session and agent
records, divided by the message count). Not counted: the server's keyspace and expiry tables,
the same for every store with one key per message (roughly 50-100 bytes a key).
"""

from __future__ import annotations

import statistics
from typing import Any

from .messages import session_messages
from .seed import AGENT_ID, Context, empty, library_keys, seed_floor, seed_library
from .stores import message_json

TEXT_SIZES = (120, 2_000, 20_000)


def _usage(context: Context, keys: list[str]) -> int:
    pipe = context.client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(size or 0) for size in pipe.execute())


def run(context: Context) -> list[dict[str, Any]]:
    """One row per (store, message size)."""
    client, count = context.client, context.config.memory_messages
    results = []
    for text_size in TEXT_SIZES:
        records = session_messages(count, text_size)
        json_sizes = [len(message_json(record).encode()) for record in records]
        for store in ("library", "floor"):
            empty(context)
            sid = f"memory-{text_size}"
            if store == "library":
                manager = seed_library(client, sid, records)
                keys = library_keys(client, manager, sid)
                message_keys = [manager.keys.message(sid, AGENT_ID, record.message_id) for record in records]
            else:
                keys = message_keys = seed_floor(client, sid, records)
            message_bytes = _usage(context, message_keys)
            is_message = set(message_keys)
            bookkeeping = _usage(context, [key for key in keys if key not in is_message])
            results.append(
                {
                    "store": store,
                    "text_size": text_size,
                    "messages": count,
                    "json_bytes": statistics.fmean(json_sizes),
                    "key_name_bytes": statistics.fmean(len(key) for key in message_keys),
                    "memory_usage_per_message": message_bytes / count,
                    "bookkeeping_per_message": bookkeeping / count,
                    "total_per_message": (message_bytes + bookkeeping) / count,
                }
            )
    empty(context)
    return results

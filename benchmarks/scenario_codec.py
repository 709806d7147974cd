"""The cost of (de)serialisation in a turn and in a restore, and a profile of a restore.

Encode (per appended message) and decode (per restored message) of the same synthetic records,
each implementation interleaved: the SDK's own path, this library's, bare ``json``, and ``orjson``
when it is installed (to decide whether an optional faster JSON library would pay for itself).
"""

from __future__ import annotations

import cProfile
import importlib.util
import io
import json
import pstats
from collections.abc import Callable
from typing import Any

from strands.types.session import SessionMessage

from strands_valkey_session_manager import codec

from .messages import session_messages
from .seed import AGENT_ID, Context, seed_library
from .stores import message_json
from .timing import interleaved, summary


def _cases(records: list[SessionMessage], values: list[str]) -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {
        "decode/json.loads (floor)": lambda: [json.loads(value) for value in values],
        "decode/SDK SessionMessage.from_dict": lambda: [SessionMessage.from_dict(json.loads(v)) for v in values],
        "decode/library codec.load_record": lambda: [codec.load_record(SessionMessage, v, "k") for v in values],
        "encode/json.dumps of the message dict (floor)": lambda: [json.dumps(r.message) for r in records],
        "encode/SDK to_dict() + json.dumps": lambda: [message_json(r) for r in records],
        "encode/library codec.encode": lambda: [codec.encode(r) for r in records],
    }
    if importlib.util.find_spec("orjson") is not None:
        import orjson

        cases["decode/orjson.loads"] = lambda: [orjson.loads(value) for value in values]
        cases["encode/SDK to_dict() + orjson.dumps"] = lambda: [orjson.dumps(r.to_dict()) for r in records]
    return cases


def profile_restore(context: Context, count: int) -> str:
    """Profile the library's ``list_messages`` of ``count`` messages: the top functions by own time."""
    sid = "codec-profile"
    manager = seed_library(context.client, sid, session_messages(count))
    manager.list_messages(sid, AGENT_ID)  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        manager.list_messages(sid, AGENT_ID)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(12)
    manager.delete_session(sid)
    lines = text.getvalue().splitlines()
    start = next((index for index, line in enumerate(lines) if "ncalls" in line), 0)
    header = [line for line in lines[:start] if "function calls" in line]
    return "\n".join([*header, "", *lines[start:]]).strip()


def run(context: Context) -> dict[str, Any]:
    """Per-message costs of each implementation, and the restore profile."""
    count = context.config.codec_messages
    records = session_messages(count)
    values = [message_json(record) for record in records]
    samples = interleaved(_cases(records, values), context.config.codec_repeats)
    rows = []
    for name, values_s in samples.items():
        op, impl = name.split("/", 1)
        stats = summary(values_s)
        rows.append(
            {"op": op, "impl": impl, "messages": count, **stats, "per_message_us": stats["median_ms"] * 1e3 / count}
        )
    return {"rows": rows, "profile": profile_restore(context, count)}

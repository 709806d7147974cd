"""``delete_session`` of a session with N messages, at the smallest and the largest K.

Floor: one plain ``DEL`` of exactly the keys the library's session has (the harness lists them
beforehand, untimed). Each timed call deletes a session re-created, untimed, just before it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from .messages import session_messages
from .scenario_restore import populate
from .seed import Context, empty, library_keys, seed_file, seed_library, seed_naive
from .timing import interleaved, summary


def run(context: Context) -> list[dict[str, Any]]:
    """Time each store's delete for every N, at K = min and max of the restore K's."""
    config = context.config
    results = []
    for k in sorted({min(config.restore_k), max(config.restore_k)}):
        empty(context)
        populate(context, k)
        context.log(f"delete: K={k}")
        for n in config.delete_n:
            samples = _measure(context, n)
            for store, values in samples.items():
                results.append({"store": store, "n": n, "k": k, **summary(values), "samples": values})
    empty(context)
    return results


def _measure(context: Context, n: int) -> dict[str, list[float]]:
    """Interleaved deletes of an N-message session, each store's re-created (untimed) before each."""
    client, sid, records = context.client, f"delete-{n}", session_messages(n)
    seeded: dict[str, Any] = {}

    def setup(store: str) -> None:
        if store == "library":
            seeded[store] = seed_library(client, sid, records)
        elif store == "naive":
            seeded[store] = seed_naive(client, sid, records)
        elif store == "floor":
            manager = seed_library(client, f"{sid}-floor", records)
            seeded[store] = library_keys(client, manager, f"{sid}-floor")
        else:
            shutil.rmtree(context.file_dir / sid, ignore_errors=True)
            seeded[store] = seed_file(context.file_dir / sid, sid, records)

    cases: dict[str, Callable[[], Any]] = {
        "library": lambda: seeded["library"].delete_session(sid),
        "naive": lambda: seeded["naive"].delete_session(sid),
        "file": lambda: seeded["file"].delete_session(sid),
        "floor": lambda: client.delete(*seeded["floor"]),
    }
    return interleaved(cases, context.config.delete_repeats, setup=setup)

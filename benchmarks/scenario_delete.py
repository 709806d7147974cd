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
from .seed import Context, library_keys, seed_file, seed_library, seed_naive
from .timing import interleaved, summary


def run(context: Context) -> list[dict[str, Any]]:
    """Time each store's delete for every N, at K = min and max of the restore K's."""
    config, client = context.config, context.client
    results = []
    for k in sorted({min(config.restore_k), max(config.restore_k)}):
        client.flushall()
        populate(context, k)
        context.log(f"delete: K={k}")
        for n in config.delete_n:
            records = session_messages(n)
            state: dict[str, Any] = {}

            def setup(name: str, records: list[Any] = records, state: dict[str, Any] = state, n: int = n) -> None:
                sid = f"delete-{n}"
                if name == "library":
                    state["library"] = seed_library(client, sid, records)
                elif name == "naive":
                    state["naive"] = seed_naive(client, sid, records)
                elif name == "floor":
                    manager = seed_library(client, f"{sid}-floor", records)
                    state["floor"] = library_keys(client, manager, f"{sid}-floor")
                else:
                    directory = context.file_dir / sid
                    shutil.rmtree(directory, ignore_errors=True)
                    state["file"] = seed_file(directory, sid, records)

            sid = f"delete-{n}"
            cases: dict[str, Callable[[], Any]] = {
                "library": lambda sid=sid, state=state: state["library"].delete_session(sid),
                "naive": lambda sid=sid, state=state: state["naive"].delete_session(sid),
                "file": lambda sid=sid, state=state: state["file"].delete_session(sid),
                "floor": lambda state=state: client.delete(*state["floor"]),
            }
            samples = interleaved(cases, config.delete_repeats, setup=setup)
            for store, values in samples.items():
                results.append({"store": store, "n": n, "k": k, **summary(values), "samples": values})
    client.flushall()
    return results

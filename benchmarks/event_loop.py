"""How long the session manager blocks an event loop: ``python -m benchmarks.event_loop [--turns N] [--runs N]``.

The SDK calls a session manager synchronously, also from ``invoke_async``/``stream_async``: each append and
sync runs on the caller's event loop thread and blocks it for its round trip. This measures, on loopback
against a throwaway ``valkey-server``, in an ``asyncio`` app that shares one client (built by ``from_url``):

- per turn (a prompt and a text reply: two appends and the agent syncs, of which one writes): the time in the manager's
  hook calls, on the loop thread (``HookTimer``, as the turn benchmark does): the time the loop is blocked;
- per request: opening the manager and restoring the agent (``ValkeySessionManager(...)``, ``Agent(...)``),
  which a request handler also runs synchronously.

Prints medians and p95 in microseconds. Numbers vary with the machine; the README quotes one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

from strands import Agent

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

from .scenario_turn import HookTimer
from .timing import percentile


async def conversation(client: Any, session_id: str, turns: int, per_turn: list[float], opens: list[float]) -> None:
    """One request after another on one session: open the manager, restore the agent, run one turn."""
    loop_thread = threading.get_ident()
    for turn in range(turns):
        start = time.perf_counter()
        manager = ValkeySessionManager(session_id, client, ttl=600)
        agent = Agent(
            agent_id="assistant", model=ScriptedModel([f"reply {turn}"]), session_manager=manager, callback_handler=None
        )
        opens.append(time.perf_counter() - start)
        timer = HookTimer(manager)
        await agent.invoke_async(f"prompt {turn}")
        assert threading.get_ident() == loop_thread
        per_turn.append(timer.total)


async def main(turns: int, runs: int, url: str) -> dict[str, list[float]]:
    """Run ``runs`` conversations of ``turns`` requests each."""
    client = ValkeySessionManager.from_url(url, "warm-up").client  # one client shared by every request
    per_turn: list[float] = []
    opens: list[float] = []
    for run in range(runs):
        await conversation(client, f"loop-{run}", turns, per_turn, opens)
    client.close()
    return {"blocked per turn": per_turn, "open + restore per request": opens}


def report(results: dict[str, list[float]]) -> None:
    """Print median, p95 and max in microseconds."""
    for name, samples in results.items():
        micro = sorted(sample * 1e6 for sample in samples)
        print(
            f"{name:28} median {statistics.median(micro):8.0f} us   p95 {percentile(micro, 95):8.0f} us   "
            f"max {micro[-1]:8.0f} us   (n={len(micro)})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.event_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="requests (turns) per conversation")
    parser.add_argument("--runs", type=int, default=20, help="conversations")
    args = parser.parse_args()
    with LocalValkey() as server:
        report(asyncio.run(main(args.turns, args.runs, server.url)))

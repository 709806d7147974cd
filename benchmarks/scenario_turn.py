"""Per-turn session overhead as a conversation grows, every store's agent turn interleaved.

Each store gets a real ``Agent`` on the scripted model (``NullConversationManager``, so the
conversation really grows); ``none`` is the same agent without a session manager. Every turn
appends two messages. Two measures of a store's cost per turn:

- ``overhead``: median time per turn minus the ``none`` agent's median, in the same size bucket
  (what the issue asks for; the difference of two noisy numbers);
- ``in_hooks``: the time spent inside the session manager's hook calls (append_message,
  sync_agent) during the turn, which is the same cost measured directly and far less noisy.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections import defaultdict
from typing import Any

from strands import Agent
from strands.agent.conversation_manager import NullConversationManager

from strands_valkey_session_manager.testing.model import ScriptedModel

from .seed import AGENT_ID, Context
from .stores import make_manager
from .timing import percentile

STORES = ("none", "library", "naive", "file", "bare", "floor")
HOOKS = ("append_message", "sync_agent", "redact_latest_message")
BUCKETS = 10


class HookTimer:
    """Adds up the time spent in a session manager's hook methods (wrapped on the instance)."""

    def __init__(self, manager: Any) -> None:
        """Wrap ``manager``'s hooks; ``None`` (no manager) always reads 0."""
        self.total = 0.0
        for name in HOOKS if manager is not None else ():
            setattr(manager, name, self._timed(getattr(manager, name)))

    def _timed(self, method: Any) -> Any:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        return timed


def run(context: Context) -> dict[str, Any]:
    """Grow one conversation per store to ``turn_messages``, ``turn_runs`` times; bucket by size."""
    config = context.config
    turns: list[dict[str, Any]] = []
    shuffle = random.Random(99).shuffle
    for run_index in range(config.turn_runs):
        agents, timers = {}, {}
        for store in STORES:
            manager = make_manager(store, f"turn-{run_index}-{store}", context.client, context.file_dir / "turn")
            timers[store] = HookTimer(manager)
            agents[store] = Agent(
                agent_id=AGENT_ID,
                model=ScriptedModel(),
                session_manager=manager,
                conversation_manager=NullConversationManager(),
                callback_handler=None,
            )
            agents[store]("warm-up turn (creates the agent record)")
        for turn in range(config.turn_messages // 2 - 1):
            order = list(STORES)
            shuffle(order)
            for store in order:
                agent, timer = agents[store], timers[store]
                size = len(agent.messages)
                timer.total = 0.0
                start = time.perf_counter()
                agent(f"prompt {turn}")
                elapsed = time.perf_counter() - start
                turns.append(
                    {"run": run_index, "store": store, "size": size, "turn_s": elapsed, "hooks_s": timer.total}
                )
        context.log(f"per-turn: run {run_index + 1}/{config.turn_runs} done")
    return {"turns": turns, "buckets": bucketed(turns, config.turn_messages)}


def bucketed(turns: list[dict[str, Any]], max_messages: int) -> list[dict[str, Any]]:
    """Median and p99 per store and conversation-size bucket; overhead against ``none`` per bucket."""
    width = max(2, max_messages // BUCKETS)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for turn in turns:
        groups[(turn["store"], turn["size"] // width)].append(turn)
    rows = []
    for (store, bucket), items in sorted(groups.items()):
        turn_s = [item["turn_s"] for item in items]
        hooks_s = [item["hooks_s"] for item in items]
        baseline = [item["turn_s"] for item in groups.get(("none", bucket), [])]
        rows.append(
            {
                "store": store,
                "from_messages": bucket * width,
                "to_messages": (bucket + 1) * width,
                "turns": len(items),
                "turn_median_ms": statistics.median(turn_s) * 1e3,
                "turn_p99_ms": percentile(turn_s, 99) * 1e3,
                "overhead_ms": (statistics.median(turn_s) - statistics.median(baseline)) * 1e3 if baseline else None,
                "hooks_median_ms": statistics.median(hooks_s) * 1e3,
                "hooks_p99_ms": percentile(hooks_s, 99) * 1e3,
            }
        )
    return rows

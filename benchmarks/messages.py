"""A synthetic conversation like the ones agents store: text turns, tool calls and their results.

Deterministic, so every store gets the same bytes and every run the same sizes.
"""

from __future__ import annotations

from typing import Any

from strands.types.content import Message
from strands.types.session import SessionMessage

_METADATA = {"usage": {"inputTokens": 812, "outputTokens": 64, "totalTokens": 876}, "metrics": {"latencyMs": 930}}


def message(index: int, text_size: int = 120) -> Message:
    """Build the ``index``-th message, in a cycle of of user question, tool call, tool result, assistant answer."""
    filler = ("lorem ipsum dolor sit amet " * (text_size // 27 + 1))[:text_size]
    kind = index % 4
    if kind == 0:
        return {"role": "user", "content": [{"text": f"Question {index}: {filler}"}]}
    if kind == 1:
        tool_use = {"toolUseId": f"tooluse_{index}", "name": "search", "input": {"query": filler[:40], "k": 5}}
        return {"role": "assistant", "content": [{"toolUse": tool_use}]}  # type: ignore[typeddict-item]
    if kind == 2:
        result: dict[str, Any] = {"toolUseId": f"tooluse_{index - 1}", "status": "success"}
        result["content"] = [{"text": f"Result: {filler}"}]
        return {"role": "user", "content": [{"toolResult": result}]}  # type: ignore[typeddict-item]
    answer: Message = {"role": "assistant", "content": [{"text": f"Answer {index}: {filler}"}]}
    answer["metadata"] = _METADATA  # type: ignore[typeddict-unknown-key]
    return answer


def session_messages(count: int, text_size: int = 120) -> list[SessionMessage]:
    """``count`` records with ids 0..count-1, as the SDK creates them."""
    return [SessionMessage.from_message(message(index, text_size), index) for index in range(count)]

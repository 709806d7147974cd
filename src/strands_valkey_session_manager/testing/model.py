"""An offline Strands model that streams canned replies: for tests and the demo, no LLM needed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from strands.models.model import Model
from strands.types.content import Messages
from strands.types.streaming import StreamEvent
from strands.types.tools import ToolSpec

T = TypeVar("T", bound=BaseModel)

#: A reply is text, or a tool call ``{"tool": name, "input": {...}}``.
Reply = str | dict[str, Any]


def _last_user_text(messages: Messages) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            for block in message["content"]:
                if "text" in block:
                    return str(block["text"])
    return ""


class ScriptedModel(Model):
    """Streams the next scripted reply each call; with no script, echoes the last user text.

    ``replies`` may be a list of replies (used in turn, then echo) or a function of the
    conversation so far returning one. ``delay`` seconds pass before each reply starts (a slow model).
    """

    def __init__(
        self,
        replies: Iterable[Reply] | Callable[[Messages], Reply] = (),
        label: str = "scripted",
        delay: float = 0.0,
    ) -> None:
        """Create the model with its replies."""
        self.delay = delay
        self._lock = threading.Lock()
        self._script: Callable[[Messages], Reply] | None = replies if callable(replies) else None
        self._queue: list[Reply] = [] if callable(replies) else list(replies)
        self.config: dict[str, Any] = {"model_id": label}
        self.calls = 0

    def update_config(self, **model_config: Any) -> None:
        """Update the (informational) configuration."""
        self.config.update(model_config)

    def get_config(self) -> dict[str, Any]:
        """Return the configuration."""
        return self.config

    def _next_reply(self, messages: Messages) -> Reply:
        with self._lock:
            self.calls += 1
            if self._script is not None:
                return self._script(messages)
            if self._queue:
                return self._queue.pop(0)
        return f"(scripted reply) You said: {_last_user_text(messages)}"

    async def stream(
        self,
        messages: Messages,
        tool_specs: list[ToolSpec] | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one scripted reply as the SDK's stream events."""
        reply = self._next_reply(messages)
        if self.delay:
            await asyncio.sleep(self.delay)
        yield {"messageStart": {"role": "assistant"}}
        if isinstance(reply, dict):
            tool_use_id = f"tooluse_{self.calls}"
            yield {"contentBlockStart": {"start": {"toolUse": {"name": reply["tool"], "toolUseId": tool_use_id}}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps(reply.get("input", {}))}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        else:
            yield {"contentBlockStart": {"start": {}}}
            yield {"contentBlockDelta": {"delta": {"text": reply}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}

    async def structured_output(
        self, output_model: type[T], prompt: Messages, system_prompt: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[dict[str, T | Any], None]:
        """Not supported by the scripted model."""
        raise NotImplementedError("ScriptedModel does not produce structured output")
        yield {}  # pragma: no cover - makes this an async generator

"""An offline Strands model that streams canned replies: for tests and the demo, no LLM needed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from strands.bidi.models.model import BidiModel
from strands.bidi.types import BidiMessage
from strands.bidi.types.events import (
    BidiConnectionStartEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
    BidiResponseStopEvent,
    BidiTextDeltaEvent,
    BidiTextStartEvent,
    BidiTextStopEvent,
)
from strands.models.model import Model
from strands.types.content import Messages, TextBlock
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
    conversation so far returning one. ``delay`` seconds pass before each reply starts (a slow model); a text
    reply streams in ``chunks`` deltas, ``chunk_delay`` seconds apart (a model streaming its tokens).
    """

    def __init__(
        self,
        replies: Iterable[Reply] | Callable[[Messages], Reply] = (),
        label: str = "scripted",
        delay: float = 0.0,
        chunks: int = 1,
        chunk_delay: float = 0.0,
    ) -> None:
        """Create the model with its replies."""
        self.delay, self.chunks, self.chunk_delay = delay, max(1, chunks), chunk_delay
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
            size = -(-len(reply) // self.chunks) or 1
            for at in range(0, max(len(reply), 1), size):
                if at and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield {"contentBlockDelta": {"delta": {"text": reply[at : at + size]}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}

    async def structured_output(
        self, output_model: type[T], prompt: Messages, system_prompt: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[dict[str, T | Any], None]:
        """Not supported by the scripted model."""
        raise NotImplementedError("ScriptedModel does not produce structured output")
        yield {}  # pragma: no cover - makes this an async generator


class ScriptedBidiModel(BidiModel):
    """A stand-in bidirectional (voice) model: answers each user message with the next scripted text, offline.

    For ``BidiAgent`` tests and demos: no connection, no audio. Each complete user message sent gets one response
    (response start, a text block streamed in two deltas, response stop); with no script left, it echoes.
    """

    def __init__(self, replies: Iterable[str] = ()) -> None:
        """Answer with ``replies`` in turn, then echo."""
        self._replies = list(replies)
        self._events: asyncio.Queue[Any] | None = None
        self._count = 0

    def update_config(self, **model_config: Any) -> None:
        """Nothing to configure."""

    def get_config(self) -> dict[str, Any]:
        """Return the model's id."""
        return {"model_id": "scripted-bidi"}

    async def start(
        self,
        system_prompt: str | None = None,
        tools: list[ToolSpec] | None = None,
        messages: Messages | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the (pretend) connection."""
        self._events = asyncio.Queue()
        await self._events.put(BidiConnectionStartEvent(connection_id="scripted", model=self.model_id))

    async def stop(self) -> None:
        """Close it: ``receive`` ends."""
        if self._events is not None:
            await self._events.put(None)

    async def receive(self) -> AsyncIterator[BidiOutputEvent]:
        """Yield the events of each response, until ``stop``."""
        assert self._events is not None, "start() first"
        while (event := await self._events.get()) is not None:
            yield event

    async def send(self, content: Any) -> None:
        """Queue the response to a complete user message (audio deltas and tool results are ignored)."""
        if self._events is None or not isinstance(content, BidiMessage):
            return
        texts = [block.text for block in content.content if isinstance(block, TextBlock)]
        if not texts:
            return
        reply = self._replies.pop(0) if self._replies else " ".join(texts)
        self._count += 1
        response, block = f"response-{self._count}", f"text-{self._count}"
        half = len(reply) // 2
        for event in (
            BidiResponseStartEvent(response),
            BidiTextStartEvent(block),
            BidiTextDeltaEvent(reply[:half], block),
            BidiTextDeltaEvent(reply[half:], block),
            BidiTextStopEvent(block),
            BidiResponseStopEvent(response),
        ):
            await self._events.put(event)

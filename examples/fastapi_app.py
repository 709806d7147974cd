"""A FastAPI app streaming one conversation per session id, its session kept in Valkey through an asyncio client.

Run it (the model is the offline scripted one; put yours in its place)::

    VALKEY_URL=valkey://localhost:6379 uvicorn fastapi_app:app --app-dir examples

    curl -N -X POST localhost:8000/sessions/user-42/chat -H 'content-type: application/json' -d '{"prompt": "hi"}'
    curl -X DELETE localhost:8000/sessions/user-42            # logout: the session is gone

Every request opens its session with ``await ValkeySessionManager.open(...)``: the reads are awaited, and the
agent built afterwards restores from them without a round trip on the loop; its writes (each message, each
agent sync) are awaited by the SDK's hooks. No request ever stops the event loop to wait for Valkey.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import valkey.asyncio
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from strands import Agent

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing import ScriptedModel

VALKEY_URL = os.environ.get("VALKEY_URL", "valkey://localhost:6379")
AGENT_ID = "assistant"
#: Offline: echoes the prompt after 50 ms, in 4 chunks. Your model here (BedrockModel(...), ...).
model = ScriptedModel(delay=0.05, chunks=4, chunk_delay=0.005)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client for the app, made on the server's event loop: the managers await it there."""
    app.state.valkey = valkey.asyncio.Valkey.from_url(VALKEY_URL, socket_timeout=5, socket_connect_timeout=2)
    yield
    await app.state.valkey.aclose()


app = FastAPI(lifespan=lifespan)


class Chat(BaseModel):
    """A request's prompt."""

    prompt: str


@app.post("/sessions/{session_id}/chat")
async def chat(session_id: str, body: Chat, request: Request) -> StreamingResponse:
    """Stream the reply to ``prompt`` in the session's conversation (restored, then continued)."""
    # lock_timeout queues a second request of the same session behind the first (awaiting, not blocking).
    manager = await ValkeySessionManager.open(
        session_id, request.app.state.valkey, agent_ids=[AGENT_ID], lock_timeout=30
    )
    agent = Agent(agent_id=AGENT_ID, model=model, session_manager=manager, callback_handler=None)

    async def reply() -> AsyncIterator[str]:
        async for event in agent.stream_async(body.prompt):
            if "data" in event:
                yield event["data"]

    return StreamingResponse(reply(), media_type="text/plain")


@app.get("/sessions/{session_id}/messages")
async def messages(session_id: str, request: Request) -> list[dict[str, object]]:
    """Return the session's conversation as an agent restores it."""
    manager = await ValkeySessionManager.open(session_id, request.app.state.valkey, agent_ids=[AGENT_ID])
    agent = Agent(agent_id=AGENT_ID, model=model, session_manager=manager, callback_handler=None)
    return [dict(message) for message in agent.messages]


@app.delete("/sessions/{session_id}")
async def logout(session_id: str, request: Request) -> dict[str, str]:
    """Delete the session: every key of it, in one atomic step."""
    manager = await ValkeySessionManager.open(session_id, request.app.state.valkey, agent_ids=[])
    await manager.delete_session_async(session_id)
    return {"deleted": session_id}


@app.get("/health")
async def health() -> dict[str, str]:
    """Say the app is up."""
    return {"status": "ok"}

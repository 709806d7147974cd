"""examples/fastapi_app.py, served by a real uvicorn process, driven by many concurrent conversations over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import valkey
from helpers import wait_until

from strands_valkey_session_manager.testing.server import LocalValkey, free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONVERSATIONS = 60


@pytest.fixture
def app_url(server: LocalValkey, client: valkey.Valkey) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "VALKEY_URL": f"valkey://127.0.0.1:{server.port}"}
    command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"uvicorn exited: {process.stderr.read() if process.stderr else ''}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=30, what="uvicorn serving the example")
        yield url
    finally:
        process.terminate()  # by its pid: this test started it
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_many_concurrent_conversations_stream_resume_and_log_out(app_url: str, client: valkey.Valkey) -> None:
    async def drive() -> list[list[str]]:
        async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:

            async def say(session_id: str, prompt: str) -> str:
                async with http.stream("POST", f"/sessions/{session_id}/chat", json={"prompt": prompt}) as response:
                    assert response.status_code == 200
                    return "".join([chunk async for chunk in response.aiter_text()])

            async def conversation(n: int) -> list[str]:
                return [await say(f"user-{n}", f"hello {n}"), await say(f"user-{n}", f"again {n}")]

            return await asyncio.gather(*(conversation(n) for n in range(CONVERSATIONS)))

    replies = asyncio.run(drive())

    assert replies == [
        [f"(scripted reply) You said: hello {n}", f"(scripted reply) You said: again {n}"] for n in range(CONVERSATIONS)
    ]
    # Each session holds its own conversation, resumed by the second request: four messages, in order.
    history = httpx.get(f"{app_url}/sessions/user-7/messages", timeout=30).json()
    assert [message["content"][0]["text"] for message in history] == [
        "hello 7",
        "(scripted reply) You said: hello 7",
        "again 7",
        "(scripted reply) You said: again 7",
    ]
    assert all(client.zcard(f"session:user-{n}:agent:assistant:messages") == 4 for n in range(CONVERSATIONS))

    for n in range(CONVERSATIONS):
        assert httpx.delete(f"{app_url}/sessions/user-{n}", timeout=30).json() == {"deleted": f"user-{n}"}
    assert client.keys("session:*") == []

"""The README's and the PyPI readme's promises that code can check: the Quick start runs offline, links work on PyPI."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

from strands import Agent

from strands_valkey_session_manager.testing import ScriptedModel

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent


def python_block(readme: str, section: str) -> str:
    """The first ```python block under the heading ``section`` of a readme at the repository's root."""
    text = (ROOT / readme).read_text()
    after = text[text.index(f"\n{section}\n") :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def test_the_quick_start_runs_without_credentials_and_resumes_the_conversation(server, client) -> None:
    code = python_block("README.md", "## Quick start")
    assert "port=6379" in code
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(code.replace("port=6379", f"port={server.port}"), {})

    assert printed.getvalue().endswith("Hello! How can I help?\n")
    assert client.exists("session:user-42:agent:assistant:message:1")


def test_the_connecting_example_builds_its_client_from_a_url(server, client) -> None:
    code = python_block("README.md", "## Connecting")
    assert "valkey://localhost:6379" in code

    exec(code.replace("valkey://localhost:6379", server.url), {})

    assert client.exists("session:user-42:agent:assistant:message:1")
    assert 3590 <= client.ttl("session:user-42") <= 3600


def test_the_fastapi_example_resumes_each_session_across_requests(server, client, monkeypatch) -> None:
    from fastapi.testclient import TestClient  # the dev extra

    monkeypatch.setenv("VALKEY_URL", server.url)
    namespace: dict = {}
    exec(python_block("README.md", "## Inside async apps (FastAPI, invoke_async)"), namespace)
    # The endpoint looks Agent up in these globals: give each agent a model that says how much it was told.
    namespace["Agent"] = functools.partial(Agent, model=ScriptedModel(lambda messages: f"{len(messages)} messages"))

    with TestClient(namespace["app"]) as http:
        replies = [
            http.post(f"/sessions/{session_id}/chat", json={"prompt": prompt}).json()["reply"].strip()
            for session_id, prompt in [("user-1", "Hi, I am Ada."), ("user-1", "My name?"), ("user-2", "Hello.")]
        ]
    namespace["client"].close()

    assert replies == ["1 messages", "3 messages", "1 messages"]  # the second request's agent was restored
    assert client.zcard("session:user-1:agent:assistant:messages") == 4
    assert client.zcard("session:user-2:agent:assistant:messages") == 2


def test_the_pypi_readme_has_the_readmes_quick_start() -> None:
    assert python_block("README.pypi.md", "## Quick start") == python_block("README.md", "## Quick start")


def test_the_pypi_readme_links_only_to_absolute_urls() -> None:
    text = (ROOT / "README.pypi.md").read_text()

    targets = re.findall(r"\]\(([^)]*)\)", text)

    assert targets and all(target.startswith("https://") for target in targets), targets


def test_the_testing_kit_example_passes_as_a_users_test(pytester) -> None:
    pytester.makepyfile(
        test_example=python_block("README.md", "## Testing your agents: `strands_valkey_session_manager.testing`")
    )

    result = pytester.runpytest_subprocess()

    result.assert_outcomes(passed=1)

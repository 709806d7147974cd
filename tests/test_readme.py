"""The README's and the PyPI readme's promises that code can check: every snippet runs offline, links work on PyPI."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from strands_valkey_session_manager.testing import ScriptedModel

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent


QUICK_START, QUERY, LOGOUT = "## Quick start", "### Query Valkey directly", "### Clean up on logout"
TESTING_KIT = "## Testing your agents: `strands_valkey_session_manager.testing`"


def python_block(readme: str, section: str) -> str:
    """The first ```python block under the heading ``section`` of a readme at the repository's root."""
    text = (ROOT / readme).read_text()
    after = text[text.index(f"\n{section}\n") :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def python_blocks(readme: str) -> list[tuple[str, str]]:
    """Every ```python block of a readme, in order, with the heading it is under (code comments have one ``#``)."""
    text = (ROOT / readme).read_text()
    return [
        (re.findall(r"^#{2,4} .*$", text[: block.start()], re.MULTILINE)[-1], block.group(1))
        for block in re.finditer(r"```python\n(.*?)```", text, re.DOTALL)
    ]


def test_every_readme_snippet_runs_offline_in_order_and_prints_what_it_says(server, client, monkeypatch) -> None:
    """A newcomer pastes each block, in order, into one Python session: nothing needs credentials or a network."""
    monkeypatch.setenv("VALKEY_URL", server.url)
    blocks = python_blocks("README.md")
    namespace: dict = {}
    printed: dict[str, str] = {}

    for heading, code in blocks:
        if heading == TESTING_KIT:  # a pytest test: test_the_testing_kit_example_passes_as_a_users_test runs it
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(
                code.replace("localhost:6379", server.url[len("valkey://") :]).replace("6379", str(server.port)),
                namespace,
            )
        printed[heading] = out.getvalue()
        if heading == LOGOUT:
            assert client.keys("session:user-42*") == []
    namespace["storage"].close()

    assert len(printed) == len(blocks) - 1 >= 9
    assert printed.pop(QUICK_START) == "Hello! How can I help?\n"  # once: the agent itself printed nothing
    said = [line[2:] for line in python_block("README.md", QUERY).splitlines() if line.startswith("# session:")]
    shown = printed.pop(QUERY).splitlines()
    assert [re.sub(r"TTL: \d+s", "TTL: 3598s", line) for line in shown] == said
    assert all(3590 <= int(ttl) <= 3600 for ttl in re.findall(r"TTL: (\d+)s", "\n".join(shown)))
    assert printed == dict.fromkeys(printed, "")  # the other blocks print nothing, as they say
    for agent_id in ("researcher", "writer"):  # each agent's prompt got its reply: no user message left alone
        assert client.zcard(f"session:workflow-001:agent:{agent_id}:messages") == 2


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
    # The endpoint looks its model up in these globals: one that says how much it was told.
    namespace["model"] = ScriptedModel(lambda messages: f"{len(messages)} messages")

    with TestClient(namespace["app"]) as http:
        replies = [
            http.post(f"/sessions/{session_id}/chat", json={"prompt": prompt}).json()["reply"].strip()
            for session_id, prompt in [("user-1", "Hi, I am Ada."), ("user-1", "My name?"), ("user-2", "Hello.")]
        ]
        assert http.delete("/sessions/user-2").json() == {"deleted": "user-2"}

    assert replies == ["1 messages", "3 messages", "1 messages"]  # the second request's agent was restored
    assert client.zcard("session:user-1:agent:assistant:messages") == 4
    assert client.keys("session:user-2*") == []  # logged out


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

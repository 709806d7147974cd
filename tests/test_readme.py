"""The README's and the PyPI readme's promises that code can check: the Quick start runs offline, links work on PyPI."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

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

"""Helpers for the CLI tests: run ``strands-valkey`` in-process or as a real process; seed sessions."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner, Result
from strands import tool

from strands_valkey_session_manager.cli.app import app

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # 1032 bytes, not UTF-8


def invoke(*args: str, input: str | None = None) -> Result:
    """Run a command in-process (stdout and stderr apart); unexpected exceptions fail the test."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def run_process(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m strands_valkey_session_manager.cli ARGS`` as a real OS process."""
    command = [sys.executable, "-m", "strands_valkey_session_manager.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ))


@tool
def lookup(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: The topic.
    """
    return f"facts about {topic}"

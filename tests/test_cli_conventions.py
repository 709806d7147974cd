"""What every command shares: exit codes, --url handling, --json, --help, the 'cli' extra."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_support import invoke

from strands_valkey_session_manager.testing.server import free_port

COMMANDS = ["sessions", "show x", "keys x", "export x", "import {file}", "delete x --yes", "expire x 5", "persist x"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_server_exits_3_naming_it_and_hiding_its_password(command: str, tmp_path) -> None:
    file = tmp_path / "in.json"
    file.write_text(json.dumps({"format": "strands-valkey-sessions", "version": 1, "sessions": []}))
    url = f"valkey://:hunter2@127.0.0.1:{free_port()}"

    result = invoke(*command.format(file=file).split(), "--url", url)

    assert result.exit_code == 3
    assert "cannot reach Valkey at valkey://:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["show", "user:42"],  # ':' is not allowed in a session id
        ["delete"],  # no session named
        ["expire", "user-42", "0"],
        ["sessions", "--limit", "0"],
        ["sessions", "--bogus"],
        ["export"],
        ["keys", "user-42", "--url", "http://localhost:6379"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert invoke(*args).exit_code == 2


@pytest.mark.parametrize("command", ["sessions", "show user-42", "keys user-42"])
def test_every_read_command_prints_parseable_json(cli, seed, command: str) -> None:
    seed("user-42", agents=("solo",))

    result = cli(*command.split(), "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout)


@pytest.mark.parametrize(
    "command", ["demo", "sessions", "show", "keys", "export", "import", "delete", "expire", "persist"]
)
def test_every_command_has_help_with_examples(command: str) -> None:
    result = invoke(command, "--help")

    assert result.exit_code == 0
    assert "Examples:" in result.stdout and f"$ strands-valkey {command}" in result.stdout


def test_without_the_cli_extra_the_command_says_how_to_install_it() -> None:
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'rich':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from strands_valkey_session_manager.cli import main\n"
        "main()\n"
    )

    done = subprocess.run([sys.executable, "-c", blocker, "sessions"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "pip install 'strands-valkey-session-manager[cli]'" in done.stderr


@pytest.mark.parametrize("command", ["sessions", "keys"])
def test_a_key_prefix_with_a_glob_escape_is_a_usage_error(cli, command: str) -> None:
    result = cli(command, *(["user-42"] if command == "keys" else []), "--key-prefix", "ten\\ant")
    assert result.exit_code == 2
    assert "--key-prefix" in result.stderr and "must not contain '\\\\'" in result.stderr

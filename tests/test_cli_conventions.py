"""What every command shares: exit codes, --url handling, --json, --help, the 'cli' extra."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from cli_support import invoke

from strands_valkey_session_manager import ValkeySessionManager, __version__
from strands_valkey_session_manager.cli import connect
from strands_valkey_session_manager.cli.app import app
from strands_valkey_session_manager.cli.output import shorten
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


# -- where the sessions are: -u/--url, $VALKEY_URL, $REDIS_URL ----------------------------------------


def test_u_is_short_for_url(server, client) -> None:
    ValkeySessionManager("user-42", client)

    result = invoke("sessions", "-u", server.url, "--json")

    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["user-42"]


def test_url_may_come_before_the_command_as_with_valkey_cli(server, client) -> None:
    ValkeySessionManager("user-42", client)

    listed = invoke("-u", server.url, "sessions", "--json")
    keys = invoke("--url", server.url, "keys", "user-42", "--json")
    after_wins = invoke("-u", f"valkey://127.0.0.1:{free_port()}", "sessions", "--url", server.url, "--json")

    assert [entry["session_id"] for entry in json.loads(listed.stdout)] == ["user-42"]
    assert [entry["key"] for entry in json.loads(keys.stdout)] == ["session:user-42"]
    assert after_wins.exit_code == 0 and json.loads(after_wins.stdout)


@pytest.mark.parametrize("command", [[], *([name] for name in app.commands)])
def test_help_needs_no_file_an_installed_wheel_lacks(command: list[str]) -> None:
    result = invoke(*command, "--help")

    assert result.exit_code == 0 and "docs/" not in result.stdout


def test_version_prints_the_package_version() -> None:
    result = invoke("--version")

    assert result.exit_code == 0
    assert result.stdout.strip() == f"strands-valkey {__version__}"


def test_redis_url_is_used_when_valkey_url_is_not_set(server, client, monkeypatch) -> None:
    ValkeySessionManager("user-42", client)
    monkeypatch.delenv("VALKEY_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", server.url)

    result = invoke("sessions", "--json")

    assert result.exit_code == 0, result.stderr
    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["user-42"]


def test_valkey_url_comes_before_redis_url(server, client, monkeypatch) -> None:
    ValkeySessionManager("user-42", client)
    monkeypatch.setenv("VALKEY_URL", server.url)
    monkeypatch.setenv("REDIS_URL", f"valkey://127.0.0.1:{free_port()}")

    assert invoke("sessions", "--json").exit_code == 0


def test_an_empty_url_is_a_usage_error_not_the_default(server, monkeypatch) -> None:
    monkeypatch.setenv("VALKEY_URL", server.url)

    result = invoke("sessions", "--url", "")

    assert result.exit_code == 2
    assert "--url is empty" in result.stderr


# -- errors whose hint matches their cause -----------------------------------------------------------


def test_nothing_listening_says_to_start_a_server() -> None:
    result = invoke("sessions", "--url", f"valkey://127.0.0.1:{free_port()}")

    assert result.exit_code == 3
    assert "Connection refused" in result.stderr and "Nothing listens there: start a server" in result.stderr


def test_a_wrong_password_says_authentication_failed_not_start_a_server(server) -> None:
    result = invoke("sessions", "--url", f"valkey://nobody:wrong@127.0.0.1:{server.port}")

    assert result.exit_code == 3
    assert "Authentication failed: check the user and password" in result.stderr
    assert "Start a server" not in result.stderr and "wrong" not in result.stderr


def test_cluster_against_a_standalone_server_is_one_line_and_exit_3(server) -> None:
    result = invoke("sessions", "--url", server.url, "--cluster")

    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "is not a cluster" in result.stderr and "leave out --cluster" in result.stderr


def test_tls_against_a_plaintext_port_fails_at_once_saying_to_use_valkey(server) -> None:
    started = time.monotonic()
    result = invoke("sessions", "--url", f"valkeys://127.0.0.1:{server.port}")

    assert result.exit_code == 3
    assert "does not speak TLS. Use a valkey:// URL" in result.stderr
    assert time.monotonic() - started < connect.TIMEOUT  # the TLS handshake alone used to wait this long


def test_plaintext_against_a_tls_port_says_to_use_valkeys(tls_server) -> None:
    result = invoke("sessions", "--url", f"valkey://127.0.0.1:{tls_server.port}")

    assert result.exit_code == 3
    assert "The server speaks TLS: use a valkeys:// URL" in result.stderr


def test_an_untrusted_certificate_says_to_give_the_ca(tls_server) -> None:
    result = invoke("sessions", "--url", tls_server.url)

    assert result.exit_code == 3
    assert "certificate is not trusted: give its CA in the URL, ?ssl_ca_certs=" in result.stderr


# -- long ids ------------------------------------------------------------------------------------------


def test_a_long_unknown_id_is_shortened_in_the_error(cli) -> None:
    long_id = "tenant-" + "x" * 500 + "-9"

    result = cli("show", long_id)

    assert result.exit_code == 1
    assert long_id not in result.stderr
    assert f"no session {shorten(long_id)} " in result.stderr and len(shorten(long_id)) == 60


def test_a_long_invalid_id_is_shortened_in_the_usage_error() -> None:
    long_id = "x" * 500 + ":1"

    result = invoke("show", long_id)

    assert result.exit_code == 2
    assert long_id not in result.stderr and "must not contain ':'" in result.stderr


def test_many_missing_ids_are_named_up_to_five_and_counted(cli) -> None:
    result = cli("delete", *(f"s{number}" for number in range(8)), "--yes")

    assert result.exit_code == 1
    assert "no session s0, s1, s2, s3, s4 and 3 more (under key prefix" in result.stderr


@pytest.mark.parametrize("command", ["sessions", "keys"])
def test_a_key_prefix_with_a_glob_escape_is_a_usage_error(cli, command: str) -> None:
    result = cli(command, *(["user-42"] if command == "keys" else []), "--key-prefix", "ten\\ant")
    assert result.exit_code == 2
    assert "--key-prefix" in result.stderr and "must not contain '\\\\'" in result.stderr


def test_a_bad_key_prefix_is_a_usage_error_before_connecting() -> None:
    nothing_there = f"valkey://127.0.0.1:{free_port()}"
    result = invoke("sessions", "--url", nothing_there, "--key-prefix", "ten\\ant")

    assert result.exit_code == 2
    assert "--key-prefix" in result.stderr and "must not contain" in result.stderr

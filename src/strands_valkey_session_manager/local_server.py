"""A throwaway ``valkey-server`` on a free loopback port, in a temp dir: for the demo, tests and benchmarks."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import valkey


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_server() -> str | None:
    """Path of ``valkey-server`` (or, failing that, ``redis-server``) on PATH."""
    return shutil.which("valkey-server") or shutil.which("redis-server")


class LocalValkey:
    """Start a server process with ``start()``, stop it by its own pid with ``stop()``.

    Nothing is persisted (no RDB, no AOF) unless ``args`` asks for it. ``args`` are extra
    ``--option value`` words for the server.
    """

    def __init__(self, binary: str | None = None, args: list[str] | None = None, port: int | None = None) -> None:
        """Describe the server; nothing starts until ``start()``."""
        found = binary or find_server()
        if found is None:
            raise FileNotFoundError(
                "no valkey-server on PATH. Install it (Debian 12: enable bookworm-backports, then "
                "`apt-get install -t bookworm-backports valkey-server`; macOS: `brew install valkey`) "
                "or point --url / VALKEY_URL at a running server."
            )
        self.binary = found
        self.args = list(args or [])
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="strands-valkey-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``valkey://127.0.0.1:<port>/0``."""
        return f"valkey://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> valkey.Valkey:
        """Return a client for this server (``decode_responses=True`` unless told otherwise)."""
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10}
        options.update(kwargs)
        return valkey.Valkey(host="127.0.0.1", port=self.port, **options)

    def start(self, timeout: float = 20.0) -> LocalValkey:
        """Start the server and wait (up to ``timeout`` s) until it answers PING."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "server.log"]
        self.process = subprocess.Popen([*command, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        probe = self.client(socket_timeout=1, socket_connect_timeout=1)
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.dir / "server.log"
                raise RuntimeError(f"{self.binary} exited: {error}{log.read_text() if log.exists() else ''}")
            try:
                probe.ping()
                return self
            except valkey.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{self.binary} did not answer PING on port {self.port} in {timeout}s") from None
                time.sleep(0.02)
            finally:
                probe.close()  # type: ignore[no-untyped-call]

    def restart(self, timeout: float = 20.0, crash: bool = False) -> LocalValkey:
        """Stop the server (SIGKILL if ``crash``) and start it again on the same port, keeping its dir and data."""
        self._halt(signal.SIGKILL if crash else signal.SIGTERM)
        return self.start(timeout)

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and remove its directory."""
        self._halt(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _halt(self, how: signal.Signals) -> None:
        """Send ``how`` to the server's pid and wait for it to exit (SIGKILL after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalValkey:
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop on leaving it, whatever happened."""
        self.stop()

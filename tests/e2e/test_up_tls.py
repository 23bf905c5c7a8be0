"""End to end: ``fleetlog up --tls`` as a real process. The CLI finds the CA in the context
``up`` wrote and verifies the server with it; another CA is refused with what to fix; a
restart reuses the certificates (clients keep trusting the server)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ops.natstls import ensure_local_tls
from streams.server import free_port

pytestmark = pytest.mark.e2e


def fleetlog(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fleetlog {' '.join(args)} failed: {result.stderr}")
    return result


@contextlib.contextmanager
def running_up(data_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "ops", "up", "--tls", "--data-dir", str(data_dir),
        "--port", str(port), "--no-agent", "--no-scheduler", "--no-api",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while fleetlog("get", "namespaces", check=False).returncode != 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"fleetlog up --tls not ready: {log.read_text()}"
            time.sleep(0.3)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_up_with_tls_is_verified_with_the_contexts_ca_and_keeps_its_certificates(
    tmp_path: Path, own_fleetlog_config: Path
) -> None:
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "up.log"
    pki = data_dir / "pki" / "nats"
    with running_up(data_dir, port, log):
        listed = fleetlog("get", "namespaces")
        assert "kube-system" in listed.stdout
        assert listed.stderr == ""  # nothing said about TLS (asyncio's warning at close)
        config = yaml.safe_load(own_fleetlog_config.read_text())
        (cluster,) = [c["cluster"] for c in config["clusters"] if c["name"] == "fleetlog"]
        assert cluster["server"] == f"tls://127.0.0.1:{port}"
        assert cluster["certificate-authority"] == str((pki / "ca.crt").resolve())
        for key in ("ca.key", "server.key"):
            assert stat.S_IMODE(os.stat(pki / key).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(pki).st_mode) == 0o700
        other = ensure_local_tls(tmp_path / "elsewhere", host="127.0.0.1")
        refused = fleetlog("--tls-ca", str(other.ca), "get", "namespaces", check=False)
        assert refused.returncode == 1
        assert "is not trusted: its certificate does not verify" in refused.stderr
        plain = fleetlog(
            "--server", f"nats://127.0.0.1:{port}", "--tls-ca", str(other.ca), "get", "ns",
            check=False,
        )  # fmt: skip
        assert plain.returncode == 1 and "is not trusted" in plain.stderr
    certificates = {name: (pki / name).read_bytes() for name in ("ca.crt", "server.crt")}
    with running_up(data_dir, port, log):
        assert "kube-system" in fleetlog("get", "namespaces").stdout
    assert {name: (pki / name).read_bytes() for name in certificates} == certificates

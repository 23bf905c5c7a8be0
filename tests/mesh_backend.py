"""A loopback HTTP backend the mesh's behaviour tests can steer, run as its own process.

``python -m http.server`` answers every request alike; a load balancer, a retry policy or a
fault filter is only observable against a backend that can fail on purpose, hold a request
open, and say how many requests reached it. Run as a script (``--name``, ``--port``, and
``--flaky`` / ``--hold``), or through :func:`steerable_backends`, which starts them and stops
them by PID.

Paths: ``/`` answers the backend's name (with ``--flaky``, every second one is a 503);
``/hold`` answers at once, or with ``--hold`` only once ``/release`` was called; ``/held`` is
how many ``/hold`` requests are open now and ``/count`` how many ``/`` requests arrived. The
last three are asked directly, not through Envoy.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from streams.server import free_port

HOLD_LIMIT = 120.0
"""A held request answers by itself after this long, so a test that never releases it does
not leave Envoy's connection open for ever."""


class _State:
    def __init__(self, *, name: str, flaky: bool, hold: bool) -> None:
        self.name, self.flaky, self.hold = name, flaky, hold
        self.lock = threading.Lock()
        self.count = 0
        self.held = 0
        self.released = threading.Event()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, so Envoy's upstream connections are reused as a real backend's.
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                with state.lock:
                    state.count += 1
                    failing = state.flaky and state.count % 2 == 0
                self._answer(503 if failing else 200, state.name)
            elif path == "/hold":
                if state.hold:
                    with state.lock:
                        state.held += 1
                    state.released.wait(HOLD_LIMIT)
                    with state.lock:
                        state.held -= 1
                self._answer(200, state.name)
            elif path == "/release":
                state.released.set()
                self._answer(200, "released")
            elif path in ("/held", "/count"):
                with state.lock:
                    value = state.held if path == "/held" else state.count
                self._answer(200, str(value))
            else:
                self._answer(404, "not found")

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flaky", action="store_true", help="every second / is a 503")
    parser.add_argument("--hold", action="store_true", help="/hold waits for /release")
    args = parser.parse_args(argv)
    state = _State(name=args.name, flaky=args.flaky, hold=args.hold)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(state))
    server.daemon_threads = True
    server.serve_forever()


def ask(port: int, path: str) -> str:
    """A backend's own answer on ``path``, asked directly (not through Envoy)."""
    answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    answer.raise_for_status()
    return answer.text


@contextlib.contextmanager
def steerable_backends(
    names: Sequence[str], *, flaky: Sequence[str] = (), hold: Sequence[str] = ()
) -> Iterator[Mapping[str, int]]:
    """One backend process per name on a free loopback port; yields name -> port once all
    answer; stopped by PID."""
    ports: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            port = free_port()
            command = [sys.executable, str(Path(__file__)), "--name", name, "--port", str(port)]
            command += ["--flaky"] if name in flaky else []
            command += ["--hold"] if name in hold else []
            processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            ports[name] = port
        deadline = time.monotonic() + 60
        for port in ports.values():
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if ask(port, "/held") == "0":
                        break
                assert time.monotonic() < deadline, f"backend on port {port} never answered"
                time.sleep(0.1)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()

"""A host-wide lock for the benchmarks that make pod networks on the host: ``bench_agent``,
``bench_proxy`` and ``bench_podnet``.

Why this exists: their bridges, name prefixes and cluster CIDRs are fixed (so that a run
removes what a crashed one left behind), and each removes every namespace and veth of its
prefix when it ends. Two runs at once on a shared host (two engineers measuring the agent)
destroyed each other's pods and reported the other's sandboxes as left behind; and
``bench_proxy``'s CIDR overlaps ``bench_podnet``'s. So a run takes this lock first and, when
another run holds it, says so and waits for it to end. ``flock`` is released by the kernel
when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "fleetlog-bench-pod-networks.lock"
LOCK_DIRECTORIES = (Path("/run/lock"), Path("/tmp"))
"""Host-wide places, whatever ``TMPDIR`` a run has (the first that exists)."""


def lock_path() -> Path:
    directory = next((d for d in LOCK_DIRECTORIES if d.is_dir()), LOCK_DIRECTORIES[-1])
    return directory / LOCK_NAME


@contextlib.contextmanager
def host_pod_networks(bench: str, path: Path | None = None) -> Iterator[None]:
    """Held while ``bench`` makes, measures and removes its pod networks (``path``: another
    lock file than the host's, for tests)."""
    path = path or lock_path()
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"{bench}: another benchmark is using pod networks on this host; waiting for "
                f"it to end (lock {path})",
                file=sys.stderr,
                flush=True,
            )
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            print(f"{bench}: waited {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield

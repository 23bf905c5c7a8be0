"""Optional isolation of a container process with bubblewrap (``bwrap``).

Why this exists: a plain process sees every other process and can write anywhere its user can.
A pod (or a node setting) may ask for more: the process then runs under ``bwrap`` with private
pid, mount, IPC and UTS namespaces (the hostname is the pod's name, as in Kubernetes), the host
filesystem read-only, a private ``/tmp``, a fresh ``/proc`` and a minimal ``/dev``; only the
container's own directories are writable.

Deliberate choices:

* No ``--die-with-parent``: the parent is the agent, and containers must survive an agent
  restart.
* No ``--new-session``: the sandbox stays in the process group the runtime created, so SIGTERM
  and SIGKILL of the group reach the workload on nodes without cgroups too. (``--new-session``
  guards against TIOCSTI on a shared terminal; containers have no terminal: stdin is
  /dev/null and the runtime already starts a new session.)
* When the workload ends, ``bwrap`` exits with its status, and the pid namespace takes every
  process left inside with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class IsolationUnavailable(RuntimeError):
    """A container asked for isolation on a node that cannot provide it."""


@dataclass(frozen=True, slots=True)
class Bubblewrap:
    """Builds the ``bwrap`` command line that wraps a container's argv."""

    executable: str | None

    @classmethod
    def detect(cls, executable: str | None = None) -> Bubblewrap:
        return cls(executable or shutil.which("bwrap"))

    @property
    def available(self) -> bool:
        return self.executable is not None

    @property
    def reason(self) -> str:
        if self.available:
            return f"bubblewrap at {self.executable}"
        return "bubblewrap (bwrap) is not installed on this node"

    def prefix(
        self,
        *,
        writable: Iterable[Path],
        working_dir: Path | None,
        hostname: str,
        readable: Iterable[Path] = (),
        mounts: Iterable[tuple[str, str]] = (),
    ) -> list[str]:
        """The argv to put in front of the container's own argv (it ends with ``--``);
        ``mounts``: (source, target) bound read-only (configMap and secret volumes)."""
        if self.executable is None:
            raise IsolationUnavailable(
                "the pod asks for isolation but bubblewrap (bwrap) is not installed on this node"
            )
        argv = [
            self.executable,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", hostname,
        ]  # fmt: skip
        # After the /tmp tmpfs, so a directory under /tmp is still the host's: the command's
        # own installation (read-only; a virtualenv may live under /tmp) and what it may write.
        tmp = Path("/tmp")
        for path in readable:
            if path == tmp or tmp in path.parents:
                argv += ["--ro-bind", str(path), str(path)]
        for path in writable:
            argv += ["--bind", str(path), str(path)]
        for source, target in mounts:
            argv += ["--ro-bind", source, target]
        if working_dir is not None:
            argv += ["--chdir", str(working_dir)]
        return [*argv, "--"]

    def mount_prefix(self, mounts: Iterable[tuple[str, str]]) -> list[str]:
        """For a container that is not isolated but mounts volumes: the host's view as it is
        (devices and /proc included), in a mount namespace of its own where each (source,
        target) is bound read-only. Nothing else is unshared."""
        if self.executable is None:
            raise IsolationUnavailable(
                "the pod mounts configMap or secret volumes, which need bubblewrap (bwrap) "
                "on this node"
            )
        argv = [self.executable, "--dev-bind", "/", "/"]
        for source, target in mounts:
            argv += ["--ro-bind", source, target]
        return [*argv, "--"]

"""Directories and empty files made ahead of a burst, for a start worker's container starts.

Why this exists: a container's first start makes seven inodes under the agent's root (its
pod's, its container's, its instance's and its working directory; ``stdout``, ``stderr`` and
the state file's temporary), and on this project's hosts a new inode was the largest part of a
start: 100-300 µs of cpu each on ext4 without a journal (the inode allocator reads the inode
table to skip recently deleted inodes: ``recently_deleted`` led a kernel profile), ~1.5 ms of a
start worker's ~3-4.5 ms. Renaming an inode made earlier into place (``renameat2`` with
``RENAME_NOREPLACE``) costs 10-30 µs. A start worker makes spares while it is idle
(:meth:`Spares.refill`) and takes them during a burst; once they run out, or wherever the
rename is refused (another filesystem, a kernel or filesystem without ``renameat2``), it makes
each inode as before.

What a start sees is unchanged: a spare directory is made with the same ``mkdir`` (mode
``0o777`` less the umask), a spare file with the same mode as the file it stands for
(``0o600``, empty); ``RENAME_NOREPLACE`` never replaces what is already there (an existing
directory stays as it is, an existing output file is appended to, as ``mkdir(exist_ok=True)``
and ``O_APPEND`` did). Only the inodes' birth times are earlier. The spares live in a
directory of the worker's own beside ``pods/`` (never under it: the agent's garbage collector
and the adoption scan read ``pods/``), removed when the worker ends and, for a worker that was
killed, by the next runtime that starts workers on the same root.

The log shipper (``handlers.agent.logship``) keeps files of its own the same way, for the
temporaries of its ``.shipped.json`` saves (files only, of ``open``'s default mode).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SPARES_DIR = ".start-spares"
"""Under the runtime's root: one directory per start worker (its pid)."""
SPARE_STARTS = 64
"""Starts a worker keeps spares for: a burst of 128 pods over the default two workers."""
DIRS_PER_START = 4  # the pod's, the container's, the instance's and the working directory
FILES_PER_START = 3  # stdout, stderr, the state file's temporary
FILE_MODE = 0o600
"""As the runtime's output and state files: what a program prints may be a secret."""

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
_NO_SPARE = -1


class Spares:
    """One start worker's spare directories and files under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        starts: int = SPARE_STARTS,
        dirs_per_start: int = DIRS_PER_START,
        files_per_start: int = FILES_PER_START,
        file_mode: int = FILE_MODE,
    ) -> None:
        self.directory = directory
        self.dirs_per_start = dirs_per_start
        self.files_per_start = files_per_start
        self.file_mode = file_mode
        """The mode ``os.open`` is given for a spare file: what the file it stands for is
        opened with (the umask applies to both alike)."""
        self.want_dirs = starts * dirs_per_start
        self.want_files = starts * files_per_start
        self._dirs: list[str] = []
        self._files: list[str] = []
        self._made = 0
        self.usable = _renameat2 is not None
        if self.usable:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._give_up(f"cannot make {directory}: {exc}")

    @property
    def wanted(self) -> bool:
        """Whether :meth:`refill` has something to make."""
        return self.usable and (
            len(self._dirs) < self.want_dirs or len(self._files) < self.want_files
        )

    def refill(self, budget: int) -> None:
        """Make up to ``budget`` spares, directories and files in the proportion a start
        takes them, so a burst that stops halfway leaves both kinds."""
        prefix = str(self.directory) + "/"
        for _ in range(budget):
            dirs_short = self.want_dirs - len(self._dirs)
            files_short = self.want_files - len(self._files)
            if dirs_short <= 0 and files_short <= 0:
                return
            self._made += 1
            path = f"{prefix}{self._made}"
            try:
                if files_short <= 0 or (
                    dirs_short > 0
                    and dirs_short * self.files_per_start >= files_short * self.dirs_per_start
                ):
                    os.mkdir(path)
                    self._dirs.append(path)
                else:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                    os.close(os.open(path, flags, self.file_mode))
                    self._files.append(path)
            except FileExistsError:
                continue  # left by an earlier worker of the same pid: not ours to take
            except OSError as exc:
                self._give_up(f"cannot make a spare in {self.directory}: {exc}")
                return

    def makedirs(self, path: Path) -> None:
        """``path.mkdir(parents=True, exist_ok=True)``, from spares where there are some."""
        outcome = self._take(self._dirs, path)
        if outcome == errno.ENOENT and not path.parent.is_dir():
            self.makedirs(path.parent)  # ends: "/" is a directory
            outcome = self._take(self._dirs, path)
        if outcome == 0 or (outcome == errno.EEXIST and path.is_dir()):
            return
        if outcome not in (_NO_SPARE, errno.EEXIST, errno.ENOTDIR):
            # ENOENT with the parent there: the spare is gone (its directory was removed).
            self._give_up(f"renameat2 into {path}: {os.strerror(outcome)}")
        path.mkdir(parents=True, exist_ok=True)  # as without spares, errors included

    def place_file(self, path: Path) -> None:
        """An empty file of the spares' mode at ``path`` from a spare, unless one is there
        already or there is no spare (then the caller's ``O_CREAT`` makes it as before)."""
        outcome = self._take(self._files, path)
        if outcome in (0, _NO_SPARE, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
            return  # what the caller's open finds there is what it found without spares
        if outcome == errno.ENOENT and not path.parent.is_dir():
            return  # the caller's open fails as it did
        self._give_up(f"renameat2 into {path}: {os.strerror(outcome)}")

    def remove(self) -> None:
        """Remove every spare (the worker is ending)."""
        self._dirs.clear()
        self._files.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _take(self, spares: list[str], target: Path) -> int:
        """0 once a spare of ``spares`` has been renamed to ``target``; else the errno of
        ``renameat2(..., RENAME_NOREPLACE)`` (the spare kept), or ``_NO_SPARE``."""
        if not spares or not self.usable or _renameat2 is None:
            return _NO_SPARE
        spare = spares.pop()
        if (
            _renameat2(_AT_FDCWD, spare.encode(), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
            == 0
        ):
            return 0
        spares.append(spare)
        return ctypes.get_errno()

    def _give_up(self, why: str) -> None:
        """No spares from now on: every start makes its own inodes, as without spares."""
        if self.usable:
            log.warning("spares.off", directory=str(self.directory), reason=why)
        self.usable = False
        self._dirs.clear()
        self._files.clear()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory, ignore_errors=True)


def clear(root: Path) -> None:
    """Remove the spares of every earlier start worker under ``root`` (a runtime starting its
    workers: the earlier ones ended with their agent)."""
    shutil.rmtree(root / SPARES_DIR, ignore_errors=True)

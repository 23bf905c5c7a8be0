"""The rules that keep a container's output bounded: rotation on the node, shipping to the log.

Why this exists: a container writing as fast as it can (``yes``) would otherwise fill the
node's disk and keep the agent shipping its backlog for minutes after the pod is gone. The
node agent does the file work (``handlers.agent.logship``); *what* it does at each step is
decided here, without files, clocks or a network, so tests can pin the rules down:

* **Rotation, as the kubelet does** (``containerLogMaxSize`` 10Mi, ``containerLogMaxFiles`` 5,
  the number counting the live file): a live file that reached the maximum size is rotated;
  at most ``max_files - 1`` rotated files are kept, the oldest removed first
  (:func:`plan_rotation`). A live file found beyond the size keeps only its newest
  ``max_size`` bytes in the rotated file. One being flooded (found at twice the size or more,
  or written at :data:`FLOOD_RATE` or faster, :func:`flooded`) is emptied without a copy,
  since copying a flood costs as much as writing it (a rotator on time copied `yes`'s 1 GB/s:
  a third of a core) and the copy would be removed a few rotations later; the older rotated
  files stay. Shipping takes 1 MiB/s of a container by default: of a flood it ships a sliver
  anyway.
* **Shipping, bounded per container** (:class:`ShippingLimits`, :func:`plan_shipping`): a
  token bucket caps the bytes a second one container ships, and at most ``backlog`` unshipped
  bytes of one output stream are kept waiting. What is beyond (or was rotated away before it
  was shipped) is skipped, and the reader is told with :func:`dropped_marker`.
* **When to look again** (:func:`growth_rate`, :func:`next_check`): a copy-truncate rotator
  can only bound a file by looking at it, so a live file is looked at again when, at the rate
  it grew, it would reach the maximum size: a flooded file every ``shortest`` seconds, an idle
  one every ``longest``. The rate remembers the fastest recent growth (it halves each
  :data:`RATE_HALF_LIFE_S` without such growth), so a writer that pauses between bursts (as
  the kernel pauses one that dirties pages faster than the disk takes them) is still looked
  at every ``shortest`` seconds when it resumes.
* **Old instances**: of a container's instances, the newest two keep their files (the running
  one and the one ``--previous`` shows; the kubelet keeps one dead container per container):
  :func:`stale_instances`.

Positions are *logical*: the bytes of one output stream of one instance counted from its
start, across rotations, so a position names the same byte before and after a rotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.errors import FleetError, ValidationFailed
from core.meta.quantity import parse_quantity

DEFAULT_MAX_SIZE = "10Mi"
DEFAULT_MAX_FILES = 5
FLOOD_FACTOR = 2
"""A live file found at this many times the maximum size is emptied without a copy."""
FLOOD_RATE = 64 * 1024 * 1024
"""A live file written this fast (bytes a second) is flooded: 64 times the default shipping
rate, and its copies would cost a few percent of a core."""
RATE_HALF_LIFE_S = 1.0
"""A live file's estimated rate of growth halves in this time without growth as fast."""
KEPT_INSTANCES = 2
"""Instances of one container whose files are kept: the current one and the previous."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerLogPolicy:
    """How big a container's output file grows before it is rotated, and how many files of
    one output stream (the live one included) a container instance keeps."""

    max_size: int = 10 * 1024 * 1024
    max_files: int = DEFAULT_MAX_FILES

    @classmethod
    def parse(
        cls, *, max_size: str = DEFAULT_MAX_SIZE, max_files: int = DEFAULT_MAX_FILES
    ) -> ContainerLogPolicy:
        """The policy from the kubelet's settings; :class:`ValidationFailed` saying which
        flag is wrong and why (the kubelet's own rule: at least 2 files)."""
        try:
            size = parse_quantity(max_size).value()
        except FleetError as exc:
            raise ValidationFailed(
                f"--container-log-max-size {max_size!r}: {exc.message}",
                field="containerLogMaxSize",
            ) from None
        if size <= 0:
            raise ValidationFailed(
                f"--container-log-max-size {max_size!r}: must be greater than 0",
                field="containerLogMaxSize",
            )
        if max_files < 2:
            raise ValidationFailed(
                f"--container-log-max-files {max_files}: must be greater than 1 "
                "(the live file and at least one rotated file)",
                field="containerLogMaxFiles",
            )
        return cls(max_size=size, max_files=max_files)

    @property
    def disk_bound(self) -> int:
        """The bytes one output stream of one instance keeps on disk between rotations."""
        return self.max_size * self.max_files


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotation:
    """What to do with a live file of ``size`` bytes: copy its bytes ``[keep_from, size)``
    into a new rotated file (none if that is empty), empty it, and remove the rotated files
    numbered in ``remove``."""

    keep_from: int
    size: int
    remove: tuple[int, ...]

    @property
    def copies(self) -> bool:
        return self.keep_from < self.size


def flooded(rate: float) -> bool:
    """Whether a file growing at ``rate`` bytes a second is being flooded."""
    return rate >= FLOOD_RATE


def plan_rotation(
    *, size: int, rotated: Sequence[int], policy: ContainerLogPolicy, flood: bool = False
) -> Rotation | None:
    """Whether a live file of ``size`` bytes is rotated now, given the numbers of the rotated
    files kept (oldest first) and whether its writer is known to flood it; None while it is
    below the maximum size."""
    if size < policy.max_size:
        return None
    if flood or size >= FLOOD_FACTOR * policy.max_size:
        keep = policy.max_files - 1  # no new file: the rotated ones stay as they are
        return Rotation(
            keep_from=size, size=size, remove=tuple(rotated[: max(0, len(rotated) - keep)])
        )
    keep = policy.max_files - 2  # of the existing rotated files, beside the new one
    remove = tuple(rotated[: max(0, len(rotated) - keep)])
    return Rotation(keep_from=max(0, size - policy.max_size), size=size, remove=remove)


def growth_rate(previous: float, *, grown: int, elapsed: float, resolution: float = 0.0) -> float:
    """A live file's estimated rate of growth (bytes a second) after a check that found it
    ``grown`` bytes bigger ``elapsed`` seconds after the last: what it grew at, or the last
    estimate decayed over ``elapsed`` (:data:`RATE_HALF_LIFE_S`) when that is more. Growth
    seen within less than ``resolution`` is taken as spread over ``resolution``: one write of
    4 KiB microseconds after a look is not a writer at gigabytes a second."""
    if elapsed <= 0:
        return previous
    measured = grown / max(elapsed, resolution) if grown > 0 else 0.0
    return max(measured, previous * 0.5 ** (elapsed / RATE_HALF_LIFE_S))


def next_check(
    *, size: int, rate: float, policy: ContainerLogPolicy, shortest: float, longest: float
) -> float:
    """Seconds until a live file of ``size`` bytes growing at ``rate`` is looked at again:
    when it would reach the maximum size, but no sooner than ``shortest`` and no later than
    ``longest``. The rotator's overshoot of the size is what the writer adds in that time."""
    if rate <= 0:
        return longest
    return min(longest, max(shortest, (policy.max_size - size) / rate))


@dataclass(frozen=True, slots=True, kw_only=True)
class ShippingLimits:
    """How much of one container's output is shipped: ``rate`` bytes a second (stdout and
    stderr together) after a ``burst``, and at most ``backlog`` bytes of one stream waiting.
    A container writing faster loses the excess from the log (never from its own run), and
    the shipper is never more than about ``backlog / rate`` seconds behind."""

    rate: int = 1024 * 1024
    burst: int = 4 * 1024 * 1024
    backlog: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0 or self.backlog <= 0:
            raise ValueError("shipping limits must be positive")


@dataclass(frozen=True, slots=True)
class Allowance:
    """A container's token bucket: ``tokens`` bytes it may ship, as of instant ``at``."""

    tokens: float
    at: float


def refill(allowance: Allowance | None, *, now: float, limits: ShippingLimits) -> Allowance:
    """The bucket at ``now``: refilled at ``limits.rate`` since it was last seen, up to the
    burst; a new bucket starts full."""
    if allowance is None:
        return Allowance(float(limits.burst), now)
    elapsed = max(0.0, now - allowance.at)
    return Allowance(min(float(limits.burst), allowance.tokens + elapsed * limits.rate), now)


def spend(allowance: Allowance, amount: int) -> Allowance:
    return Allowance(allowance.tokens - amount, allowance.at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipPlan:
    """Where shipping one stream goes next: skip to ``start`` (a drop of ``start - position``
    bytes, to be announced) and ship up to ``until``."""

    position: int
    start: int
    until: int

    @property
    def dropped(self) -> int:
        return self.start - self.position


def plan_shipping(
    *, position: int, end: int, oldest: int, budget: int, limits: ShippingLimits
) -> ShipPlan:
    """From ``position`` (shipped so far), with output written up to ``end`` and kept on the
    node from ``oldest`` on: skip what rotation removed before it was shipped, keep at most
    ``limits.backlog`` bytes waiting (the newest), and ship at most ``budget`` bytes."""
    start = max(position, oldest)
    if end - start > limits.backlog:
        start = end - limits.backlog
    return ShipPlan(position=position, start=start, until=min(end, start + max(0, budget)))


def dropped_marker(count: int, *, mid_line: bool = False) -> bytes:
    """The line a reader sees where output was skipped (on a line of its own, also when the
    output before it stopped mid-line)."""
    return (b"\n" if mid_line else b"") + b"[fleetlog: %d bytes of output dropped]\n" % count


def stale_instances(restart_counts: Iterable[int], *, keep: int = KEPT_INSTANCES) -> list[int]:
    """Of a container's instances (by restart count), those whose files may go: all but the
    newest ``keep``."""
    ordered = sorted(set(restart_counts))
    return ordered[: max(0, len(ordered) - keep)]

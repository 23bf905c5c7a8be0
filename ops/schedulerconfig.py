"""Reading the scheduler's configuration file for ``fleetlog scheduler --config`` and ``fleetlog
up --scheduler-config``.

Why this exists: both commands take the same KubeSchedulerConfiguration file and must refuse a
bad one the same way, before anything starts; what the file means is decided in
:mod:`core.scheduling.config`, this only reads it and hands the result to the scheduler. It is
light (no handler, no NATS), so a command loads it before connecting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ValidationFailed
from core.scheduling.config import SchedulerConfiguration, parse_scheduler_config


def read_scheduler_config(path: Path) -> SchedulerConfiguration:
    """A KubeSchedulerConfiguration file (YAML); ``ValidationFailed`` lists what is wrong."""
    import yaml  # only a command given a file pays for loading it

    from ops.safeyaml import YAMLLimitExceeded, load_one

    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationFailed(f"cannot read the file: {exc.strerror}") from None
    try:
        doc = load_one(text)
    except YAMLLimitExceeded as exc:
        raise ValidationFailed(f"refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"not valid YAML: {exc}") from None
    return parse_scheduler_config(doc)


def scheduler_options(configuration: SchedulerConfiguration | None) -> dict[str, Any]:
    """The :class:`Scheduler` arguments a configuration file sets (none: its defaults)."""
    if configuration is None:
        return {}
    return {
        "config": configuration.profile,
        "initial_backoff": configuration.pod_initial_backoff_seconds,
        "max_backoff": configuration.pod_max_backoff_seconds,
    }

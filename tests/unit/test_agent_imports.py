"""The node agent's modules are loaded when it starts, not on the loop during a burst of pods.

Why this exists: the first probe of a burst imported the probe module (and httpx with it) on
the agent's event loop, ~0.2 s in which no pod of the burst made progress.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_pod_worker_loads_the_probes_with_it() -> None:
    code = "import sys, handlers.agent.pods; print('handlers.agent.probes' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "True"

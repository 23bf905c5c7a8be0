"""Command gateways as processes of their own: ``fleetlog gateway`` and ``up --gateways N``.

Why this exists: one Python process decides on one core, and a burst of commands (a large
``apply``, a namespace being emptied) is bound by it. The gateway keeps no state of its own that
another gateway could contradict (decisions are checked by the append's expectations, retries
are recognised from the events on the log and JetStream's Msg-Id window: see
``handlers.gateway``), so any number of gateway processes, on any host, may serve
``fleet.cmd.>`` in the same queue group and NATS spreads the commands over them.

:func:`run_gateway` is one such process's body (``fleetlog gateway``); :class:`GatewayReplicas`
is how ``fleetlog up --gateways N`` runs N-1 of them beside its own gateway: child processes it
starts after the streams exist, restarts if one exits (after a pause that grows while it
keeps failing), and stops by PID with
SIGTERM (SIGKILL after a grace period) when ``up`` stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.services.ranges import DEFAULT_RANGES, ServiceRanges
from handlers.gateway import Gateway
from streams.cancellation import checkpoint
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.identity import Credentials
from streams.seal import configured as configured_seal
from streams.sealing import check_seal_key, writer_seal_key

log = structlog.get_logger(__name__)

RESTART_PAUSE_S = 1.0
MAX_RESTART_PAUSE_S = 60.0
STOP_GRACE_S = 10.0


async def run_gateway(
    url: str,
    ready: asyncio.Event,
    *,
    features: FeatureGates = DEFAULT_FEATURES,
    service_ranges: ServiceRanges = DEFAULT_RANGES,
    name: str = "fleetlog-gateway",
    cluster_key: bytes | None = None,
    credentials: Credentials | None = None,
    wall_keys: Path | None = None,
) -> None:
    """Serve commands from this process until cancelled (``ready`` once subscribed).
    ``wall_keys``: the directory of ``up``'s keys when it walls its embedded server (the
    gateway then knows them and refuses unsigned commands)."""
    from ops.natswall import WallKeys, gateway_identities

    keys = WallKeys(wall_keys) if wall_keys is not None else None
    nc = await connect(url, name=name, wait=True, credentials=credentials)
    try:
        await ensure_streams(nc)  # idempotent: a gateway may start before any `fleetlog up`
        await writer_seal_key()  # before the store: it seals with it
        async with EventStore(nc) as store:
            await check_seal_key(store, configured_seal())  # refused without the log's key
            gateway = await Gateway.create(
                nc, store, features=features, service_ranges=service_ranges,
                cluster_key=cluster_key,
                identities=gateway_identities(keys, credentials),
                require_signatures=keys is not None,
            )  # fmt: skip
            await gateway.run(ready)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


def gateway_command(
    url: str,
    *,
    features: FeatureGates,
    service_ranges: ServiceRanges,
    log_level: str,
    cluster_key: Path | None = None,
    credentials_file: Path | None = None,
    seal_key: Path | None = None,
    wall_keys: Path | None = None,
    tls_ca: Path | None = None,
) -> list[str]:
    """The command line of a gateway process configured as ``up`` is (connecting with the
    seed in ``credentials_file``, when the server wants one; sealing with ``seal_key``;
    verifying the server's TLS certificate with ``tls_ca``)."""
    identity = ["--credentials", str(credentials_file)] if credentials_file is not None else []
    if tls_ca is not None:
        identity += ["--tls-ca", str(tls_ca)]
    sealing = ["--seal-key", str(seal_key)] if seal_key is not None else []
    command = [
        sys.executable, "-m", "ops", "--server", url, "--log-level", log_level, *identity,
        *sealing,
        "gateway",
        "--service-cluster-ip-range", str(service_ranges.cluster_ips),
        "--service-node-port-range", str(service_ranges.node_ports),
    ]  # fmt: skip
    if str(features):
        command += ["--feature-gates", str(features)]
    if cluster_key is not None:
        command += ["--cluster-key", str(cluster_key)]
    if wall_keys is not None:
        command += ["--wall-keys", str(wall_keys)]
    return command


class GatewayReplicas:
    """``count`` gateway child processes, kept running until :meth:`run` is cancelled."""

    def __init__(self, command: Sequence[str], count: int) -> None:
        self._command = list(command)
        self._count = count
        self.pids: list[int] = []
        """The PIDs of the children running now."""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for index in range(self._count):
                tasks.create_task(self._keep_running(index))

    async def _keep_running(self, index: int) -> None:
        pause = RESTART_PAUSE_S
        while True:
            checkpoint()
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(*self._command)
            self.pids.append(process.pid)
            log.info("gateway.replica_started", replica=index, pid=process.pid)
            try:
                status = await process.wait()
            except asyncio.CancelledError:
                await _stop(process)
                raise
            finally:
                self.pids.remove(process.pid)
            # One that keeps failing at start is retried less and less often (up to a
            # minute apart); one that ran for a while is replaced at once.
            pause = RESTART_PAUSE_S if time.monotonic() - started > MAX_RESTART_PAUSE_S else pause
            log.warning(
                "gateway.replica_exited", replica=index, pid=process.pid, status=status,
                restart_in_s=pause,
            )  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(MAX_RESTART_PAUSE_S, pause * 2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the gateway finishes its commands in flight), SIGKILL after the grace."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

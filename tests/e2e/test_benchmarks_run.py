"""Smoke test of the benchmarks that append to the log themselves: each runs at a tiny size,
must finish, print its figure lines and leave no quarantined event behind.

Why this exists: when the log was sealed, ``ops/bench_scheduler.py``'s own appends (simulated
nodes, pods) went unsealed, every reader quarantined them and the bench waited for ever; nobody
noticed until someone ran it. The benchmarks are how the project is checked from outside, so
the ones that write events in-process or through processes of their own (simulated nodes, the
history generator, the event store's appends with ``--seal``) run here at a size that takes
seconds. Nothing is asserted on speed: only that a run ends, says what it measured (counts the
run was asked for), and that no reader quarantined an event (``event.quarantined`` in its
output or in the logs its work directory keeps).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 150.0
"""A run that takes longer hangs (each takes seconds; a loaded CI host, a few times that)."""


@dataclass(frozen=True)
class Bench:
    module: str
    args: str
    """Its command line's options, split on spaces."""
    figures: tuple[str, ...]
    """Regular expressions, each matching a line of the run's standard output."""
    name: str = ""
    """The test's id, where one module runs in two ways (its module's name otherwise)."""


BENCHES = [
    Bench(
        "bench_scheduler",
        "--nodes 10 --warmup 5 --pods 30 --replicas 1",
        (
            r"^10 nodes registered in ",
            r"^every node Ready with its pod range after ",
            r"\] 1 replica\(s\): 30 pods in [\d.]+s = [\d,]+ pods/s; latency created→bound p50 ",
        ),
    ),
    Bench(
        "bench_deployment",
        "--replicas 4 --nodes 2 --start-delay 0.1 --timeout 60",
        (
            r"^4 replicas to fully available: [\d.]+ s, \d+ events \(.*PodReady 4",
            r"^rolling update of 4 \(maxSurge 25%, maxUnavailable 25%\): [\d.]+ s, \d+ events",
        ),
    ),
    Bench(
        "bench_hpa",
        "--hpas 2 --pods 10 --period 1 --steady 2 --probes 1",
        (
            r'^  "hpas": 2,$',
            r'^  "pods": 10,$',
            r'^    "evaluations": [1-9]\d*,$',
            r'^    "probes": 1,$',
            r'^    "unanswered_after_30s": 0,$',
        ),
    ),
    Bench(
        "bench_snapshot",
        "--pods 50 --saves 1",
        (
            r'^  "pods": 50,$',
            r'^      "longest_loop_stall_ms": [\d.]+,$',
            r'^      "bytes": [1-9]\d*$',
        ),
    ),
    Bench(
        "bench_kubeapi",
        "--pods 20 --rounds 2 --writes 5 --watchers 2",
        (
            r"^created 20 pods through the gateway in ",
            r"^list 20 pods as JSON: p50 ",
            r"^create a pod over HTTPS \(answered with the stored object\): p50 ",
            r"^create a pod over NATS \(the gateway's answer\): p50 ",
            r"^2 watchers see a new pod: p50 ",
        ),
    ),
    Bench(
        "bench_log",
        # --keep-workdir: in tmp_path, where its up.log is read for quarantined events.
        "--events 500 --commands 30 --rate 50 --rounds 1 --seal --keep-workdir",
        (
            r"^event store append \(OCC, 1000 in flight\)\s+:\s+[\d,]+ events/s",
            r"^replay into the cluster read model\s+:\s+[\d,]+ events/s .*, [\d,]+ objects",
            r"^command round trip at 50/s offered, 30 commands: p50 ",
            r"^fleetlog up CPU while the commands ran: ",
        ),
    ),
    # Walled: up's own server behind the NATS wall; the commands must reach the log as the
    # identity that signed them (the bootstrap admin, exempt from APF: no 429 in the burst),
    # or as the user bound to `edit`.
    Bench(
        "bench_commands",
        "--walled --gateways 2 --burst 20 --sustained 20 --commands 20 --rate 50 --keep-workdir",
        (
            r"^fleetlog up with 2 gateway process\(es\), .*walled: commands signed by the "
            r"bootstrap admin",
            r"^commands act as fleetlog-admin \(the actor of event \d+\)$",
            r"^burst\s+20 commands in .* timed out 0, refused 0, throttled 0 ",
            r"^50/s\s+20 commands in .* refused 0, .*up CPU [\d.]+ ms/command, nats-server ",
        ),
        name="bench_commands-walled-admin",
    ),
    Bench(
        "bench_commands",
        "--walled --as-user --burst 20 --sustained 20 --commands 20 --rate 50 --keep-workdir",
        (
            r"^commands act as bench \(the actor of event \d+\)$",
            r"^sustained\s+20 commands in .* timed out 0, refused 0, ",
        ),
        name="bench_commands-walled-user",
    ),
    Bench(
        "bench_history",
        "--events 10000 --rounds 1 --sample 1000 --history-runs 2 --log-history-runs 1"
        " --at-runs 2 --audit-runs 1",
        (
            r"^history of the ordinary pod .* \(4 events, aggregate rebuild ok\)",
            r"^audit verify: 10,000 events of [\d,]+ aggregates .* 0 break\(s\), 10,000 sealed",
        ),
    ),
]


@pytest.mark.parametrize("bench", BENCHES, ids=[b.name or b.module for b in BENCHES])
def test_benchmark_runs_and_prints_its_figures(bench: Bench, tmp_path: Path) -> None:
    # The bench's work directories go under tmp_path (TMPDIR), so the logs a bench keeps are
    # read below and removed with it; FLEETLOG_CONFIG points nowhere, as a stranger's run.
    env = {**os.environ, "TMPDIR": str(tmp_path), "FLEETLOG_CONFIG": str(tmp_path / "none")}
    env.pop("FLEETLOG_SERVER", None)
    process = subprocess.Popen(
        [sys.executable, "-m", f"ops.{bench.module}", *bench.args.split()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: up, sim and nats-server stop with it
    )
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{bench.module} still ran after {RUN_TIMEOUT_S:.0f} s:\n{tail(out, err)}")
    finally:
        stop_group(process.pid)
    assert process.returncode == 0, f"{bench.module} exited {process.returncode}:\n{tail(out, err)}"
    for figure in bench.figures:
        assert re.search(figure, out, re.MULTILINE), f"no line matches {figure!r}:\n{out}"
    kept_logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    for text in (out, err, kept_logs):
        assert "event.quarantined" not in text, f"{bench.module}: events were quarantined"


def stop_group(pgid: int) -> None:
    """Whatever the run left in its process group (nothing, when it cleaned up after itself)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def tail(out: str, err: str) -> str:
    return "\n".join([*out.splitlines()[-20:], "--- stderr", *err.splitlines()[-30:]])

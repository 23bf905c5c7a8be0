"""End to end: ``fleetlog up``'s embedded server behind its NATS wall, through the CLI as a
person uses it: the admin's context found with no flag, users created, refused and revoked,
and what a refused command says."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgpack
import pytest

from projections.query import CLUSTER_QUERY_SUBJECT
from streams.connection import connect
from streams.identity import Credentials
from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e


MALLORY = """\
apiVersion: auth.fleetlog.dev/v1
kind: User
metadata: {name: mallory}
spec: {publicKey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4, groups: []}
"""


def test_the_wall_admits_the_admin_and_the_logs_users_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.up()
    config = Path(os.environ["FLEETLOG_CONFIG"])
    assert config.stat().st_mode & 0o777 == 0o600
    assert "seed: REDACTED" in cluster.cli("config", "view").stdout
    assert cluster.cli("config", "current-context").stdout.strip() == "fleetlog"

    nobody = cluster.cli("--config", str(tmp_path / "none"), "get", "pods", check=False)
    assert nobody.returncode == 1
    assert "refused a connection without credentials" in nobody.stderr

    broken = tmp_path / "broken.nk"
    broken.write_text("not a seed\n")
    bad = cluster.cli("--credentials", str(broken), "get", "pods", check=False)
    assert bad.returncode == 1 and "holds no nkey seed" in bad.stderr

    created = cluster.cli("user", "create", "alice", "--group", "dev")
    assert "alice@fleetlog" in created.stdout
    assert "alice" in cluster.cli("user", "list").stdout
    as_alice = ("--context", "alice@fleetlog")
    # whoami: alice is bound to no role, so RBAC refuses her every list, even of namespaces.
    wait_for(lambda: cluster.cli(*as_alice, "auth", "whoami", check=False).returncode == 0, 30)

    # Only admins see users (RBAC refuses the look-up `user create` starts with) and only
    # they may write them (the server refuses the command's subject to everyone else).
    unseen = cluster.cli(*as_alice, "user", "create", "mallory", check=False)
    assert unseen.returncode == 1
    assert 'users.auth.fleetlog.dev "mallory" is forbidden: User "alice"' in unseen.stderr
    forbidden = cluster.cli(*as_alice, "apply", "-f", "-", stdin=MALLORY, check=False)
    assert forbidden.returncode == 1
    assert 'permissions violation for publish to "fleet.cmd.user.apply"' in forbidden.stderr

    cluster.cli("user", "revoke", "alice")
    wait_for(lambda: cluster.cli(*as_alice, "auth", "whoami", check=False).returncode == 1, 30)
    refused = cluster.cli(*as_alice, "auth", "whoami", check=False)
    assert "unknown there, revoked or rotated" in refused.stderr

    cluster.cli("user", "rotate", "alice")
    wait_for(lambda: cluster.cli(*as_alice, "auth", "whoami", check=False).returncode == 0, 30)


NAMESPACE_AND_POD = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-{ns}, namespace: {ns}}}
spec: {{containers: [{{name: c, image: x}}]}}
"""
VIEW_IN_A = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-view, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]
"""


def test_behind_the_wall_reads_are_signed_and_authorized(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up()
    for ns in ("a", "b"):
        cluster.cli("apply", "-f", "-", stdin=NAMESPACE_AND_POD.format(ns=ns))
    seed_file = tmp_path / "bob.nk"
    cluster.cli("user", "create", "bob", "--output", str(seed_file))
    cluster.cli("apply", "-f", "-", stdin=VIEW_IN_A)
    as_bob = ("--credentials", str(seed_file))
    wait_for(lambda: cluster.cli(*as_bob, "get", "pods", "-n", "a", check=False).returncode == 0)
    assert "web-a" in cluster.cli(*as_bob, "get", "pods", "-n", "a").stdout

    other = cluster.cli(*as_bob, "get", "pods", "-n", "b", check=False)
    assert other.returncode == 1
    assert 'pods is forbidden: User "bob" cannot list resource "pods"' in other.stderr
    everywhere = cluster.cli(*as_bob, "get", "pods", "-A", check=False)
    assert (everywhere.returncode, everywhere.stderr) == (
        1,
        'error: pods is forbidden: User "bob" cannot list resource "pods" in API group "" '
        "at the cluster scope\n",
    )
    assert "web-b" in cluster.cli("get", "pods", "-A").stdout  # the admin sees everything

    async def unsigned_query() -> dict[str, object]:
        credentials = Credentials(seed_file.read_text().strip())
        nc = await connect(cluster.server, name="unsigned", credentials=credentials)
        try:
            request = msgpack.packb({"kind": "Pod", "namespace": "a"})
            reply = await nc.request(CLUSTER_QUERY_SUBJECT, request, timeout=10)
            return msgpack.unpackb(reply.data, raw=False)
        finally:
            await nc.close()

    refused = asyncio.run(unsigned_query())
    assert refused["ok"] is False
    assert refused["error"] == {
        "code": "unauthorized",
        "message": "the query is not signed: this cluster answers only queries signed with a "
        "user's credentials (fleetlog config get-contexts; --credentials)",
    }


def test_a_workloads_identity_publishes_its_namespaces_metrics_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A user in ``fleetlog:metrics-publishers:shop`` (the wall's generated permissions, from
    the log's User) stores External and Pods samples of ``shop``; another namespace's are
    refused by the server."""
    cluster.up()
    seed_file = tmp_path / "shop-metrics.nk"
    cluster.cli(
        "user", "create", "shop-metrics", "--group", "fleetlog:metrics-publishers:shop",
        "--output", str(seed_file),
    )  # fmt: skip
    as_workload = ("--credentials", str(seed_file))
    publish = (*as_workload, "metrics", "publish", "external", "queue_depth", "5")
    wait_for(lambda: cluster.cli(*publish, "-n", "shop", check=False).returncode == 0, 30)
    stored = cluster.cli(*as_workload, "metrics", "publish", "pod/web-1", "rps", "12", "-n", "shop")
    assert stored.stdout.startswith("published fleet.metrics.custom.shop.pods.web-1.rps")
    refused = cluster.cli(*publish, "-n", "default", check=False)
    assert refused.returncode == 1, refused.stdout
    assert (
        'the server refused the sample (nats: permissions violation for publish to "fleet.metrics'
        ".external.default.queue_5fdepth\"): default's metrics are published by users in the "
        "group fleetlog:metrics-publishers:default"
    ) in refused.stderr

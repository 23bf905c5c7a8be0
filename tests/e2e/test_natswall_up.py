"""End to end: ``fleetlog up``'s embedded server behind its NATS wall, through the CLI as a
person uses it: the admin's context found with no flag, users created, refused and revoked,
and what a refused command says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e


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
    wait_for(lambda: cluster.cli(*as_alice, "get", "ns", check=False).returncode == 0, 30)

    forbidden = cluster.cli(*as_alice, "user", "create", "mallory", check=False)
    assert forbidden.returncode == 1
    assert 'permissions violation for publish to "fleet.cmd.user.apply"' in forbidden.stderr

    cluster.cli("user", "revoke", "alice")
    wait_for(lambda: cluster.cli(*as_alice, "get", "ns", check=False).returncode == 1, 30)
    refused = cluster.cli(*as_alice, "get", "ns", check=False)
    assert "unknown there, revoked or rotated" in refused.stderr

    cluster.cli("user", "rotate", "alice")
    wait_for(lambda: cluster.cli(*as_alice, "get", "ns", check=False).returncode == 0, 30)

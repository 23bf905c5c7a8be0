"""The fleetlog config (``ops.fleetconfig``): where it is found, what a context resolves to,
and that ``view`` never shows a seed. Pure file work, no server."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ops.fleetconfig import (
    ConfigError,
    FleetConfig,
    config_path,
    load,
    save,
    set_context,
    target,
)
from streams.identity import generate_seed


def test_the_default_place_is_under_xdg_config_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLOG_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/somewhere")
    assert config_path() == Path("/somewhere/fleetlog/config")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path() == Path.home() / ".config" / "fleetlog" / "config"
    monkeypatch.setenv("FLEETLOG_CONFIG", "/elsewhere/config")
    assert config_path() == Path("/elsewhere/config")
    assert config_path("/flag/config") == Path("/flag/config")


def _config(tmp_path: Path) -> tuple[FleetConfig, str, Path]:
    seed = generate_seed()
    role_file = tmp_path / "agent.nk"
    role_file.write_text(generate_seed() + "\n")
    config = FleetConfig()
    set_context(
        config, name="fleetlog", server="nats://127.0.0.1:4999", user="fleetlog-admin",
        user_entry={"seed": seed}, namespace="team-a",
        roles={"agent": ("fleetlog-agent", {"seed-file": str(role_file)})},
    )  # fmt: skip
    return config, seed, role_file


def test_a_context_gives_server_user_namespace_and_role_identities(tmp_path: Path) -> None:
    config, seed, role_file = _config(tmp_path)
    path = tmp_path / "config"
    save(path, config)
    loaded = load(path)
    chosen = target(loaded, path=path)
    assert (chosen.server, chosen.namespace, chosen.user) == (
        "nats://127.0.0.1:4999", "team-a", "fleetlog-admin"
    )  # fmt: skip
    credentials = chosen.credentials()
    assert credentials is not None and credentials.seed == seed
    agent = target(loaded, path=path, role="agent").credentials()
    assert agent is not None and agent.seed == role_file.read_text().strip()
    # A role the context does not name connects as the context's user.
    scheduler = target(loaded, path=path, role="scheduler").credentials()
    assert scheduler is not None and scheduler.seed == seed


def test_the_file_is_the_owners_only(tmp_path: Path) -> None:
    config, _, _ = _config(tmp_path)
    path = tmp_path / "fresh" / "config"
    save(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_view_redacts_seeds(tmp_path: Path) -> None:
    config, seed, _ = _config(tmp_path)
    assert seed not in str(config.redacted())
    assert seed in str(config.document())


def test_an_unknown_context_or_a_missing_seed_file_says_what_to_fix(tmp_path: Path) -> None:
    config, _, role_file = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"context 'other' is not in .* get-contexts"):
        target(config, path=tmp_path / "config", context="other")
    role_file.unlink()
    agent = target(config, path=tmp_path / "config", role="agent")
    with pytest.raises(ConfigError, match=r"agent\.nk does not exist.*user 'fleetlog-agent'"):
        agent.credentials()


def test_no_config_means_no_server_and_no_user(tmp_path: Path) -> None:
    chosen = target(load(tmp_path / "missing"), path=tmp_path / "missing")
    assert chosen.server is None and chosen.credentials() is None


def test_a_contexts_cluster_names_its_seal_key(tmp_path: Path) -> None:
    path = tmp_path / "config"
    config = load(path)
    set_context(
        config, name="fleetlog", server="nats://127.0.0.1:4222", user="admin",
        user_entry={"seed": "SU"}, seal_key=tmp_path / "data" / "pki" / "seal.key",
    )  # fmt: skip
    save(path, config)
    chosen = target(load(path), path=path)
    assert chosen.seal_key == (tmp_path / "data" / "pki" / "seal.key").resolve()
    set_context(config, name="other", server="nats://h:4222", user="u", user_entry={"seed": "S"})
    assert target(config, path=path, context="other").seal_key is None

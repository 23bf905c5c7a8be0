"""The writers' seal (``streams/seal.py``): the MAC binds the subject and the bytes, events
before the key's ``since`` need none, the header is found in a raw header block, and a key
file is refused, saying why, when it is missing, malformed or readable by others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.seal import (
    SealKey,
    SealKeyError,
    create_seal_key,
    load_seal_key,
    seal_from_header_block,
)

KEY = SealKey(b"k" * 32, since=10)


def test_a_seal_holds_only_for_its_subject_and_bytes() -> None:
    sealed = KEY.seal("fleet.evt.pod.default.web", b"bytes")
    assert KEY.holds(11, "fleet.evt.pod.default.web", b"bytes", sealed)
    assert KEY.holds(11, "fleet.evt.pod.default.web", b"bytes", sealed.encode())
    assert not KEY.holds(11, "fleet.evt.pod.default.other", b"bytes", sealed)
    assert not KEY.holds(11, "fleet.evt.pod.default.web", b"bytez", sealed)
    assert not KEY.holds(11, "fleet.evt.pod.default.web", b"bytes", None)
    assert not KEY.holds(11, "fleet.evt.pod.default.web", b"bytes", "")
    other = SealKey(b"o" * 32)
    assert not other.holds(11, "fleet.evt.pod.default.web", b"bytes", sealed)


def test_events_stored_before_the_key_need_no_seal() -> None:
    assert KEY.holds(10, "s", b"old", None)
    assert not KEY.holds(11, "s", b"new", None)


def test_the_seal_is_read_from_a_raw_header_block() -> None:
    block = b"NATS/1.0\r\nNats-Msg-Id: t:0\r\nFleet-Seal: abc=\r\n\r\n"
    assert seal_from_header_block(block) == b"abc="
    assert seal_from_header_block(b"NATS/1.0\r\nNats-Msg-Id: t:0\r\n\r\n") is None


def test_a_key_file_is_created_private_and_loaded(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "seal.key"
    key = create_seal_key(path, since=7)
    assert load_seal_key(path) == key and key.since == 7 and len(key.key) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):  # never overwritten: events are sealed with it
        create_seal_key(path, since=0)


def test_bad_key_files_are_refused_saying_why(tmp_path: Path) -> None:
    with pytest.raises(SealKeyError, match="not found"):
        load_seal_key(tmp_path / "absent")
    garbage = tmp_path / "garbage"
    garbage.write_text("{not json")
    garbage.chmod(0o600)
    with pytest.raises(SealKeyError, match="not a fleetlog seal key"):
        load_seal_key(garbage)
    short = tmp_path / "short"
    short.write_text('{"key": "YWJj", "since": 0}')
    short.chmod(0o600)
    with pytest.raises(SealKeyError, match="wrong length"):
        load_seal_key(short)
    shared = tmp_path / "shared" / "seal.key"
    create_seal_key(shared, since=0)
    shared.chmod(0o644)
    with pytest.raises(SealKeyError, match="chmod 600"):
        load_seal_key(shared)

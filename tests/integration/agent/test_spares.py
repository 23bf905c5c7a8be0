"""A start worker's inodes made ahead (``handlers.agent.spares``): what a start finds in place
is what ``mkdir(parents=True, exist_ok=True)`` and ``open(O_CREAT | O_APPEND, 0o600)`` made
without them, and nothing there already is replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from handlers.agent.spares import FILE_MODE, Spares


def _filled(directory: Path, starts: int = 4) -> Spares:
    spares = Spares(directory, starts=starts)
    while spares.wanted:
        spares.refill(5)
    return spares


def _count(directory: Path) -> int:
    return len(os.listdir(directory))


def test_refill_makes_directories_and_files_for_the_starts_asked(tmp_path: Path):
    spares = _filled(tmp_path / "spares", starts=3)
    entries = [tmp_path / "spares" / name for name in os.listdir(tmp_path / "spares")]
    assert sum(path.is_dir() for path in entries) == 3 * 4
    files = [path for path in entries if path.is_file()]
    assert len(files) == 3 * 3
    assert all(path.stat().st_size == 0 for path in files)
    assert not spares.wanted


def test_directories_from_spares_are_as_mkdir_makes_them(tmp_path: Path):
    spares = _filled(tmp_path / "spares")
    before = _count(tmp_path / "spares")
    target = tmp_path / "pods" / "uid" / "main" / "0"
    (tmp_path / "pods").mkdir()
    spares.makedirs(target)
    assert target.is_dir()
    assert _count(tmp_path / "spares") == before - 3  # uid, main and 0 were spares
    plain = tmp_path / "plain"
    plain.mkdir()
    for level in (target, target.parent, target.parent.parent):
        assert stat.S_IMODE(level.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
        assert os.listdir(level) == ([] if level == target else [os.listdir(level)[0]])


def test_an_existing_directory_is_kept_and_a_file_in_the_way_refused(tmp_path: Path):
    spares = _filled(tmp_path / "spares")
    existing = tmp_path / "pods" / "uid"
    existing.mkdir(parents=True)
    (existing / "kept").write_text("x")
    before = _count(tmp_path / "spares")
    spares.makedirs(existing)
    assert (existing / "kept").read_text() == "x"
    assert _count(tmp_path / "spares") == before
    (tmp_path / "pods" / "file").write_text("y")
    with pytest.raises(FileExistsError):
        spares.makedirs(tmp_path / "pods" / "file")
    assert spares.usable


def test_a_file_from_spares_is_empty_owner_only_and_never_replaces_one(tmp_path: Path):
    spares = _filled(tmp_path / "spares")
    directory = tmp_path / "instance"
    directory.mkdir()
    spares.place_file(directory / "stdout")
    assert (directory / "stdout").read_bytes() == b""
    plain = os.open(directory / "plain", os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.close(plain)
    assert stat.S_IMODE((directory / "stdout").stat().st_mode) == stat.S_IMODE(
        (directory / "plain").stat().st_mode
    )
    (directory / "stderr").write_text("earlier output\n")
    spares.place_file(directory / "stderr")
    assert (directory / "stderr").read_text() == "earlier output\n"
    # No parent: nothing is made, the caller's open fails as it did.
    spares.place_file(tmp_path / "missing" / "stdout")
    assert not (tmp_path / "missing").exists()
    assert spares.usable


def test_spares_removed_under_it_turn_it_off_and_starts_make_their_own(tmp_path: Path):
    spares = _filled(tmp_path / "spares")
    for name in os.listdir(tmp_path / "spares"):
        path = tmp_path / "spares" / name
        path.rmdir() if path.is_dir() else path.unlink()
    target = tmp_path / "pods" / "uid" / "main" / "0"
    spares.makedirs(target)
    assert target.is_dir()
    assert not spares.usable
    spares.place_file(target / "stdout")  # off: the caller's O_CREAT makes it
    assert not (target / "stdout").exists()


def test_without_spares_it_makes_directories_as_mkdir(tmp_path: Path):
    spares = Spares(tmp_path / "spares", starts=1)  # never refilled
    target = tmp_path / "a" / "b"
    spares.makedirs(target)
    spares.makedirs(target)
    assert target.is_dir()
    spares.place_file(target / "stdout")
    assert not (target / "stdout").exists()


def test_remove_takes_every_spare_away(tmp_path: Path):
    spares = _filled(tmp_path / "spares")
    spares.remove()
    assert not (tmp_path / "spares").exists()


def test_names_left_by_an_earlier_worker_are_skipped_not_taken(tmp_path: Path):
    directory = tmp_path / "spares"
    directory.mkdir()
    (directory / "1").write_text("someone else's")
    (directory / "2").mkdir()
    spares = _filled(directory, starts=1)
    assert spares.usable and not spares.wanted
    assert (directory / "1").read_text() == "someone else's"
    assert _count(directory) == 2 + 4 + 3
    target = tmp_path / "instance"
    target.mkdir()
    spares.place_file(target / "stdout")
    assert (target / "stdout").read_bytes() == b""
    assert (directory / "1").read_text() == "someone else's"


def test_a_burst_that_stops_halfway_leaves_both_kinds(tmp_path: Path):
    spares = Spares(tmp_path / "spares", starts=10)
    spares.refill(14)  # two starts' worth
    kinds = [(tmp_path / "spares" / n).is_dir() for n in os.listdir(tmp_path / "spares")]
    assert (kinds.count(True), kinds.count(False)) == (8, 6)


def test_files_only_spares_make_no_directory_and_use_the_mode_asked(tmp_path: Path):
    # As the log shipper keeps them: empty files standing for ``Path.write_text``'s temporaries.
    spares = Spares(
        tmp_path / "spares", starts=3, dirs_per_start=0, files_per_start=1, file_mode=0o666
    )
    spares.refill(10)
    entries = [tmp_path / "spares" / name for name in os.listdir(tmp_path / "spares")]
    assert len(entries) == 3 and all(path.is_file() for path in entries)
    assert not spares.wanted
    target = tmp_path / "instance" / ".shipped.json.tmp"
    target.parent.mkdir()
    spares.place_file(target)
    (tmp_path / "instance" / "plain").write_text("")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(
        (tmp_path / "instance" / "plain").stat().st_mode
    )
    assert _count(tmp_path / "spares") == 2

"""Pure pieces of logs and metrics: where chunks are cut, which chunks a tail starts at, and how
``top`` prints amounts."""

from __future__ import annotations

from ops.render import cores, mebibytes, top_nodes_table
from streams.telemetry import NodeUsage, _Chunk, _drop_lines, _tail_start, plan_chunks


def test_chunks_hold_complete_lines_and_wait_for_an_unfinished_one() -> None:
    data = b"one\ntwo\nthr"
    assert plan_chunks(data, limit=100) == [8]
    assert plan_chunks(data, limit=100, final=True) == [8, 11]
    assert plan_chunks(b"", limit=100) == []


def test_chunks_are_cut_at_line_ends_within_the_limit() -> None:
    data = b"aaaa\nbbbb\ncccc\n"
    ends = plan_chunks(data, limit=11)
    assert ends == [10, 15]
    assert all(data[s:e].endswith(b"\n") for s, e in zip([0, *ends], ends, strict=False))


def test_a_line_longer_than_the_limit_is_split_into_pieces() -> None:
    data = b"x" * 25 + b"\n" + b"y\n"
    ends = plan_chunks(data, limit=10)
    assert ends == [10, 20, 28]
    pieces = [data[s:e] for s, e in zip([0, *ends], ends, strict=False)]
    assert b"".join(pieces) == data and max(map(len, pieces)) <= 10


def chunk(seq: int, lines: int, partial: bool = False, stream: str = "stdout") -> _Chunk:
    return _Chunk(seq, "u", 0, stream, seq * 100, lines, partial)


def test_tail_starts_in_the_chunk_holding_the_nth_last_line() -> None:
    chunks = [chunk(1, 3), chunk(2, 2), chunk(3, 4)]
    assert _tail_start(chunks, None) == (0, 0)
    assert _tail_start(chunks, 0) == (3, 0)
    assert _tail_start(chunks, 4) == (2, 0)
    assert _tail_start(chunks, 5) == (1, 1)
    assert _tail_start(chunks, 100) == (0, 0)
    assert _drop_lines(b"a\nb\nc\n", 2) == b"c\n"


def test_tail_includes_the_earlier_pieces_of_a_split_line() -> None:
    chunks = [chunk(1, 2), chunk(2, 0, partial=True), chunk(3, 0, partial=True), chunk(4, 1)]
    assert _tail_start(chunks, 1) == (1, 0)


def test_top_prints_millicores_mebibytes_and_percentages() -> None:
    assert cores(250) == "250m" and mebibytes(64 * 1024 * 1024 + 5) == "64Mi"
    table = top_nodes_table([NodeUsage("n1", 0, 500, 2 * 1024**3, 2000, 8 * 1024**3, 3)])
    assert table.splitlines()[0].split() == [
        "NAME",
        "CPU(cores)",
        "CPU%",
        "MEMORY(bytes)",
        "MEMORY%",
    ]
    assert table.splitlines()[1].split() == ["n1", "500m", "25%", "2048Mi", "25%"]

"""``render.table`` lays out simple tables itself; it must print exactly what tabulate's
``plain`` format prints (which it still uses for wide or multi-line cells)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from ops.render import table

ascii_cell = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
any_cell = st.text(max_size=8)


def shaped(cell: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[list[str], list[list[str]]]]:
    return st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.lists(cell, min_size=n, max_size=n),
            st.lists(st.lists(cell, min_size=n, max_size=n), max_size=6),
        )
    )


def plain(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True, stralign="left")


@settings(max_examples=500)
@given(shaped(ascii_cell))
def test_simple_tables_are_what_tabulate_prints(table_: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table_
    assert table(headers, rows) == plain(headers, rows)


@settings(max_examples=200)
@given(shaped(any_cell))
def test_any_table_is_what_tabulate_prints(table_: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table_
    assert table(headers, rows) == plain(headers, rows)


def test_a_history_sized_table() -> None:
    rows = [[str(i), "2026-11-26T03:12:00Z", "PodReady", "user:alice", "ready"] for i in range(999)]
    headers = ["SEQ", "TIME", "TYPE", "ACTOR", "SUMMARY"]
    assert table(headers, rows) == plain(headers, rows)


def test_rows_printed_one_at_a_time_line_up() -> None:
    """``events --follow`` prints each event as it comes: its columns must still line up."""
    from ops.render import event_row_printer

    printer = event_row_printer()
    rows = [
        ["7", "2026-11-26T03:12:00Z", "PodCreated", "pod/shop/debug", "user:e2e", "created"],
        ["12345", "2026-11-26T03:12:01Z", "DeploymentStatusUpdated", "deployment/shop/web",
         "system:deployment-controller", "status: 3 replicas"],
        ["12346", "2026-11-26T03:12:02Z", "NodeNotReady", "node/sim-node-3",
         "system:node-lifecycle-controller", "Ready=Unknown (NodeStatusUnknown)"],
    ]  # fmt: skip
    lines = [printer.header()] + [printer.line(row) for row in rows]
    for title, column in (("TYPE", 2), ("OBJECT", 3), ("ACTOR", 4), ("SUMMARY", 5)):
        start = lines[0].index(title)
        assert [line.index(row[column]) for line, row in zip(lines[1:], rows, strict=True)] == [
            start
        ] * 3
    # A cell longer than its column widens it for the rows that follow.
    long_object = "pod/" + "x" * 60
    wider = printer.line(["1", "2026-11-26T03:12:03Z", "PodCreated", long_object, "a", "b"])
    after = printer.line(["2", "2026-11-26T03:12:04Z", "PodCreated", "pod/y", "a", "b"])
    assert wider.index(" a ") == after.index(" a ")

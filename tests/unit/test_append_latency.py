"""The gateway's estimate of how long an append takes, which decides whether a command can
still be answered before its client's deadline: it follows appends, and it fades while nothing
is appended, so a few slow appends (an outage) cannot make it refuse every command for ever."""

from __future__ import annotations

from handlers.gateway.context import AppendLatency

MS = 1_000_000
S = 1_000_000_000


def test_the_margin_follows_recent_appends_with_a_safety_factor() -> None:
    latency = AppendLatency()
    assert latency.margin_ns(0) == 0
    for step in range(50):
        latency.observe(100 * MS, now_ns=step * MS)
    assert abs(latency.margin_ns(50 * MS) - 200 * MS) < 2 * MS
    for step in range(50, 100):
        latency.observe(10 * MS, now_ns=step * MS)
    assert abs(latency.margin_ns(100 * MS) - 20 * MS) < 2 * MS


def test_the_margin_fades_while_nothing_is_appended() -> None:
    latency = AppendLatency()
    for step in range(50):
        latency.observe(30 * S, now_ns=step * MS)  # an outage: appends took 30 s
    at = 50 * MS
    stuck = latency.margin_ns(at)
    assert stuck > 50 * S
    assert latency.margin_ns(at + 1 * S) < stuck * 0.51
    assert latency.margin_ns(at + 30 * S) < 1 * MS  # commands are let through again

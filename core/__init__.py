"""The pure domain of fleetlog: resource models, quantities, commands, events, aggregates.

Nothing in this package performs I/O, starts an event loop or reads a clock: every instant a
decision needs is passed in by the caller. That keeps the domain testable with no server and
makes every decision replayable from the log.
"""

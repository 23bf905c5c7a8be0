"""Read models folded from the log: ``state = evolve(state, event)``, with a position, snapshots,
and replay to any sequence or instant."""

"""The vocabulary fleetlog's log and gateway speak: kinds, commands, events and their payloads,
causation ids, event summaries, and the catalog that ties each kind to its model and aggregate.

Why this exists: every layer reads and writes these shapes; they are the contract between the
CLI, the gateway, the handlers and the log, so they live together, apart from the rules of any
one kind. Modules here that readers need (``kinds``, ``events``, ``causation``, ``summaries``)
load neither pydantic nor eventsourcing.
"""

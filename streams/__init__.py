"""Everything that touches NATS: the embedded server, connections, the subject scheme, the
envelope codec, the stream definitions and the event store.

Only this package (and the layers above it) may import ``nats``; ``core`` stays pure.
"""

"""The stateless reactors: each module is one process role (gateway, scheduler, controllers,
node agent …) that consumes from NATS, asks ``core`` to decide, and appends the outcome."""

"""What an operator runs: the ``fleetlog`` CLI, ``fleetlog up``, and the benchmarks."""

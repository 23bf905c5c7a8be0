"""``python -m ops`` runs the fleetlog CLI (same as the ``fleetlog`` script)."""

from ops.cli import main

main()

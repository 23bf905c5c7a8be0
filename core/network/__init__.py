"""The pod network: the cluster's address ranges (``ranges``), the choice of a free node range
or pod address (``ipam``), and the PodCIDR kind that makes a node's range its own (``model``,
``aggregate``, ``decisions``). The node agent builds the network itself (bridge, veth pairs,
network namespaces) from these decisions; see docs/architecture.md, "The pod network".
"""

"""Nodes: the Node model and aggregate (capacity, allocations, cordoning, readiness), node
health from heartbeats, and eviction by NoExecute taints.
"""

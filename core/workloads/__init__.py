"""Workloads: Deployments and ReplicaSets (models, aggregates, status), rollout planning, the
deployment controller's decisions and the replica set's choice of pods to delete.
"""

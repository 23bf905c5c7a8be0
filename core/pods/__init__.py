"""Pods: the spec a pod is made of, its aggregate, how recorded facts change its status, the
kubelet's lifecycle rules, and the decisions that span a pod and what accounts for it.
"""

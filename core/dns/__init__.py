"""Cluster DNS, pure: what the cluster's DNS zone answers (``zone``, after Kubernetes' DNS
specification as CoreDNS' ``kubernetes`` plugin serves it) and what a pod's ``resolv.conf``
says (``resolvconf``, after the kubelet's ``dnsPolicy`` and ``dnsConfig`` rules). The node
agent serves the zone on the wire and writes the files (``handlers/agent/dns.py``,
``handlers/agent/poddns.py``); see docs/architecture.md, "Cluster DNS".
"""

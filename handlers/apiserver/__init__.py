"""The Kubernetes door: fleetlog's API spoken as Kubernetes' over HTTPS, so kubectl, client
libraries and tools work unchanged.

A thin translator (DESIGN.md, "Two doors, one gateway"): writes become the gateway's commands,
reads come from the cluster read model, ``resourceVersion`` is a stream sequence and a watch is
a replay followed by the live tail. One module per concern: ``certs`` (CA, certificates,
kubeconfig), ``identity`` (who is calling, and may they), ``reviews`` (``kubectl auth
whoami|can-i``), ``http`` (media types, bodies, Status answers),
``discovery`` (``/api``, ``/apis``, ``/openapi``), ``resources`` (the REST verbs), ``watch`` and
``server`` (TLS and routing). The rules themselves are pure, in ``core.kubeapi``.
"""

from handlers.apiserver.certs import ensure_pki, write_kubeconfig
from handlers.apiserver.identity import AccessSource, DoorAccess, Identity
from handlers.apiserver.server import APIServer, kubeconfig_path

__all__ = [
    "APIServer",
    "AccessSource",
    "DoorAccess",
    "Identity",
    "ensure_pki",
    "kubeconfig_path",
    "write_kubeconfig",
]

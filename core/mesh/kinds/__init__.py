"""Istio's traffic kinds as users bring them: VirtualService, DestinationRule, Gateway and
ServiceEntry (``networking.istio.io/v1``) and PeerAuthentication (``security.istio.io/v1``),
validated as Istio's ``pkg/config/validation`` validates them.

Why this exists: the mesh builder (``core.mesh.envoy``) turns these objects into Envoy
configuration, so what the log accepts must be what Istio accepts — YAML written for Istio
keeps its meaning here, and a rule Istio would refuse (a negative weight, a route with no
destination, a bad regex or duration, two subsets of one name...) is refused at the door with
the field's path and Istio's reason instead of reaching a proxy as a NACK. The field names are
Istio's (camelCase in YAML). Fields Istio has that fleetlog does not act on yet (TLS routes,
``DYNAMIC_DNS``) are not modelled: they are refused as unknown fields rather than silently
ignored. Problems across objects (a subset no DestinationRule defines) are not this
package's: one object at a time, as Istio's webhook.

Where each part lives (nothing is re-exported here, callers import from the module):
``objects`` (the stored kinds and ``MESH_KINDS``), ``common`` (what the kinds share),
``http`` and ``virtualservice`` (a VirtualService's HTTP routes, and its spec with the TCP and
TLS routes), ``trafficpolicy`` and ``destinationrule``, ``gateway``, ``serviceentry``,
``peerauthentication``.
"""

"""Envoy v3 configuration for one proxy (a pod's sidecar, or a Gateway's ingress), built from
the read model: Services, their EndpointSlices, the pods' labels and Istio's objects.

Why this exists: the mesh-push handler serves each proxy the clusters, endpoints, listeners and
routes Istio would give it, and deciding *what* they are is pure logic worth testing resource by
resource, apart from the gRPC that carries them. The output is plain dicts in Envoy's JSON shape,
each resource carrying its ``@type`` (as in an ``Any``), so core needs no protobuf; the handler
converts them with ``xds-protos``, and :func:`~core.mesh.envoy.bootstrap.static_bootstrap`
turns a snapshot into a static bootstrap ``envoy --mode validate`` checks (and a gateway could
run before ADS exists).

How Istio's objects become Envoy's, as Istio's own generator does:

* **Clusters**: one per service port, ``outbound|<port>||<host>`` (EDS), and one per
  DestinationRule subset, ``outbound|<port>|<subset>|<host>``, whose endpoints are the pods with
  the subset's labels. ``trafficPolicy`` (with ``portLevelSettings`` and each subset's own policy
  over it) gives the load balancer — ``ROUND_ROBIN``, ``LEAST_REQUEST`` (also ``LEAST_CONN``
  and Istio's default), ``RANDOM``, ``consistentHash`` as ``RING_HASH`` (or ``MAGLEV``) with the
  hash key as a route hash policy, and ``PASSTHROUGH`` as an ``ORIGINAL_DST`` cluster — the
  circuit breakers (connectionPool), outlier detection; the TLS mode is recorded in the
  cluster's metadata. ServiceEntries add clusters for external hosts: STRICT_DNS /
  LOGICAL_DNS, EDS from their endpoints, or ORIGINAL_DST for NONE.
* **mTLS** (Istio's auto mTLS): a Service cluster some of whose pods have sidecars gets
  ``transport_socket_matches`` — an endpoint labelled ``tlsMode: istio`` (a meshed pod whose
  PeerAuthentication does not DISABLE the port) is reached over TLS with the proxy's SDS
  certificate (``default``), verified against the mesh's root (``ROOTCA``) and the service's
  SPIFFE ids (``spiffe://cluster.local/ns/<ns>/sa/<sa>`` of its meshed pods); other endpoints
  in plain text. A DestinationRule's ``tls.mode`` ``ISTIO_MUTUAL`` forces TLS, ``DISABLE``
  forbids it. SIMPLE / MUTUAL originate TLS as Istio does
  (:func:`~core.mesh.envoy.tls.upstream_tls`: CA, certificate and key files or a
  ``credentialName`` over SDS, SANs, SNI or auto SNI). The
  captured sidecar's ``virtualInbound`` terminates mTLS per the workload's
  PeerAuthentication (``core.mesh.peerauth``), with a ``tls_inspector`` telling TLS from
  plain text.
* **Endpoints** (ClusterLoadAssignments): the ready addresses of the service's slices, on the
  slice's port of the service port's name (ready, or serving while terminating when none is,
  as kube-proxy; see ``core.services.forwarding``).
* **Listeners**: the *virtual listener* design — one listener per HTTP port,
  ``0.0.0.0_<port>`` (``bind_address`` for tests on loopback), whose HTTP connection manager asks
  for route configuration ``<port>``, where the Host header picks the service. That is Istio's
  choice for HTTP: one listener serves every service on the port, and once the pod's traffic is
  captured (the redirect to 15001, whose listener has ``use_original_dst``) no ClusterIP
  needs to be local. TCP ports cannot be told apart by a header: each gets
  ``<clusterIP>_<port>`` with a ``tcp_proxy``. A port's protocol is Istio's explicit selection:
  ``appProtocol``, else the port name's prefix (``http``, ``http2``, ``grpc``, ``tcp``, ...);
  a port that names none is sniffed, as Istio does: the port's listener gets the
  ``http_inspector`` and, per such service, an HTTP chain and a TCP chain.
* **Routes** from VirtualServices: every match (uri exact/prefix/regex, headers, method,
  authority, scheme, query parameters, withoutHeaders) becomes an Envoy route; weighted
  destinations become ``weighted_clusters`` with Istio's weights as they are (relative: Envoy
  gives each weight / sum; zero-weight destinations are dropped, as Istio does); rewrites,
  redirects, retries (Istio's default policy when none is set), timeouts, fault injection and
  mirroring with its percentage, direct responses and CORS (the CORS filter's per-route
  policy). A root route's ``delegate`` is replaced by the delegate VirtualService's routes,
  merged under its matches (:func:`~core.mesh.envoy.delegates.merge_delegates`). TCP routes
  become the ``tcp_proxy``'s (weighted) clusters.
* **Warmup and locality**: ``warmup`` is Envoy's slow start; with ``localityLbSetting`` the
  endpoints are grouped by their node's locality, weighted (``distribute``) or given failover
  priorities from the proxy's own locality.
* A **gateway** proxy gets one listener per server port of its Gateways (servers of a port
  merged as Istio's ``mergeGateways`` merges them: HTTP with HTTP, TLS with TLS, a
  conflicting server skipped) and the VirtualServices bound to them, each server's hosts
  restricting which and for what names: plain HTTP servers share one route configuration
  (``httpsRedirect``: 301 to https); HTTPS servers that terminate TLS (SIMPLE, MUTUAL,
  OPTIONAL_MUTUAL, ISTIO_MUTUAL) are filter chains picked by SNI among the server's hosts,
  their certificate over SDS (``kubernetes://<credentialName>``, from the Secret the handler
  opened into ``MeshState.credentials``), from files, or the gateway's workload certificate
  (ISTIO_MUTUAL, clients checked against the mesh root), client certificates checked by
  ``subjectAltNames``/``verifyCertificateSpki``/``verifyCertificateHash``; PASSTHROUGH
  servers route the VirtualServices' ``tls`` routes by SNI (``tls_inspector`` +
  ``tcp_proxy``, not terminated); AUTO_PASSTHROUGH servers send each connection to the
  SNI-DNAT cluster its SNI names (``sni_cluster``); TCP servers (also MONGO, REDIS, MYSQL)
  proxy their ``tcp`` routes. A sidecar's TLS/HTTPS service port
  routes ``tls`` routes by SNI the same way, the service itself the default.

Where each part lives (a leading underscore marks a helper private to this package, which its
sibling modules may import; nothing is re-exported here, callers import from the module):

* ``build``: :func:`~core.mesh.envoy.build.build_snapshot`, the shared
  :class:`~core.mesh.envoy.build.MeshBuild` of one state, and
  :func:`~core.mesh.envoy.build.part_key`;
* ``model``: the inputs and output (``Proxy``, ``MeshState``, ``Snapshot``) and the services as
  the mesh sees them;
* ``names``: type URLs, filter names, well-known clusters and secrets, value formats;
* ``clusters``, ``endpoints``: CDS and EDS; ``secrets``, ``tls``: SDS and transport sockets;
* ``routes``, ``route_configs``, ``delegates``: an HTTP route, virtual hosts and route
  configurations, delegate VirtualServices;
* ``listeners`` (the shared pieces), ``sidecar`` (its listeners and capture), ``gateway``;
* ``bootstrap``: a snapshot as a static bootstrap.
"""

"""Services: a stable name and address in front of the pods a selector picks, and the
endpoints behind it.

* ``model``: the Service as kube-apiserver validates and defaults it; ``endpointslice``: the
  EndpointSlice; ``ipaddress``: the records of allocated addresses and node ports;
* ``aggregate``: what may change about each of them once it exists;
* ``ranges``: the service CIDR and NodePort range, and how a free value is picked;
* ``allocation``: what a service's create, update or delete takes from and gives back to them;
* ``slices``: which pods are a service's endpoints and how its slices change (light: the
  endpoint-slice controller and the CLI read it without pydantic).

The node's forwarding and cluster DNS build on these.
"""

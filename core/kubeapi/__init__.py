"""The Kubernetes API's rules, as pure functions: what fleetlog's HTTP door answers and why.

Why this exists: the HTTPS server (``handlers/apiserver``) is a thin translator between
Kubernetes clients and fleetlog's gateway and read model. Everything it decides that is not
I/O lives here, tested without a server: the resource table discovery serves
(``resources``), ``Status`` objects for every refusal (``status``), ``resourceVersion`` and
``continue`` rules (``versions``), field selectors (``selectors``), objects as the API shows
them (``objects``), server-side ``Table`` output (``tables``), watch events (``watch``) and
the OpenAPI documents generated from the pydantic models (``openapi``).
"""

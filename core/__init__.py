"""The pure domain of fleetlog: one package per Kubernetes concept.

* ``core.meta``: what every object shares (metadata, names and labels, selectors, taints and
  tolerations, quantities, timestamps, owner references, the aggregate base class);
* ``core.api``: the vocabulary of the log and the gateway (kinds, commands, events, payloads,
  causation, summaries, the catalog of kinds, manifest parsing);
* ``core.pods``, ``core.nodes``, ``core.workloads``, ``core.services``, ``core.namespaces``:
  each kind's model, aggregate, status folds and rules;
* ``core.network``: the pod network's address ranges, the choice of a node range or pod
  address, and the PodCIDR kind that makes a node's range its own;
* ``core.scheduling``: kube-scheduler's filters, scores and preemption;
* ``core.policy``: quotas, limit ranges, priority classes and admission.

Nothing in this package performs I/O, starts an event loop or reads a clock: every instant a
decision needs is passed in by the caller. That keeps the domain testable with no server and
makes every decision replayable from the log. docs/architecture.md shows the layout.
"""

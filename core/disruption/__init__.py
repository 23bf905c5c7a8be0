"""PodDisruptionBudgets (``policy/v1``): the kind, its status maths and the eviction rule.

Why this exists: one home for the concept (STYLE.md): the model and its validation
(``model.py``), the disruption controller's arithmetic and the eviction subresource's decision
as pure functions (``budget.py``), the aggregate the gateway stores and updates atomically with
an evicted pod (``aggregate.py``), and its evolve (``status.py``).
"""

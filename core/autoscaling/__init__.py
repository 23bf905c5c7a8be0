"""Autoscaling (issue 19): the HorizontalPodAutoscaler kind and Kubernetes' HPA maths, pure.

``model`` is the kind users bring (``autoscaling/v2``, and ``autoscaling/v1`` converted to it),
``replicas`` the per-metric replica calculator, ``behavior`` the limits over time
(stabilisation windows, scaling policies, the legacy limits) and ``horizontal`` one whole
evaluation: every metric, the limits, the conditions and the "why" record of the decision.
"""

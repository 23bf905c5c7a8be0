"""Policy: resource quotas, limit ranges and priority classes (models, aggregates, arithmetic),
and the mutating admission that applies them to pods.
"""

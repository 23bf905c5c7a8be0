"""Namespaces: the scope namespaced objects live in (model and aggregate)."""

"""The mesh (issue 18): Istio's traffic kinds and the pure Envoy configuration builder."""

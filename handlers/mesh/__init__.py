"""The mesh-push handler: Envoy configuration from the log, served over ADS (``push``), from a
read model of the cluster projection (``model``), with each proxy's ACK/NACK reported
(``status``)."""

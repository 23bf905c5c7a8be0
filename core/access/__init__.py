"""Who may do what: Kubernetes RBAC and the roles a cluster starts with (issue 17's front door)."""

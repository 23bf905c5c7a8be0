"""The node agent: runs the pods bound to its node as processes and reports what happens."""

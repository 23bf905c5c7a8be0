"""What every object shares, whatever its kind: metadata, names and labels, selectors, taints
and tolerations, quantities, timestamps, owner references, and the aggregate base class.

Why this exists: these are the vocabulary the kind packages (``core.pods``, ``core.nodes`` …)
are written in; each concept has one home here, so a rule such as "what a label value may
contain" or "does this toleration tolerate that taint" is decided in one place.
"""

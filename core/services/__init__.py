"""Services: a stable name in front of the pods a selector picks (model and aggregate).
The mesh (``core/mesh``) and the pod network will build on these.
"""

"""NodeRestriction's decisions (pure): which writes a node identity may make, in kube's words."""

from __future__ import annotations

from core.access.commandauth import control_plane_identity, node_actor_problem, node_agent_identity
from core.access.noderestriction import NodeWrite, node_of, refusal
from core.access.rbac import User

N1 = User("system:node:n1", ("system:nodes", "system:authenticated"))


def write(kind: str, verb: str, name: str, **fields: object) -> NodeWrite:
    return NodeWrite(user=N1, kind=kind, verb=verb, namespace="a" if kind != "Node" else "",
                     name=name, **fields)  # type: ignore[arg-type]  # fmt: skip


def test_node_identities_are_kubes_and_fleetlogs_spellings() -> None:
    assert node_of("system:node:n1") == node_of("system:node/n1") == "n1"
    assert node_of("system:node:") is None and node_of("alice") is None


def test_a_node_writes_its_own_node_and_no_other() -> None:
    assert refusal(write("Node", "cordon", "n1")) is None
    assert refusal(write("Node", "cordon", "n2")) == (
        'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    )


def test_a_node_updates_status_and_deletes_only_pods_bound_to_it() -> None:
    assert refusal(write("Pod", "status", "p", bound_to="n1")) is None
    assert refusal(write("Pod", "delete", "p", bound_to="n1")) is None
    assert refusal(write("Pod", "status", "p", bound_to="n2")) == (
        'pods "p" is forbidden: node "n1" can only update pod status for pods with '
        "spec.nodeName set to itself"
    )
    assert "can only delete pods" in str(refusal(write("Pod", "delete", "p", bound_to=None)))
    assert refusal(write("Pod", "evict", "p", bound_to="n1")) is None
    assert refusal(write("Pod", "evict", "p", bound_to="n2")) == (
        'pods "p" is forbidden: node "n1" can only evict pods with spec.nodeName set to itself'
    )


def test_a_node_creates_no_pod_and_writes_no_other_kind() -> None:
    assert "can only create mirror pods" in str(refusal(write("Pod", "create", "p", exists=False)))
    other = refusal(write("Deployment", "scale", "web"))
    assert other is not None and other.startswith(
        'deployments.apps "web" is forbidden: User "system:node:n1" cannot update resource '
        '"deployments/scale" in API group "apps" in the namespace "a"'
    )


def test_anyone_else_is_not_held_to_it() -> None:
    alice = NodeWrite(user=User("alice", ()), kind="Node", verb="cordon", namespace="", name="n2")
    assert refusal(alice) is None


def test_the_node_agents_key_acts_only_as_a_node() -> None:
    agents = node_agent_identity("agent")
    assert node_actor_problem(agents, "system:node/n1") is None
    assert node_actor_problem(agents, "system:node:n1") is None
    for actor in ("system:node/", "system:agent", "system:replicaset-controller", "", "alice"):
        assert "acts only as a node" in str(node_actor_problem(agents, actor))
    assert node_actor_problem(control_plane_identity("scheduler"), "alice") is None

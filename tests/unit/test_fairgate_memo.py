"""The door's API Priority and Fairness gate remembers how it classified a caller's kind of
request (``handlers.fairgate.FairGate``), for as long as the configuration stays the same."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from core.access.flowdefaults import configuration
from core.access.rbac import Request, User
from handlers.fairgate import Config, FairGate

ALICE = User("alice", ("system:authenticated",))


class Counted(Mapping[str, Any]):
    """A schema that counts how often its rules are looked at."""

    def __init__(self, schema: Mapping[str, Any], reads: list[int]) -> None:
        self._schema, self._reads = schema, reads

    def __getitem__(self, key: str) -> Any:
        if key == "spec":
            self._reads[0] += 1
        return self._schema[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._schema)

    def __len__(self) -> int:
        return len(self._schema)


def pod_create(name: str, namespace: str = "default") -> Request:
    return Request(verb="create", resource="pods", namespace=namespace, name=name)


def own_schema(level: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "alice-first"},
        "spec": {
            "matchingPrecedence": 10,
            "priorityLevelConfiguration": {"name": level},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "User", "user": {"name": "alice"}}],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                        }
                    ],
                }
            ],
        },
    }


def test_the_same_callers_requests_for_other_objects_walk_the_schemas_once() -> None:
    reads = [0]
    schemas, levels = configuration((), ())
    counted: Config = ([Counted(s, reads) for s in schemas], levels)
    gate = FairGate(total_seats=10, read=lambda: counted)
    first = gate.classify(ALICE, pod_create("a"))
    walked = reads[0]
    assert walked > 0
    for name in ("b", "c", "d"):
        assert gate.classify(ALICE, pod_create(name)) == first
    assert reads[0] == walked
    # Another namespace may be another flow (a ByNamespace schema): classified afresh.
    gate.classify(ALICE, pod_create("a", namespace="other"))
    assert reads[0] > walked


def test_a_new_configuration_forgets_what_was_remembered() -> None:
    version = [1]
    stored: list[dict[str, Any]] = []
    gate = FairGate(
        total_seats=10,
        read=lambda: configuration(stored, ()),
        version=lambda: version[0],
    )
    before = gate.classify(ALICE, pod_create("a"))
    assert before.schema != "alice-first"
    stored.append(own_schema("workload-high"))
    version[0] = 2
    after = gate.classify(ALICE, pod_create("b"))
    assert (after.schema, after.level, after.flow) == (
        "alice-first", "workload-high", "alice-first/alice",
    )  # fmt: skip

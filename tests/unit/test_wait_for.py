"""``fleetlog wait --for=…`` reads kubectl's forms and judges an object as kubectl does."""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from ops.cli.wait import Wanted, parse_wanted


def _pod(phase: str, ready: str) -> dict:
    return {
        "kind": "Pod",
        "namespace": "default",
        "name": "fetch",
        "uid": "u1",
        "version": 3,
        "last_seq": 9,
        "created_ns": 0,
        "manifest": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "fetch"},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
        },
    }


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("condition=Ready", Wanted("condition", "Ready", "True")),
        ("condition=Ready=false", Wanted("condition", "Ready", "false")),
        ("jsonpath={.status.phase}=Succeeded", Wanted("jsonpath", "{.status.phase}", "Succeeded")),
        ("jsonpath={.a[?(@.b=='c')].d}=x=y", Wanted("jsonpath", "{.a[?(@.b=='c')].d}", "x=y")),
        ("delete", Wanted("delete")),
        ("create", Wanted("create")),
    ],
)
def test_the_forms_kubectl_takes(text: str, wanted: Wanted) -> None:
    assert parse_wanted(text) == wanted


@pytest.mark.parametrize("text", ["ready", "condition=", "jsonpath=.status.phase", "jsonpath={x}"])
def test_other_forms_are_refused_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValidationFailed, match="use condition=NAME"):
        parse_wanted(text)


def test_conditions_and_paths_are_judged_on_the_stored_object() -> None:
    running, done = _pod("Running", "True"), _pod("Succeeded", "False")
    assert parse_wanted("condition=Ready").met(running)
    assert not parse_wanted("condition=Ready").met(done)
    assert parse_wanted("condition=ready=False").met(done)
    assert parse_wanted("jsonpath={.status.phase}=Succeeded").met(done)
    assert not parse_wanted("jsonpath={.status.phase}=Succeeded").met(running)
    assert parse_wanted("delete").met(None) and not parse_wanted("delete").met(running)
    assert parse_wanted("create").met(running) and not parse_wanted("create").met(None)

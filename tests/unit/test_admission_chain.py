"""The admission chain's order and notes (``core.policy.admissionchain``), and the chain the
gateway builds from it: mutating stages before validating ones, each phase in kube-apiserver's
plugin order, whatever order the stages were listed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from core.policy.admissionchain import PLUGIN_ORDER, Phase, StageNote, chain_order
from handlers.gateway.admission import Admit


@dataclass(frozen=True)
class Named:
    name: str
    phase: Phase


def test_mutating_stages_run_before_validating_ones_each_in_kube_order() -> None:
    listed = [
        Named("PodSecurity", "validating"),
        Named("DefaultTolerationSeconds", "mutating"),
        Named("LimitRanger", "validating"),
        Named("NamespaceLifecycle", "validating"),
        Named("Priority", "mutating"),
        Named("LimitRanger", "mutating"),
        Named("Priority", "validating"),
    ]
    assert [(s.name, s.phase) for s in chain_order(listed)] == [
        ("LimitRanger", "mutating"),
        ("Priority", "mutating"),
        ("DefaultTolerationSeconds", "mutating"),
        ("NamespaceLifecycle", "validating"),
        ("LimitRanger", "validating"),
        ("PodSecurity", "validating"),
        ("Priority", "validating"),
    ]


def test_resource_quota_is_the_last_plugin_as_in_kube_apiserver() -> None:
    assert PLUGIN_ORDER[-1] == "ResourceQuota"
    assert PLUGIN_ORDER.index("LimitRanger") < PLUGIN_ORDER.index("PodSecurity")
    # kube's AllOrderedPlugins: LimitRanger, ServiceAccount, NodeRestriction, ..., PodSecurity
    assert PLUGIN_ORDER.index("LimitRanger") < PLUGIN_ORDER.index("NodeRestriction")
    assert PLUGIN_ORDER.index("NodeRestriction") < PLUGIN_ORDER.index("PodSecurity")
    assert PLUGIN_ORDER.index("PodSecurity") < PLUGIN_ORDER.index("Priority")


def test_an_unknown_plugin_or_a_phase_wired_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown admission plugin 'AlwaysPullImages'"):
        chain_order([Named("AlwaysPullImages", "mutating")])
    with pytest.raises(ValueError, match="two validating stages for PodSecurity"):
        chain_order([Named("PodSecurity", "validating"), Named("PodSecurity", "validating")])


def test_a_note_names_its_stage_as_the_audit_record_shows_it() -> None:
    assert str(StageNote("LimitRanger", "mutated", "defaulted cpu limit for container app")) == (
        "mutated by LimitRanger: defaulted cpu limit for container app"
    )
    assert str(StageNote("PodSecurity", "denied")) == "denied by PodSecurity"


def test_the_gateway_chain_is_in_kube_order() -> None:
    admit = Admit(cast(Any, None), cast(Any, None))
    assert [(s.name, s.phase) for s in admit.stages] == [
        ("LimitRanger", "mutating"),
        ("Priority", "mutating"),
        ("DefaultTolerationSeconds", "mutating"),
        ("NamespaceLifecycle", "validating"),
        ("LimitRanger", "validating"),
        ("NodeRestriction", "validating"),
        ("PodSecurity", "validating"),
        ("Priority", "validating"),
    ]

"""Pod Security Admission's decisions (``core.access.podsecurity.evaluate`` and friends): what
a namespace's modes make of a pod or a workload's template, which pod updates are judged
again, and the warnings about existing pods when a namespace's enforce level is raised."""

from __future__ import annotations

from typing import Any

from core.access.podsecurity import (
    AUDIT_VIOLATIONS_ANNOTATION,
    ENFORCE_POLICY_ANNOTATION,
    NamespacePolicy,
    evaluate,
    existing_pod_warnings,
    significant_pod_update,
)

PLAIN = {"containers": [{"name": "web", "image": "nginx"}]}
PRIVILEGED = {
    "containers": [{"name": "web", "image": "nginx", "securityContext": {"privileged": True}}]
}
BASELINE_MESSAGE = (
    'violates PodSecurity "baseline:latest": privileged (container "web" must not set '
    "securityContext.privileged=true)"
)
BASELINE_WARNING = (
    'would violate PodSecurity "baseline:latest": privileged (container "web" must not set '
    "securityContext.privileged=true)"
)


def test_enforce_refuses_with_the_violations_and_warns_nothing_more() -> None:
    policy = NamespacePolicy(enforce="baseline", warn="baseline")
    verdict = evaluate(policy, PRIVILEGED, enforce=True)
    assert verdict.denied == BASELINE_MESSAGE
    assert verdict.warnings == ()
    assert verdict.annotations == {ENFORCE_POLICY_ANNOTATION: "baseline:latest"}


def test_warn_and_audit_let_the_pod_in_and_say_what_it_would_violate() -> None:
    policy = NamespacePolicy(warn="baseline", audit="baseline")
    verdict = evaluate(policy, PRIVILEGED, enforce=True)
    assert verdict.denied == ""
    assert verdict.warnings == (BASELINE_WARNING,)
    assert verdict.annotations == {
        ENFORCE_POLICY_ANNOTATION: "privileged:latest",
        AUDIT_VIOLATIONS_ANNOTATION: BASELINE_WARNING,
    }
    assert evaluate(policy, PLAIN, enforce=True).warnings == ()


def test_a_workload_template_is_never_refused_only_warned_about() -> None:
    policy = NamespacePolicy(enforce="baseline", warn="baseline")
    verdict = evaluate(policy, PRIVILEGED, enforce=False)
    assert verdict.denied == ""
    assert verdict.warnings == (BASELINE_WARNING,)
    only_enforced = evaluate(NamespacePolicy(enforce="baseline"), PRIVILEGED, enforce=False)
    assert only_enforced.denied == "" and only_enforced.warnings == ()


def test_only_an_image_change_makes_a_pod_update_significant() -> None:
    relabelled: dict[str, Any] = {**PLAIN, "tolerations": [{"operator": "Exists"}]}
    assert not significant_pod_update(relabelled, PLAIN)
    new_image = {"containers": [{"name": "web", "image": "nginx:2"}]}
    assert significant_pod_update(new_image, PLAIN)
    assert significant_pod_update({"containers": [*PLAIN["containers"], {"image": "x"}]}, PLAIN)


def test_raising_enforce_warns_about_existing_pods_folding_alike_ones() -> None:
    pods = [
        ("a", PRIVILEGED, {}),
        ("ok", PLAIN, {}),
        ("b", PRIVILEGED, {}),
        ("c", PRIVILEGED, {}),
        ("host", {**PLAIN, "hostNetwork": True}, {}),
    ]
    assert existing_pod_warnings("prod", "baseline", pods) == [
        'existing pods in namespace "prod" violate the new PodSecurity enforce level '
        '"baseline:latest"',
        "a (and 2 other pods): privileged",
        "host: host namespaces",
    ]
    assert existing_pod_warnings("prod", "baseline", [("ok", PLAIN, {})]) == []
    assert existing_pod_warnings("prod", "privileged", pods) == []

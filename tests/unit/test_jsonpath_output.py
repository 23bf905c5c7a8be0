"""``-o jsonpath=…`` templates print what kubectl prints for them."""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from ops.render.jsonpath import jsonpath_text

SERVICE = {
    "kind": "Service",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"clusterIP": "100.64.0.7", "ports": [{"port": 80, "name": "http"}, {"port": 443}]},
}
PODS = {
    "kind": "List",
    "items": [
        {
            "metadata": {"name": "a"},
            "status": {"podIP": "100.96.0.2", "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {"metadata": {"name": "b"}, "status": {"podIP": "100.96.0.3", "conditions": []}},
    ],
}


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("{.spec.clusterIP}", "100.64.0.7"),
        ("http://{.spec.clusterIP}:{.spec.ports[0].port}/", "http://100.64.0.7:80/"),
        ("{.spec.ports[*].port}", "80 443"),
        ("{.metadata.labels}", '{"app":"web"}'),
        ("{.spec.nothing}", ""),
        ('{.metadata.name}{"\\n"}', "web\n"),
        ("{$.kind}", "Service"),
    ],
)
def test_one_object(template: str, printed: str) -> None:
    assert jsonpath_text(template, SERVICE) == printed


def test_range_and_filters_over_a_list() -> None:
    template = '{range .items[*]}{.metadata.name}={.status.podIP}{"\\n"}{end}'
    assert jsonpath_text(template, PODS) == "a=100.96.0.2\nb=100.96.0.3\n"
    ready = '{.items[*].status.conditions[?(@.type=="Ready")].status}'
    assert jsonpath_text(ready, PODS) == "True"
    assert jsonpath_text("{.items[*].metadata.name}", PODS) == "a b"


@pytest.mark.parametrize("template", ["{.spec", "{end}", "{range .items[*]}{.x}", "{.spec[[}"])
def test_a_template_that_cannot_be_read_is_refused(template: str) -> None:
    with pytest.raises(ValidationFailed):
        jsonpath_text(template, SERVICE)

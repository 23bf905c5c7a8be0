"""``kubectl -l`` selectors read as apimachinery's ``labels.Parse`` reads them."""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from core.meta.labels import parse_selector_text


@pytest.mark.parametrize(
    ("text", "labels", "selected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "api"}, False),
        ("app!=web", {"app": "api"}, True),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app=web,tier=front", {"app": "web", "tier": "front"}, True),
        ("app=web,tier=front", {"app": "web"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod,staging),app", {"env": "prod"}, False),
        ("env notin (prod)", {"env": "dev"}, True),
        ("env notin (prod)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "web"}, False),
        ("!app", {}, True),
        ("example.com/role=db", {"example.com/role": "db"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_selectors_select_as_kubectl_does(
    text: str, labels: dict[str, str], selected: bool
) -> None:
    assert parse_selector_text(text).matches(labels) is selected


@pytest.mark.parametrize("text", ["app=(web)", "app in prod", "=web", "app=web,,", "a b"])
def test_a_selector_that_cannot_be_read_is_refused_with_its_part(text: str) -> None:
    with pytest.raises(ValidationFailed, match="unable to parse requirement"):
        parse_selector_text(text)

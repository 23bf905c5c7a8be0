"""The JetStream API prefix of a domain, and the subjects built from it (streams/jsapi.py)."""

from __future__ import annotations

import pytest

from streams import jsapi
from streams.jsapi import StreamSubjects


def test_no_domain_is_the_servers_own_api() -> None:
    assert jsapi.api_prefix(None) == "$JS.API"
    assert jsapi.api_prefix("hub") == "$JS.hub.API"


def test_a_streams_subjects_carry_the_prefix() -> None:
    subjects = StreamSubjects.build("$JS.hub.API", "FLEET")
    assert subjects.direct_get == "$JS.hub.API.DIRECT.GET.FLEET"
    assert subjects.info == "$JS.hub.API.STREAM.INFO.FLEET"
    assert subjects.create == "$JS.hub.API.STREAM.CREATE.FLEET"
    assert subjects.update == "$JS.hub.API.STREAM.UPDATE.FLEET"
    assert subjects.consumer_create == "$JS.hub.API.CONSUMER.CREATE.FLEET"
    assert subjects.consumer_next("c1") == "$JS.hub.API.CONSUMER.MSG.NEXT.FLEET.c1"
    assert subjects.consumer_delete("c1") == "$JS.hub.API.CONSUMER.DELETE.FLEET.c1"


def test_the_domain_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jsapi.ENV_DOMAIN, raising=False)
    assert jsapi.configured_domain() is None
    monkeypatch.setenv(jsapi.ENV_DOMAIN, " ")
    assert jsapi.configured_domain() is None
    monkeypatch.setenv(jsapi.ENV_DOMAIN, "hub")
    assert jsapi.configured_domain() == "hub"


@pytest.mark.parametrize("domain", ["a.b", "a*", "a>", "a b", "\t", ""])
def test_a_domain_is_one_subject_token(domain: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not a JetStream domain"):
        jsapi.check_domain(domain)
    if domain.strip():
        monkeypatch.setenv(jsapi.ENV_DOMAIN, domain)
        with pytest.raises(ValueError, match="not a JetStream domain"):
            jsapi.configured_domain()

"""The name-to-token encoding must be reversible and always yield one valid subject token."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ValidationFailed
from streams.subjects import (
    command_subject,
    decode_token,
    encode_token,
    event_filter,
    event_subject,
    parse_command_subject,
    parse_event_subject,
)

VALID_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
HOSTILE = [
    "",
    ".",
    "..",
    "a.b",
    "*",
    ">",
    "a b",
    "\t",
    "\n",
    "fo*o",
    "x>",
    "_",
    "__",
    "_2E",
    "ünïcödé",
    "日本",
    "🚀",
    "a" * 5000,
    "-",
    "a_b",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_encode_to_one_valid_token_and_back(name: str) -> None:
    token = encode_token(name)
    assert VALID_TOKEN.fullmatch(token)
    assert decode_token(token) == name


@given(st.text())
def test_any_text_round_trips(name: str) -> None:
    token = encode_token(name)
    assert VALID_TOKEN.fullmatch(token)
    assert decode_token(token) == name


@given(st.text(), st.text())
def test_distinct_names_never_share_a_token(a: str, b: str) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)


def test_ordinary_kubernetes_names_stay_readable() -> None:
    assert encode_token("web-7d9f") == "web-7d9f"
    assert event_subject("Pod", "default", "web-1") == "fleet.evt.pod.default.web-1"
    assert event_subject("Node", "", "node.example.com") == "fleet.evt.node._.node_2Eexample_2Ecom"


@given(st.text(), st.text())
def test_event_subjects_parse_back(namespace: str, name: str) -> None:
    assert parse_event_subject(event_subject("Pod", namespace, name)) == ("pod", namespace, name)


def test_filters_leave_open_positions_as_wildcards() -> None:
    assert event_filter() == "fleet.evt.>"
    assert event_filter("Pod") == "fleet.evt.pod.*.*"
    assert event_filter("Pod", "default") == "fleet.evt.pod.default.*"
    assert event_filter(None, None, "web") == "fleet.evt.*.*.web"


@pytest.mark.parametrize("token", ["a.b", "a*", "_zz", "_2", "a b", "_FF", ">"])
def test_tokens_the_encoder_cannot_produce_are_rejected(token: str) -> None:
    with pytest.raises(ValidationFailed):
        decode_token(token)


def test_command_subjects() -> None:
    assert command_subject("Pod", "apply") == "fleet.cmd.pod.apply"
    assert parse_command_subject("fleet.cmd.pod.apply") == ("pod", "apply")
    with pytest.raises(ValidationFailed, match=r"fleet\.cmd\.<kind>\.<verb>"):
        parse_command_subject("fleet.cmd.pod")


def test_publish_acks_are_read_like_the_json_parser_reads_them() -> None:
    import json

    from streams.eventstore import parse_ack

    for ack in [
        b'{"stream":"FLEET","seq":12}',
        b'{"stream":"FLEET","domain":"hub","seq":7}',
        b'{"stream":"FLEET","seq":12,"duplicate":true}',
        b'{"stream":"FLEET","seq":4,"batch":"b1","count":2}',
        b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 2"},"stream":"FLEET","seq":0}',
    ]:
        parsed = parse_ack(ack)
        expected = json.loads(ack)
        assert parsed.get("seq") == expected.get("seq")
        assert parsed.get("error") == expected.get("error")
        assert parsed.get("duplicate") == expected.get("duplicate")
        assert parsed.get("count") == expected.get("count")
    assert "error" in parse_ack(b"garbage")

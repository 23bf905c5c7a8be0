"""ConfigMap and Secret are validated as ``pkg/apis/core/validation`` validates them, stringData
is merged into data, and an immutable object keeps its contents (``core.config``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.config.aggregates import ConfigMap, Secret
from core.errors import InvalidTransition, ValidationFailed

AT = datetime(2026, 12, 6, tzinfo=UTC)


def doc(kind: str, name: str = "x", **body: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, **body}


def rejected(manifest: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(manifest)
    errors = info.value.errors or [info.value]
    return "\n".join(f"{e.field}: {e.message}" for e in errors)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_string_data_is_merged_into_data_and_wins_and_the_type_defaults_to_opaque() -> None:
    secret = dump_manifest(
        parse_manifest(doc("Secret", data={"a": b64("old"), "b": b64("kept")},
                           stringData={"a": "new"}))
    )  # fmt: skip
    assert secret["data"] == {"a": b64("new"), "b": b64("kept")}
    assert "stringData" not in secret and secret["type"] == "Opaque"


@pytest.mark.parametrize(
    ("kind", "body", "problem"),
    [
        ("Secret", {"stringData": {"a b": "v"}},
         "data[\"a b\"]: Invalid value \"a b\": a valid config key must consist of "
         "alphanumeric characters, '-', '_' or '.'"),
        ("ConfigMap", {"data": {"..": "v"}}, "data[..]: Invalid value \"..\": must not be '..'"),
        ("Secret", {"data": {"k": "not base64!"}}, "data.k: Invalid value: illegal base64 data"),
        ("Secret", {"type": "kubernetes.io/tls", "stringData": {"tls.key": "k"}},
         "data[tls.crt]: Required value"),
        ("Secret", {"type": "kubernetes.io/basic-auth"}, "data.username: Required value"),
        ("Secret", {"type": "kubernetes.io/ssh-auth"}, "data.ssh-privatekey: Required value"),
        ("Secret", {"type": "kubernetes.io/dockerconfigjson",
                    "stringData": {".dockerconfigjson": "{nope"}},
         "data[.dockerconfigjson]: Invalid value: <secret contents redacted>"),
        ("Secret", {"type": "kubernetes.io/service-account-token"},
         "metadata.annotations[kubernetes.io/service-account.name]: Required value"),
        ("Secret", {"stringData": {"k": "x" * (1024 * 1024 + 1)}},
         "data: Too long: may not be more than 1048576 bytes"),
        ("ConfigMap", {"data": {"k": "x" * (1024 * 1024), "l": "y"}},
         "data: Too long: may not be more than 1048576 bytes"),
        ("ConfigMap", {"data": {"a": "1"}, "binaryData": {"a": "MQ=="}},
         "binaryData: Invalid value \"a\": duplicate of key present in data"),
    ],
)  # fmt: skip
def test_invalid_config_maps_and_secrets_are_refused_in_kubes_words(
    kind: str, body: dict[str, Any], problem: str
) -> None:
    assert problem in rejected(doc(kind, **body))


def test_a_secret_or_config_map_of_exactly_1_mib_of_values_is_accepted() -> None:
    # Only the values count, as in kube (not the keys).
    parse_manifest(doc("Secret", stringData={"k": "x" * (1024 * 1024)}))
    parse_manifest(doc("ConfigMap", data={"k": "x" * (512 * 1024)},
                       binaryData={"b": base64.b64encode(b"y" * (512 * 1024)).decode()}))  # fmt: skip


def test_a_tls_secret_with_both_keys_and_an_unknown_type_are_accepted() -> None:
    parse_manifest(doc("Secret", type="kubernetes.io/tls",
                       stringData={"tls.crt": "c", "tls.key": "k"}))  # fmt: skip
    parse_manifest(doc("Secret", type="example.com/anything"))


def _stored(cls: type[ConfigMap] | type[Secret], manifest: dict[str, Any]) -> Any:
    return cls.create(None, agg_id=f"{cls.KIND}/default/x", manifest=manifest, uid="u", at=AT)


def test_an_immutable_config_map_keeps_its_data_and_stays_immutable() -> None:
    frozen = doc("ConfigMap", data={"k": "1"}, immutable=True)
    current = _stored(ConfigMap, frozen)
    same = ConfigMap.apply_manifest(
        current, agg_id=current.id, manifest=doc("ConfigMap", data={"k": "1"}, immutable=True),
        uid="u", at=AT,
    )  # fmt: skip
    assert same.version == 1  # nothing changed, nothing refused
    with pytest.raises(InvalidTransition) as info:
        ConfigMap.apply_manifest(
            current, agg_id=current.id,
            manifest=doc("ConfigMap", data={"k": "2"}, binaryData={"b": "MQ=="}),
            uid="u", at=AT,
        )  # fmt: skip
    listed = [str(e) for e in info.value.errors]
    assert listed == [
        "immutable: Forbidden: field is immutable when `immutable` is set",
        "data: Forbidden: field is immutable when `immutable` is set",
        "binaryData: Forbidden: field is immutable when `immutable` is set",
    ]


def test_a_secrets_type_never_changes_and_a_mutable_one_may_change_its_data() -> None:
    current = _stored(Secret, doc("Secret", type="Opaque", data={"k": "v1"}))
    changed = Secret.apply_manifest(
        current, agg_id=current.id, manifest=doc("Secret", type="Opaque", data={"k": "v2"}),
        uid="u", at=AT,
    )  # fmt: skip
    assert changed.manifest["data"] == {"k": "v2"}
    with pytest.raises(InvalidTransition, match=r'Invalid value "example\.com/x": field is immut'):
        Secret.apply_manifest(
            current, agg_id=current.id, manifest=doc("Secret", type="example.com/x"),
            uid="u", at=AT,
        )  # fmt: skip

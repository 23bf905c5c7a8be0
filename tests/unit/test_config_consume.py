"""What a pod takes from ConfigMaps and Secrets, as the kubelet makes it (``core.config.consume``
and ``core.pods.downward``): variables from keys and whole objects (with a prefix, env over
envFrom, only a ConfigMap's text keys), volume files with items and modes, and kube's errors
for what is missing unless the reference is optional."""

from __future__ import annotations

from typing import Any

import pytest

from core.config.consume import ConfigSources, ConfigUnavailable, referenced, volume_files
from core.pods.downward import ContainerConfigError, PodFacts, container_environment

SOURCES = ConfigSources(
    namespace="shop",
    config_maps={"settings": {"mode": b"fast", "LEVEL": b"2", "blob": b"\x00\x01"}},
    env_only={"settings": frozenset({"mode", "LEVEL"})},
    secrets={"db": {"password": b"s3cret", "user": b"app"}},
)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    facts = PodFacts(
        manifest={"metadata": {"name": "p"}}, pod_ip=None, host_ip=None, node_name="n",
        node_allocatable={}, config=SOURCES,
    )  # fmt: skip
    return container_environment(container, facts)


def test_variables_come_from_keys_and_whole_objects_and_env_wins_over_env_from() -> None:
    env = env_of({
        "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "db"},
                                                              "prefix": "DB_"}],
        "env": [
            {"name": "LEVEL", "value": "9"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        ],
    })  # fmt: skip
    # binaryData ("blob") never becomes a variable, as the kubelet reads only data.
    assert env == {
        "mode": "fast", "LEVEL": "9", "DB_password": "s3cret", "DB_user": "app",
        "PW": "s3cret", "M": "fast",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"secretKeyRef": {"name": "gone", "key": "k"}}, 'secret "gone" not found'),
        ({"configMapKeyRef": {"name": "gone", "key": "k"}}, 'configmap "gone" not found'),
        ({"secretKeyRef": {"name": "db", "key": "nope"}},
         "couldn't find key nope in Secret shop/db"),
        ({"configMapKeyRef": {"name": "settings", "key": "blob"}},
         "couldn't find key blob in ConfigMap shop/settings"),
    ],
)  # fmt: skip
def test_a_missing_object_or_key_is_a_config_error_unless_optional(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        env_of({"env": [{"name": "X", "valueFrom": entry}]})
    ref = next(iter(entry.values()))
    optional = {next(iter(entry)): {**ref, "optional": True}}
    assert env_of({"env": [{"name": "X", "valueFrom": optional}]}) == {}
    with pytest.raises(ContainerConfigError, match='secret "gone" not found'):
        env_of({"envFrom": [{"secretRef": {"name": "gone"}}]})
    assert env_of({"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}) == {}


def test_a_volume_holds_every_key_or_the_items_with_their_modes() -> None:
    whole = volume_files({"name": "v", "configMap": {"name": "settings"}}, SOURCES)
    assert whole == {"mode": (b"fast", 0o644), "LEVEL": (b"2", 0o644), "blob": (b"\x00\x01", 0o644)}
    picked = volume_files(
        {"name": "v", "secret": {"secretName": "db", "defaultMode": 0o440,
                                 "items": [{"key": "password", "path": "conf/pw"},
                                           {"key": "user", "path": "u", "mode": 0o400}]}},
        SOURCES,
    )  # fmt: skip
    assert picked == {"conf/pw": (b"s3cret", 0o440), "u": (b"app", 0o400)}
    assert volume_files({"name": "v", "emptyDir": {}}, SOURCES) is None
    optional = {"name": "v", "secret": {"secretName": "gone", "optional": True}}
    assert volume_files(optional, SOURCES) == {}


def test_a_volume_of_a_missing_object_or_key_cannot_be_mounted() -> None:
    with pytest.raises(ConfigUnavailable, match='volume "v" : configmap "gone" not found'):
        volume_files({"name": "v", "configMap": {"name": "gone"}}, SOURCES)
    with pytest.raises(ConfigUnavailable, match="references non-existent config key: nope"):
        volume_files(
            {"name": "v", "secret": {"secretName": "db", "items": [{"key": "nope", "path": "x"}]}},
            SOURCES,
        )
    with pytest.raises(ConfigUnavailable, match="leaves the volume"):
        volume_files(
            {"name": "v", "secret": {"secretName": "db",
                                     "items": [{"key": "user", "path": "../../etc/x"}]}},
            SOURCES,
        )  # fmt: skip


def test_a_pod_references_what_its_containers_and_volumes_name() -> None:
    manifest = {"spec": {
        "initContainers": [{"envFrom": [{"secretRef": {"name": "init-s"}}]}],
        "containers": [{"env": [{"name": "A", "valueFrom": {"configMapKeyRef":
                                                            {"name": "c1", "key": "k"}}}]}],
        "volumes": [{"name": "v", "secret": {"secretName": "vol-s"}},
                    {"name": "w", "configMap": {"name": "c2"}}],
    }}  # fmt: skip
    assert referenced(manifest) == ({"c1", "c2"}, {"init-s", "vol-s"})

"""Protobuf bodies as kubectl 1.3x sends them (captured from its typed clients), read as the JSON
the same request would have carried; and every way a body is refused."""

from __future__ import annotations

import pytest

from core.kubeapi.protobuf import MAGIC, NotProtobuf, UnreadKind, decode
from core.kubeapi.protoschema import MESSAGES, ROOTS

# ``kubectl create namespace shop``
NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121c0a140a0473686f7012001a0022002a003200380042"
    "0012001a020a001a002200"
)
# ``kubectl create deployment web --image=python:3 --replicas=0 --port=8080 --
# python3 -m http.server 8080``
DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412de010a1f0a0377656212001a0022002a"
    "003200380042005a0a0a03617070120377656212ac010800120c0a0a0a0361707012037765621a91010a1c0a"
    "0012001a0022002a003200380042005a0a0a036170701203776562127112530a06707974686f6e1208707974"
    "686f6e3a331a07707974686f6e331a022d6d1a0b687474702e7365727665721a04383038302a00320b0a0010"
    "0018903f22002a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201"
    "008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200"
)
# ``kubectl create service clusterip web --tcp=80:8080``
SERVICE = bytes.fromhex(
    "6b3873000a0d0a02763112075365727669636512690a1f0a0377656212001a0022002a003200380042005a0a"
    "0a03617070120377656212420a1b0a0738302d38303830120354435018502207080010903f1a002800120a0a"
    "0361707012037765621a002209436c757374657249503a00420052005a00600068001a020a001a002200"
)
# ``kubectl create rolebinding rb1 --role=r1 --user=alice --serviceaccount=shop:sa``
ROLEBINDING = bytes.fromhex(
    "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c654269"
    "6e64696e671286010a130a0372623112001a0022002a00320038004200122a0a04557365721219726261632e"
    "617574686f72697a6174696f6e2e6b38732e696f1a05616c6963652200121c0a0e536572766963654163636f"
    "756e7412001a027361220473686f701a250a19726261632e617574686f72697a6174696f6e2e6b38732e696f"
    "1204526f6c651a0272311a002200"
)
# ``kubectl create clusterrole cr1 --verb=get --non-resource-url=/logs/*``
CLUSTERROLE = bytes.fromhex(
    "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c75737465"
    "72526f6c6512250a130a0363723112001a0022002a00320038004200120e0a036765742a072f6c6f67732f2a"
    "1a002200"
)
# ``kubectl create priorityclass p0 --value=0 --description=zero``
PRIORITYCLASS = bytes.fromhex(
    "6b3873000a250a147363686564756c696e672e6b38732e696f2f7631120d5072696f72697479436c61737312"
    "340a120a02703012001a0022002a003200380042001000180022047a65726f2a14507265656d70744c6f7765"
    "725072696f726974791a002200"
)
# ``kubectl auth can-i create pods -n shop``
ACCESS_REVIEW = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a656374"
    "416363657373526576696577123c0a100a0012001a0022002a00320038004200121e0a1c0a0473686f701206"
    "6372656174651a0022002a04706f647332003a001a08080012001a0020001a002200"
)
# ``kubectl autoscale deployment web --min=2 --max=5 --cpu=60% --name=web5``
AUTOSCALER = bytes.fromhex(
    "6b3873000a290a0e6175746f7363616c696e672f76321217486f72697a6f6e74616c506f644175746f7363"
    "616c657212620a140a047765623512001a0022002a0032003800420012440a1a0a0a4465706c6f796d656e"
    "7412037765621a07617070732f76311002180522220a085265736f7572636522160a03637075120f0a0b55"
    "74696c697a6174696f6e203c1a04180020001a002200"
)
# ``kubectl auth whoami``'s fallback to a beta version this door does not serve.
BETA_REVIEW = bytes.fromhex(
    "6b3873000a320a1d61757468656e7469636174696f6e2e6b38732e696f2f76316265746131121153656c6653"
    "75626a656374526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200"
)


def test_a_namespace_reads_as_kubectls_json_with_go_zero_values_left_out() -> None:
    assert decode(NAMESPACE) == {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "creationTimestamp": None}, "spec": {},
    }  # fmt: skip


def test_a_deployment_keeps_a_pointer_set_to_zero_and_its_whole_pod_template() -> None:
    assert decode(DEPLOYMENT) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "creationTimestamp": None, "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,  # a *int32 set to 0: not the default of 1
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "python",
                            "image": "python:3",
                            "command": ["python3", "-m", "http.server", "8080"],
                            "ports": [{"containerPort": 8080}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
    }


def test_a_service_port_target_is_an_int_or_string_and_its_status_is_dropped() -> None:
    assert decode(SERVICE)["spec"] == {
        "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        "selector": {"app": "web"},
        "type": "ClusterIP",
    }


def test_rbac_objects_priority_classes_and_access_reviews() -> None:
    binding = decode(ROLEBINDING)
    assert binding["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
        {"kind": "ServiceAccount", "name": "sa", "namespace": "shop"},
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1",
    }  # fmt: skip
    assert decode(CLUSTERROLE)["rules"] == [{"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]
    priority = decode(PRIORITYCLASS)
    # ``value`` has no omitempty in Go: zero is a value (and the class's priority).
    assert (priority["value"], priority["description"]) == (0, "zero")
    assert "globalDefault" not in priority
    assert decode(ACCESS_REVIEW)["spec"] == {
        "resourceAttributes": {"namespace": "shop", "verb": "create", "resource": "pods"}
    }


def test_an_autoscaler_as_kubectl_autoscale_sends_it() -> None:
    assert decode(AUTOSCALER)["spec"] == {
        "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60},
        }}],
    }  # fmt: skip


def _length_delimited(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _envelope(api_version: bytes, kind: bytes, raw: bytes) -> bytes:
    type_meta = _length_delimited(1, api_version) + _length_delimited(2, kind)
    return MAGIC + _length_delimited(1, type_meta) + _length_delimited(2, raw)


def test_a_disruption_budget_as_kubectl_create_pdb_sends_it() -> None:
    # ``kubectl create pdb web --selector=app=web --min-available=50%``, field by field as
    # k8s.io/api/policy/v1's generated marshaller writes it (non-pointer fields always).
    metadata = _length_delimited(1, b"web") + _length_delimited(2, b"")
    percent = bytes([1 << 3, 1, 2 << 3, 0]) + _length_delimited(3, b"50%")
    labels = _length_delimited(1, _length_delimited(1, b"app") + _length_delimited(2, b"web"))
    spec = _length_delimited(1, percent) + _length_delimited(2, labels)
    body = _length_delimited(1, metadata) + _length_delimited(2, spec)
    decoded = decode(_envelope(b"policy/v1", b"PodDisruptionBudget", body))
    assert decoded["spec"] == {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}
    number = bytes([1 << 3, 0, 2 << 3, 2]) + _length_delimited(3, b"")
    spec = _length_delimited(3, number) + _length_delimited(4, b"AlwaysAllow")
    decoded = decode(_envelope(b"policy/v1", b"PodDisruptionBudget", _length_delimited(2, spec)))
    assert decoded["spec"] == {"maxUnavailable": 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"}


def test_what_is_not_read_is_refused_by_name_never_read_in_part() -> None:
    with pytest.raises(UnreadKind, match=r"SelfSubjectReview \(authentication.k8s.io/v1beta1\)"):
        decode(BETA_REVIEW)
    # A field of a known message that the table does not list (field 9 of ObjectMeta).
    metadata = _length_delimited(1, b"shop") + bytes([9 << 3 | 0, 1])
    with pytest.raises(UnreadKind, match=r"Namespace.metadata holds protobuf field\(s\) \[9\]"):
        decode(_envelope(b"v1", b"Namespace", _length_delimited(1, metadata)))
    with pytest.raises(UnreadKind, match="content encoding"):
        decode(MAGIC + _length_delimited(3, b"gzip"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"kind": "Namespace"}',  # JSON sent under the protobuf media type
        MAGIC + b"\x0a\x7f\x0a",  # a length beyond the end
        MAGIC + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint that never ends
        NAMESPACE[:-3],  # truncated
        _envelope(
            b"v1",
            b"Namespace",
            # a creationTimestamp of 2^63 - 1 seconds
            _length_delimited(1, _length_delimited(8, b"\x08" + b"\xff" * 8 + b"\x7f")),
        ),
    ],
)
def test_bytes_that_are_not_a_kubernetes_message_are_refused(body: bytes) -> None:
    with pytest.raises(NotProtobuf):
        decode(body)


def test_every_root_and_every_named_type_is_in_the_table() -> None:
    assert set(ROOTS.values()) <= set(MESSAGES)

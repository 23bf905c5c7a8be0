"""Reading a Kubernetes protobuf body (``application/vnd.kubernetes.protobuf``) as the JSON object
the same request would have sent.

Why this exists: client-go's typed clients (so most of ``kubectl create …``, ``kubectl auth``,
``kubectl drain``'s evictions) send protobuf since 1.32, and a door that refuses it refuses
kubectl. The wire format is decoded by the ``protobuf`` library, from descriptors built out
of :mod:`core.kubeapi.protoschema`; this module turns the decoded message into kube's JSON
shape: ``omitempty`` zero values left out, embedded structs inlined, ``Time`` as RFC 3339,
``IntOrString`` as a number or a string, ``Quantity`` as its text, bytes as base64.

A body is Kubernetes' envelope: the four bytes ``k8s\\0`` and a ``runtime.Unknown`` holding the
object's apiVersion and kind and its own bytes. A kind this door does not decode, a field the
table does not list, or bytes that are not protobuf are refused with what to do instead (send
JSON), never read in part.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from core.kubeapi.protoschema import MESSAGES, ROOTS, SCALARS, Field

MEDIA_TYPE: Final = "application/vnd.kubernetes.protobuf"
MAGIC: Final = b"k8s\x00"
PACKAGE: Final = "fleetlog.kube"

_TYPES: Final = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
# The special messages' own fields (their JSON is not this shape: see _special).
_SPECIAL_FIELDS: Final = {
    "Time": (("seconds", 1, "int64"), ("nanos", 2, "int32")),
    "Quantity": (("string", 1, "string"),),
    "IntOrString": (("type", 1, "int64"), ("intVal", 2, "int32"), ("strVal", 3, "string")),
    "FieldsV1": (("Raw", 1, "bytes"),),
    "Ignored": (),
}


class ProtobufRefused(ValueError):
    """The body cannot be read: the message says why and what to send instead."""


class NotProtobuf(ProtobufRefused):
    """The bytes are not a Kubernetes protobuf message at all (kube: 400 BadRequest)."""


class UnreadKind(ProtobufRefused):
    """A kind, or a field of one, this table does not read (kube: 415 UnsupportedMediaType,
    as for a media type the server does not speak for that object)."""


def _scalar_field(
    message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: str
) -> None:
    field = message.field.add(name=name, number=number, type=_TYPES[kind])
    field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def _add_field(message: descriptor_pb2.DescriptorProto, field: Field) -> None:
    proto = message.field.add(name=field.name, number=field.number)
    if field.is_map:
        entry = message.nested_type.add(name=f"{field.name[0].upper()}{field.name[1:]}Entry")
        entry.options.map_entry = True
        _scalar_field(entry, "key", 1, "string")
        value = Field(number=2, name="value", type=field.type)
        _add_field(entry, value)
        proto.label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        proto.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
        proto.type_name = f".{PACKAGE}.{message.name}.{entry.name}"
        return
    proto.label = (
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        if field.repeated
        else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    )
    if field.type in SCALARS:
        proto.type = _TYPES[field.type]
    else:
        proto.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
        proto.type_name = f".{PACKAGE}.{field.type}"


def _file() -> descriptor_pb2.FileDescriptorProto:
    """Kubernetes' messages are proto2 (every field ``optional``): what was on the wire is
    known, zero values included."""
    file = descriptor_pb2.FileDescriptorProto(
        name="fleetlog_kube.proto", package=PACKAGE, syntax="proto2"
    )
    for name, fields in _SPECIAL_FIELDS.items():
        special = file.message_type.add(name=name)
        for field_name, number, kind in fields:
            _scalar_field(special, field_name, number, kind)
    for name, schema in MESSAGES.items():
        message = file.message_type.add(name=name)
        for field in schema:
            _add_field(message, field)
    return file


_CLASSES: Final = message_factory.GetMessages([_file()])


def _class(name: str) -> type[Message]:
    return _CLASSES[f"{PACKAGE}.{name}"]


def decode(body: bytes) -> dict[str, Any]:
    """The object ``body`` holds, as kube's JSON would spell it (``apiVersion`` and ``kind``
    from its envelope)."""
    if not body.startswith(MAGIC):
        raise NotProtobuf(
            "the body is not a Kubernetes protobuf message (it must start with k8s\\x00)"
        )
    envelope = _parse("Unknown", body[len(MAGIC) :])
    type_meta = envelope.typeMeta  # type: ignore[attr-defined]
    api_version, kind = type_meta.apiVersion, type_meta.kind
    if envelope.contentEncoding:  # type: ignore[attr-defined]
        raise UnreadKind(
            f"protobuf bodies with content encoding {envelope.contentEncoding!r} are not "  # type: ignore[attr-defined]
            "read here: send the object uncompressed or as application/json"
        )
    root = ROOTS.get((api_version, kind))
    if root is None:
        raise UnreadKind(
            f"fleetlog does not read {kind or '(no kind)'} ({api_version or 'no apiVersion'}) "
            "as protobuf: send it as application/json (kubectl apply -f, or "
            "kubectl create --dry-run=client -o yaml | kubectl apply -f -)"
        )
    obj = _parse(root, envelope.raw)  # type: ignore[attr-defined]
    return {"apiVersion": api_version, "kind": kind, **_object(root, obj, kind)}


def _parse(name: str, data: bytes) -> Message:
    message = _class(name)()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError) as error:
        raise NotProtobuf(f"the protobuf body could not be decoded: {error}") from None
    return message


def _object(name: str, message: Message, where: str) -> dict[str, Any]:
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({entry.field_number for entry in unknown})
        raise UnreadKind(
            f"{where} holds protobuf field(s) {numbers} of {name} that fleetlog does not read "
            "yet: send this object as application/json (kubectl apply -f)"
        )
    out: dict[str, Any] = {}
    by_number = {field.number: field for field in MESSAGES[name]}
    for descriptor, value in message.ListFields():
        field = by_number[descriptor.number]
        path = f"{where}.{field.name}"
        if field.type == "Ignored":
            continue
        if field.is_map:
            out[field.name] = {key: _value(field, item, path) for key, item in value.items()}
            continue
        if field.repeated:
            out[field.name] = [_value(field, item, path) for item in value]
            continue
        converted = _value(field, value, path)
        if field.inline and isinstance(converted, dict):
            out.update(converted)
        elif field.ptr or field.type not in SCALARS or converted not in ("", 0, False, b""):
            out[field.name] = converted
    return out


def _value(field: Field, value: Any, path: str) -> Any:
    if field.type == "bytes":
        return base64.b64encode(value).decode()
    if field.type in SCALARS:
        return value
    if field.type in _SPECIAL_FIELDS:
        return _special(field.type, value, path)
    return _object(field.type, value, path)


def _special(kind: str, value: Any, path: str) -> Any:
    if kind == "Quantity":
        return value.string
    if kind == "IntOrString":
        return value.strVal if value.type == 1 else value.intVal
    if kind == "Time":
        if not value.seconds and not value.nanos:
            return None  # Go's zero time, which its JSON writes as null
        try:
            stamp = datetime.fromtimestamp(value.seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise NotProtobuf(f"{path}: {value.seconds} s is not a time") from None
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    # FieldsV1: its bytes are the JSON of the field set.
    try:
        return json.loads(value.Raw or b"{}")
    except ValueError:
        raise NotProtobuf(f"{path}: its managed fields are not JSON") from None

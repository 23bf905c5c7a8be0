"""Shared foundations of the Kubernetes-shaped resource models.

Why this exists: every kind (Pod, Node, Deployment, ...) needs the same model configuration
(unknown fields rejected, camelCase on the wire, snake_case in Python), the same ``metadata``, the
same name and label rules, and the same way of turning a pydantic error into a ``ValidationFailed``
that names the offending field with a Kubernetes-style path (``spec.containers[0].image``).
Keeping them here means every kind rejects a hostile name or an unknown field the same way, and
the messages read like the API server's.

The rules follow ``k8s.io/apimachinery/pkg/util/validation`` (DNS-1123 / DNS-1035 names,
qualified names, label values) and ``pkg/apis/core/validation`` for the checks built on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from core.errors import InvalidQuantity, ValidationFailed
from core.quantity import canonical_quantity

# --------------------------------------------------------------------------------------------
# Model configuration
# --------------------------------------------------------------------------------------------


class K8sModel(BaseModel):
    """Base of every resource model: strict about unknown fields, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


# --------------------------------------------------------------------------------------------
# Errors with a Kubernetes-style field path
# --------------------------------------------------------------------------------------------

FIELD_ERROR: Final = "fleetlog"
"""pydantic error type for our own checks; ``ctx['subpath']`` extends the error location."""

QUANTITY_ERROR: Final = "fleetlog_quantity"
"""Like :data:`FIELD_ERROR`, for a value that is not a valid quantity."""

Loc = tuple[str | int, ...]


def field_error(message: str, *subpath: str | int, kind: str = FIELD_ERROR) -> PydanticCustomError:
    """An error for a validator to raise; ``subpath`` (wire names) is appended to its location."""
    return PydanticCustomError(kind, "{message}", {"message": message, "subpath": subpath})


def show(value: object) -> str:
    """A short, terminal-safe rendering of a user-supplied value for an error message."""
    if isinstance(value, str):
        if len(value) > 64:
            return json.dumps(value[:61])[:-1] + '..."'
        return json.dumps(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def invalid(value: object, reason: str) -> str:
    """The Kubernetes-style sentence for a bad value: ``Invalid value "x": <reason>``."""
    return f"Invalid value {show(value)}: {reason}"


def duplicate(value: object) -> str:
    return f"Duplicate value {show(value)}"


_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_BRACKET_KEY: Final = re.compile(r"[A-Za-z0-9_./-]+")


def format_path(loc: Loc) -> str:
    """``('spec', 'containers', 0, 'image')`` -> ``spec.containers[0].image``.

    Map keys that are not plain words print in brackets, like Kubernetes' ``field.Path.Key``:
    ``metadata.labels[app.kubernetes.io/name]``.
    """
    out: list[str] = []
    for item in loc:
        if isinstance(item, int):
            out.append(f"[{item}]")
        elif _PLAIN_KEY.fullmatch(item):
            out.append(f".{item}" if out else item)
        elif _BRACKET_KEY.fullmatch(item):
            out.append(f"[{item}]")
        else:
            out.append(f"[{json.dumps(item)}]")
    return "".join(out)


_EXPECTED: Final[dict[str, str]] = {
    "string_type": "a string",
    "string_unicode": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "none_required": "null",
}
_BOUNDS: Final[dict[str, tuple[str, str]]] = {
    "greater_than_equal": ("ge", "greater than or equal to"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "less than or equal to"),
    "less_than": ("lt", "less than"),
}


def _describe(error: Mapping[str, Any]) -> tuple[Loc, str]:
    """One pydantic error -> (location in wire names, short human message)."""
    kind: str = error["type"]
    loc: Loc = tuple(error["loc"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    last = loc[-1] if loc else ""
    if kind in (FIELD_ERROR, QUANTITY_ERROR):
        return loc + tuple(ctx.get("subpath", ())), str(ctx["message"])
    if kind == "extra_forbidden":
        return loc, f"unknown field {show(str(last))}"
    if kind == "missing":
        return loc, f"missing required field {show(str(last))}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return loc, f"Unsupported value {show(value)}: supported values: {expected}"
    if kind in _EXPECTED:
        return loc, invalid(value, f"must be {_EXPECTED[kind]}")
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return loc, invalid(value, f"must be {words} {ctx.get(key)}")
    if kind == "too_short":
        n = ctx.get("min_length")
        return loc, f"must have at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return loc, f"must have at most {n} item{'s' if n != 1 else ''}"
    return loc, invalid(value, str(error.get("msg", "is not valid")).lower())


def to_validation_failed(err: ValidationError, *, prefix: Loc = ()) -> ValidationFailed:
    """Turn a pydantic ``ValidationError`` into one ``ValidationFailed`` (or ``InvalidQuantity``).

    The first error is reported, with its Kubernetes-style path; the message says how many more
    there were.
    """
    errors = err.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic never raises an empty error
        return ValidationFailed("invalid input")
    first = errors[0]
    loc, message = _describe(first)
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    path = format_path(prefix + loc) or None
    if first["type"] == QUANTITY_ERROR:
        return InvalidQuantity(message, field=path)
    return ValidationFailed(message, field=path)


# --------------------------------------------------------------------------------------------
# Name rules (apimachinery util/validation), each returning the list of problems
# --------------------------------------------------------------------------------------------

_DNS1123_LABEL: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN: Final = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN)
_DNS1035_LABEL: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_RE: Final = re.compile(_DNS1035_LABEL)
_QUALIFIED_NAME: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE: Final = re.compile(_QUALIFIED_NAME)
_LABEL_VALUE_RE: Final = re.compile(f"({_QUALIFIED_NAME})?")
_IANA_SVC_NAME_RE: Final = re.compile("[-a-z0-9]+")
_HAS_LETTER_RE: Final = re.compile("[a-z]")
_CONFIG_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]+")

_DNS1123_LABEL_MSG: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex "
    f"used for validation is '{_DNS1123_LABEL}')"
)
_DNS1123_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{_DNS1123_SUBDOMAIN}')"
)
_DNS1035_LABEL_MSG: Final = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or "
    f"'abc-123', regex used for validation is '{_DNS1035_LABEL}')"
)
_QUALIFIED_NAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for "
    f"validation is '{_QUALIFIED_NAME}')"
)
_LABEL_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue', or "
    f"'my_value', or '12345', regex used for validation is '({_QUALIFIED_NAME})?')"
)

NameRule = Callable[[str], list[str]]


def dns1123_label_errors(value: str) -> list[str]:
    """Problems with ``value`` as a DNS-1123 label (namespace, container and port-less names)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL_RE.fullmatch(value):
        errs.append(_DNS1123_LABEL_MSG)
    return errs


def dns1123_subdomain_errors(value: str) -> list[str]:
    """Problems with ``value`` as a DNS-1123 subdomain (pod, node and deployment names)."""
    errs: list[str] = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def dns1035_label_errors(value: str) -> list[str]:
    """Problems with ``value`` as a DNS-1035 label (service names: must start with a letter)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(_DNS1035_LABEL_MSG)
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """Problems with ``value`` as a qualified name: ``[prefix/]name`` (label keys, taint keys)."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs = ["prefix part must be non-empty"]
        else:
            errs = [f"prefix part {e}" for e in dns1123_subdomain_errors(prefix)]
    else:
        return [
            "a qualified name "
            + _QUALIFIED_NAME_MSG
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append("name part " + _QUALIFIED_NAME_MSG)
    return errs


def label_value_errors(value: str) -> list[str]:
    """Problems with ``value`` as a label value (may be empty)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


def port_name_errors(value: str) -> list[str]:
    """Problems with ``value`` as an IANA service name (container port names, named ports)."""
    errs: list[str] = []
    if len(value) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME_RE.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not _HAS_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def config_key_errors(value: str) -> list[str]:
    """Problems with ``value`` as a ConfigMap/Secret key."""
    errs: list[str] = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _CONFIG_KEY_RE.fullmatch(value):
        errs.append(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
            "(e.g. 'key.name', or 'KEY_NAME', or 'key-name')"
        )
    if value in (".", "..") or value.startswith(".."):
        errs.append("must not be '.' or '..' and must not start with '..'")
    return errs


def generate_name_errors(rule: NameRule, value: str) -> list[str]:
    """``generateName`` is a prefix: a trailing '-' is allowed (Kubernetes masks it)."""
    masked = value[:-1] + "a" if value.endswith("-") else value
    return rule(masked)


def _rule_validator(rule: NameRule) -> Callable[[str], str]:
    def check(value: str) -> str:
        errs = rule(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)))
        return value

    return check


DNSLabel = Annotated[str, AfterValidator(_rule_validator(dns1123_label_errors))]
DNSSubdomain = Annotated[str, AfterValidator(_rule_validator(dns1123_subdomain_errors))]
QualifiedName = Annotated[str, AfterValidator(_rule_validator(qualified_name_errors))]
LabelValue = Annotated[str, AfterValidator(_rule_validator(label_value_errors))]
PortName = Annotated[str, AfterValidator(_rule_validator(port_name_errors))]
ConfigKey = Annotated[str, AfterValidator(_rule_validator(config_key_errors))]


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        errs = qualified_name_errors(key)
        if errs:
            raise field_error(invalid(key, "; ".join(errs)), key)
        errs = label_value_errors(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)), key)
    return labels


_MAX_ANNOTATIONS_BYTES: Final = 256 * 1024


def _check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    total = 0
    for key, value in annotations.items():
        errs = qualified_name_errors(key.lower())
        if errs:
            raise field_error(invalid(key, "; ".join(errs)), key)
        total += len(key.encode()) + len(value.encode())
    if total > _MAX_ANNOTATIONS_BYTES:
        raise field_error(
            f"Too long: annotations must have at most {_MAX_ANNOTATIONS_BYTES} bytes, got {total}"
        )
    return annotations


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
"""A label map: keys are qualified names, values label values (Kubernetes ValidateLabels)."""

Annotations = Annotated[dict[str, str], AfterValidator(_check_annotations)]


def _timestamp(value: object) -> object:
    # YAML turns an unquoted 2024-01-01T00:00:00Z into a datetime; keep the RFC 3339 text.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00Z"
    return value


Timestamp = Annotated[str, BeforeValidator(_timestamp)]
"""An RFC 3339 timestamp, kept as text (server-managed; fleetlog never parses it here)."""


# --------------------------------------------------------------------------------------------
# Quantities and int-or-string values
# --------------------------------------------------------------------------------------------


def _quantity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise field_error(
            invalid(value, "must be a quantity like 100m, 0.5, 128Mi, 1G"), kind=QUANTITY_ERROR
        )
    if isinstance(value, str):
        value = value.strip()  # Quantity.UnmarshalJSON trims whitespace before parsing
    try:
        return canonical_quantity(value)
    except InvalidQuantity as err:
        raise field_error(err.message, kind=QUANTITY_ERROR) from None


QuantityString = Annotated[str, PlainValidator(_quantity)]
"""A quantity, stored as its canonical string (``"0.5"`` is kept as ``"500m"``)."""


def _reject_bool(value: object) -> None:
    if isinstance(value, bool):
        raise field_error(invalid(value, "must be an integer or a string"))


def _port_number(value: object) -> int:
    _reject_bool(value)
    if not isinstance(value, int):
        raise field_error(invalid(value, "must be an integer"))
    if not 1 <= value <= 65535:
        raise field_error(invalid(value, "must be between 1 and 65535, inclusive"))
    return value


PortNumber = Annotated[int, PlainValidator(_port_number)]


def _port_number_or_name(value: object) -> int | str:
    _reject_bool(value)
    if isinstance(value, int):
        return _port_number(value)
    if isinstance(value, str):
        errs = port_name_errors(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)))
        return value
    raise field_error(invalid(value, "must be a port number or a port name"))


PortNumberOrName = Annotated[int | str, PlainValidator(_port_number_or_name)]
"""An IntOrString port: a number 1-65535 or an IANA service name such as ``http``."""

_PERCENT_RE: Final = re.compile(r"[0-9]+%")


def _int_or_percent(value: object) -> int | str:
    _reject_bool(value)
    if isinstance(value, int):
        if value < 0:
            raise field_error(invalid(value, "must be greater than or equal to 0"))
        return value
    if isinstance(value, str):
        if not _PERCENT_RE.fullmatch(value):
            raise field_error(
                invalid(
                    value,
                    "a valid percent string must be a numeric string followed by an ending '%' "
                    "(e.g. '1%', or '93%')",
                )
            )
        return value
    raise field_error(invalid(value, "must be an integer or a percentage such as '25%'"))


IntOrPercent = Annotated[int | str, PlainValidator(_int_or_percent)]
"""An IntOrString count: a non-negative integer or a percentage such as ``"25%"``."""


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------


class OwnerReference(K8sModel):
    """The object that owns this one (a ReplicaSet owns its pods)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


def _check_namespace(value: str | None) -> str | None:
    # "" means "not given" (defaulted for namespaced kinds, allowed for cluster-scoped ones).
    if value:
        errs = dns1123_label_errors(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)))
    return value


class ObjectMeta(K8sModel):
    """``metadata``: identity, labels and ownership, plus the server-managed fields.

    ``uid``, ``resourceVersion``, ``creationTimestamp`` and friends are accepted so that YAML
    exported from a cluster loads; fleetlog's gateway owns their values.
    """

    name: str | None = None
    generate_name: str | None = None
    namespace: Annotated[str | None, AfterValidator(_check_namespace)] = None
    labels: Labels | None = None
    annotations: Annotations | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[QualifiedName] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    managed_fields: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_controller(self) -> Self:
        refs = self.owner_references or []
        controllers = [i for i, ref in enumerate(refs) if ref.controller]
        if len(controllers) > 1:
            raise field_error(
                "Invalid value: only one reference can have controller set to true",
                "ownerReferences",
                controllers[1],
                "controller",
            )
        return self


# --------------------------------------------------------------------------------------------
# Label selectors (meta/v1) and conditions, shared by several kinds
# --------------------------------------------------------------------------------------------


class LabelSelectorRequirement(K8sModel):
    """One ``matchExpressions`` entry of a label selector."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = None

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise field_error(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'", "values"
            )
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise field_error(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "values",
            )
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in (self.values or ())
        if self.operator == "NotIn":
            return not present or labels[self.key] not in (self.values or ())
        if self.operator == "Exists":
            return present
        return not present


class LabelSelector(K8sModel):
    """A label query: ``matchLabels`` and ``matchExpressions`` are ANDed."""

    match_labels: Labels | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def is_empty(self) -> bool:
        """An empty selector matches everything (and is not allowed where one is required)."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or ())


class Condition(K8sModel):
    """A status condition (Ready, Available, MemoryPressure, ...), as the server reports it."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: Timestamp | None = None
    last_probe_time: Timestamp | None = None
    last_heartbeat_time: Timestamp | None = None
    last_update_time: Timestamp | None = None
    observed_generation: int | None = None


# --------------------------------------------------------------------------------------------
# The common shape of a top-level resource
# --------------------------------------------------------------------------------------------


class ResourceBase(K8sModel):
    """``apiVersion``, ``kind`` and ``metadata``, with the name and scope rules of the kind.

    Subclasses pin ``api_version``/``kind`` with ``Literal`` and set ``NAME_RULE`` and
    ``NAMESPACED``. Namespaced kinds get namespace ``"default"`` when none is given; a namespace
    on a cluster-scoped kind is an error.
    """

    NAME_RULE: ClassVar[NameRule] = staticmethod(dns1123_subdomain_errors)
    NAMESPACED: ClassVar[bool] = True

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="after")
    def _check_identity(self) -> Self:
        meta = self.metadata
        rule = type(self).NAME_RULE
        if not meta.name and not meta.generate_name:
            raise field_error(
                "Required value: name or generateName is required", "metadata", "name"
            )
        if meta.name:
            errs = rule(meta.name)
            if errs:
                raise field_error(invalid(meta.name, "; ".join(errs)), "metadata", "name")
        if meta.generate_name:
            errs = generate_name_errors(rule, meta.generate_name)
            if errs:
                raise field_error(
                    invalid(meta.generate_name, "; ".join(errs)), "metadata", "generateName"
                )
        if type(self).NAMESPACED:
            if not meta.namespace:
                self.metadata = meta.model_copy(update={"namespace": "default"})
        elif meta.namespace:
            raise field_error(
                f"Forbidden: not allowed on this type: {self.kind} is cluster-scoped",
                "metadata",
                "namespace",
            )
        return self

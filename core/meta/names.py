"""The name and label rules of ``k8s.io/apimachinery/pkg/util/validation``.

Why this exists: object names, namespaces, label keys and values, port names and config keys
are checked by the same rules wherever they appear (metadata, selectors, taints, node-selector
requirements), with the API server's own messages; each rule returns the list of problems, and
the annotated types (``DNSLabel``, ``QualifiedName``, ``LabelValue``, ``Labels`` …) apply them
inside the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
)

from core.meta.model import field_error, invalid

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

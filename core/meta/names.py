"""The name and label rules of ``k8s.io/apimachinery/pkg/util/validation`` and
``…/api/validate/content``.

Why this exists: object names, namespaces, label keys and values, port names and config keys
are checked by the same rules wherever they appear (metadata, selectors, taints and tolerations,
node-selector requirements, topology keys), with the API server's own messages; each rule
returns the list of problems (one message each, as Kubernetes reports them), and the annotated
types (``DNSLabel``, ``QualifiedName``, ``LabelValue``, ``Labels`` …) apply them inside the
models. The messages are Kubernetes' to the character, including ``RegexError``'s way of listing
examples (``'my-name',  or '123-abc'``, with its double space), because people search for them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
)

from core.meta.model import Problem, Problems, field_errors, invalid

# --------------------------------------------------------------------------------------------
# Name rules (apimachinery util/validation, api/validate/content), each returning the list of
# problems
# --------------------------------------------------------------------------------------------

_DNS1123_LABEL: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN: Final = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN)
_DNS1035_LABEL: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_RE: Final = re.compile(_DNS1035_LABEL)
_LABEL_KEY: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE: Final = re.compile(_LABEL_KEY)
_LABEL_VALUE: Final = f"({_LABEL_KEY})?"
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE)
_IANA_SVC_NAME_RE: Final = re.compile("[-a-z0-9]+")
_HAS_LETTER_RE: Final = re.compile("[a-z]")
_CONFIG_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]+")

LABEL_MAX_LENGTH: Final = 63
"""Of a label value and of the name part of a label key."""


def regex_error(message: str, regex: str, *examples: str) -> str:
    """``RegexError``: the rule, its examples and the regular expression, composed as Kubernetes
    composes them (each example followed by ", ", examples joined by " or ")."""
    if not examples:
        return f"{message} (regex used for validation is '{regex}')"
    listed = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {listed}regex used for validation is '{regex}')"


def max_len_error(length: int, unit: str = "characters") -> str:
    """``MaxLenError``: util/validation counts characters, api/validate/content bytes."""
    return f"must be no more than {length} {unit}"


EMPTY_ERROR: Final = "must be non-empty"

_DNS1123_LABEL_MSG: Final = regex_error(
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character",
    _DNS1123_LABEL,
    "my-name",
    "123-abc",
)
_DNS1123_SUBDOMAIN_MSG: Final = regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character",
    _DNS1123_SUBDOMAIN,
    "example.com",
)
_DNS1035_LABEL_MSG: Final = regex_error(
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character",
    _DNS1035_LABEL,
    "my-name",
    "abc-123",
)
_LABEL_KEY_RULE: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_KEY_MSG: Final = regex_error(_LABEL_KEY_RULE, _LABEL_KEY, "MyName", "my.name", "123-abc")
_LABEL_VALUE_MSG: Final = regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character",
    _LABEL_VALUE,
    "MyValue",
    "my_value",
    "12345",
)
_DECIMAL_INTEGER_MSG: Final = "must be a valid decimal integer in canonical form"

NameRule = Callable[[str], list[str]]


def _length(value: str) -> int:
    """Go's ``len`` of a string: bytes."""
    return len(value) if value.isascii() else len(value.encode())


def dns1123_label_errors(value: str) -> list[str]:
    """Problems with ``value`` as a DNS-1123 label (namespace, container and port-less names)."""
    errs: list[str] = []
    if _length(value) > 63:
        errs.append(max_len_error(63))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")  # a subdomain: only its dots are wrong
        else:
            errs.append(_DNS1123_LABEL_MSG)
    return errs


def dns1123_subdomain_errors(value: str, *, unit: str = "characters") -> list[str]:
    """Problems with ``value`` as a DNS-1123 subdomain (pod, node and deployment names)."""
    errs: list[str] = []
    if _length(value) > 253:
        errs.append(max_len_error(253, unit))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_DNS1123_SUBDOMAIN_MSG)
    return errs


def dns1035_label_errors(value: str) -> list[str]:
    """Problems with ``value`` as a DNS-1035 label (service names: must start with a letter)."""
    errs: list[str] = []
    if _length(value) > 63:
        errs.append(max_len_error(63))
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(_DNS1035_LABEL_MSG)
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """``content.IsLabelKey`` (``IsQualifiedName``): problems with ``value`` as
    ``[prefix/]name`` (label keys, taint and toleration keys, topology keys, resource names)."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + EMPTY_ERROR)
        else:
            errs += [f"prefix part {e}" for e in dns1123_subdomain_errors(prefix, unit="bytes")]
    else:
        return [
            "a valid label key "
            + _LABEL_KEY_MSG
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + EMPTY_ERROR)
    elif _length(name) > LABEL_MAX_LENGTH:
        errs.append("name part " + max_len_error(LABEL_MAX_LENGTH, "bytes"))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append("name part " + _LABEL_KEY_MSG)
    return errs


label_key_errors = qualified_name_errors
"""Label keys are qualified names (Kubernetes now calls the rule ``IsLabelKey``)."""


def label_value_errors(value: str) -> list[str]:
    """``content.IsLabelValue``: problems with ``value`` as a label value (may be empty)."""
    errs: list[str] = []
    if _length(value) > LABEL_MAX_LENGTH:
        errs.append(max_len_error(LABEL_MAX_LENGTH, "bytes"))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_LABEL_VALUE_MSG)
    return errs


def decimal_integer_errors(value: str) -> list[str]:
    """``content.IsDecimalInteger``: "0" or a non-zero integer written without leading zeros or
    a plus sign (``"-456"`` yes, ``"0700"``, ``"+5"`` and ``"-0"`` no)."""
    if not value:
        return [EMPTY_ERROR]
    digits = value[1:] if value.startswith("-") else value
    if value == "0":
        return []
    if not digits or not digits.isascii() or not digits.isdigit() or digits[0] == "0":
        return [_DECIMAL_INTEGER_MSG]
    return []


@functools.lru_cache(maxsize=8192)
def _remembered(rule: NameRule, value: str) -> tuple[str, ...]:
    return tuple(rule(value))


def _messages(rule: NameRule, value: str) -> tuple[str, ...]:
    """``rule(value)``, remembered: the same few label keys, values and names come back in
    every manifest, and validating a pod is on the command path. Only short values are kept
    (none longer than the longest valid name), so hostile input cannot fill memory."""
    if len(value) > 253:
        return tuple(rule(value))
    return _remembered(rule, value)


def rule_problems(rule: NameRule, value: str, *subpath: str | int) -> list[Problem]:
    """One problem per message of ``rule`` for ``value`` at ``subpath``, as Kubernetes reports
    ``field.Invalid(path, value, msg)`` once for each message."""
    messages = _messages(rule, value)
    if not messages:
        return []
    return [(subpath, invalid(value, message)) for message in messages]


def joined_rule_problems(rule: NameRule, value: str, *subpath: str | int) -> list[Problem]:
    """The messages of ``rule`` as one problem, joined by ";" (how Kubernetes reports a taint's
    or a toleration's value)."""
    messages = _messages(rule, value)
    return [(subpath, invalid(value, ";".join(messages)))] if messages else []


def port_name_errors(value: str) -> list[str]:
    """``IsValidPortName``: problems with ``value`` as an IANA service name (container port
    names, named ports)."""
    errs: list[str] = []
    if _length(value) > 15:
        errs.append(max_len_error(15))
    if not _IANA_SVC_NAME_RE.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _HAS_LETTER_RE.search(value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def config_key_errors(value: str) -> list[str]:
    """``IsConfigMapKey``: problems with ``value`` as a ConfigMap/Secret key."""
    errs: list[str] = []
    if _length(value) > 253:
        errs.append(max_len_error(253))
    if not _CONFIG_KEY_RE.fullmatch(value):
        errs.append(
            regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                _CONFIG_KEY_RE.pattern,
                "key.name",
                "KEY_NAME",
                "key-name",
            )
        )
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


GENERATED_SUFFIX_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
"""kube's alphabet for a ``generateName`` suffix (``utilrand``: no vowels, no look-alikes)."""
GENERATED_SUFFIX_LENGTH: Final = 5
MAX_GENERATED_PREFIX: Final = 63 - GENERATED_SUFFIX_LENGTH
"""kube's ``maxGeneratedNameLength``: a longer prefix is cut, so the name fits 63."""


def generated_name(prefix: str, entropy: bytes) -> str:
    """The name kube's ``SimpleNameGenerator`` makes of ``prefix``: cut to 58 characters, then
    five of the alphabet, chosen by ``entropy`` (at least 8 bytes: random for the HTTP door, a
    digest of the command's idempotency key for the NATS door, so a retry makes the same one)."""
    if len(entropy) < 8:
        raise ValueError("a generated name needs at least 8 bytes of entropy")
    number = int.from_bytes(entropy[:8], "big")
    suffix = []
    for _ in range(GENERATED_SUFFIX_LENGTH):
        number, index = divmod(number, len(GENERATED_SUFFIX_ALPHABET))
        suffix.append(GENERATED_SUFFIX_ALPHABET[index])
    return prefix[:MAX_GENERATED_PREFIX] + "".join(suffix)


def generate_name_errors(rule: NameRule, value: str) -> list[str]:
    """``generateName`` is a prefix: a trailing '-' is allowed (Kubernetes masks it)."""
    masked = value[:-1] + "a" if value.endswith("-") else value
    return rule(masked)


def _rule_validator(rule: NameRule) -> Callable[[str], str]:
    def check(value: str) -> str:
        problems = rule_problems(rule, value)
        if problems:
            raise field_errors(problems)
        return value

    return check


def _joined_rule_validator(rule: NameRule) -> Callable[[str], str]:
    def check(value: str) -> str:
        problems = joined_rule_problems(rule, value)
        if problems:
            raise field_errors(problems)
        return value

    return check


DNSLabel = Annotated[str, AfterValidator(_rule_validator(dns1123_label_errors))]
DNSSubdomain = Annotated[str, AfterValidator(_rule_validator(dns1123_subdomain_errors))]
QualifiedName = Annotated[str, AfterValidator(_rule_validator(qualified_name_errors))]
LabelValue = Annotated[str, AfterValidator(_rule_validator(label_value_errors))]
JoinedLabelValue = Annotated[str, AfterValidator(_joined_rule_validator(label_value_errors))]
"""A label value whose problems Kubernetes reports as one message (a taint's value)."""
PortName = Annotated[str, AfterValidator(_rule_validator(port_name_errors))]
ConfigKey = Annotated[str, AfterValidator(_rule_validator(config_key_errors))]


def label_problems(labels: dict[str, str]) -> list[Problem]:
    """``ValidateLabels``: every key a qualified name, every value a label value. Each problem
    is reported under its key (``metadata.labels[app.kubernetes.io/name]``; Kubernetes names
    only the map, the value in the message tells which)."""
    problems: list[Problem] = []
    for key, value in labels.items():
        problems += rule_problems(qualified_name_errors, key, key)
        problems += rule_problems(label_value_errors, value, key)
    return problems


def label_key_problems(keys: Sequence[str], *subpath: str | int) -> list[Problem]:
    """``ValidateLabelName`` of each key of a list (``matchLabelKeys[i]``)."""
    problems: list[Problem] = []
    for i, key in enumerate(keys):
        problems += rule_problems(qualified_name_errors, key, *subpath, i)
    return problems


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    problems = label_problems(labels)
    if problems:
        raise field_errors(problems)
    return labels


_MAX_ANNOTATIONS_BYTES: Final = 256 * 1024


def _check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    found = Problems()
    total = 0
    for key, value in annotations.items():
        for message in qualified_name_errors(key.lower()):
            found.add(invalid(key, message), key)
        total += len(key.encode()) + len(value.encode())
    if total > _MAX_ANNOTATIONS_BYTES:
        found.add(
            f"Too long: annotations must have at most {_MAX_ANNOTATIONS_BYTES} bytes, got {total}"
        )
    found.check()
    return annotations


Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]
"""A label map: keys are qualified names, values label values (Kubernetes ValidateLabels)."""

Annotations = Annotated[dict[str, str], AfterValidator(_check_annotations)]

"""Label and field selectors with the apimachinery string syntax."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._util import JSON
from .errors import bad_request

_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "=":
            return present and value == self.values[0]
        if self.operator == "!=":
            return not present or value != self.values[0]
        if self.operator == "in":
            return present and value in self.values
        if self.operator == "notin":
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == "gt" else number < bound


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _check_key(key: str, raw: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise bad_request(
            f"unable to parse requirement: <nil>: Invalid value: {key!r}: name part must "
            f"consist of alphanumeric characters, '-', '_' or '.' (selector {raw!r})"
        )
    return key


def _check_value(value: str, raw: str) -> str:
    if not _VALUE.match(value) or len(value) > 63:
        raise bad_request(
            f"unable to parse requirement: values[0]: Invalid value: {value!r}: a valid label "
            f"must be an empty string or consist of alphanumeric characters, '-', '_' or '.' "
            f"(selector {raw!r})"
        )
    return value


def parse_label_selector(raw: str | None) -> list[Requirement]:
    if raw is None or not raw.strip():
        return []
    requirements: list[Requirement] = []
    for part in _split_top_level(raw):
        text = part.strip()
        if not text:
            raise bad_request(f"found '', expected: identifier (selector {raw!r})")
        set_match = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", text)
        if set_match:
            key, op, inner = set_match.groups()
            values = tuple(_check_value(v.strip(), raw) for v in inner.split(",") if v.strip())
            requirements.append(Requirement(_check_key(key, raw), op, values))
            continue
        op_match = re.match(r"^([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(.*)$", text)
        if op_match:
            key, op, value = op_match.groups()
            _check_key(key, raw)
            if op in ("<", ">"):
                try:
                    int(value.strip())
                except ValueError as exc:
                    raise bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                        f"must be an integer (selector {raw!r})"
                    ) from exc
                requirements.append(Requirement(key, "gt" if op == ">" else "lt", (value.strip(),)))
            else:
                operator = "!=" if op == "!=" else "="
                requirements.append(Requirement(key, operator, (_check_value(value.strip(), raw),)))
            continue
        if text.startswith("!"):
            requirements.append(Requirement(_check_key(text[1:].strip(), raw), "!"))
            continue
        requirements.append(Requirement(_check_key(text, raw), "exists"))
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    actual = labels or {}
    return all(requirement.matches(actual) for requirement in requirements)


def _lookup(obj: JSON, path: str) -> Any:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Field labels each resource supports (the registry's GetAttrs / field label conversion).
SUPPORTED_FIELDS: dict[str, dict[str, Callable[[JSON], str]]] = {
    "jobs": {
        "metadata.name": lambda o: _field_text(_lookup(o, "metadata.name")),
        "metadata.namespace": lambda o: _field_text(_lookup(o, "metadata.namespace")),
        "status.successful": lambda o: _field_text(_lookup(o, "status.succeeded") or 0),
    },
    "pods": {
        "metadata.name": lambda o: _field_text(_lookup(o, "metadata.name")),
        "metadata.namespace": lambda o: _field_text(_lookup(o, "metadata.namespace")),
        "spec.nodeName": lambda o: _field_text(_lookup(o, "spec.nodeName")),
        "spec.restartPolicy": lambda o: _field_text(_lookup(o, "spec.restartPolicy")),
        "spec.schedulerName": lambda o: _field_text(_lookup(o, "spec.schedulerName")),
        "spec.serviceAccountName": lambda o: _field_text(_lookup(o, "spec.serviceAccountName")),
        "spec.hostNetwork": lambda o: _field_text(bool(_lookup(o, "spec.hostNetwork"))),
        "status.phase": lambda o: _field_text(_lookup(o, "status.phase")),
        "status.podIP": lambda o: _field_text(_lookup(o, "status.podIP")),
        "status.nominatedNodeName": lambda o: _field_text(_lookup(o, "status.nominatedNodeName")),
    },
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str


def parse_field_selector(raw: str | None, resource: str) -> list[FieldRequirement]:
    if raw is None or not raw.strip():
        return []
    supported = SUPPORTED_FIELDS.get(resource, {})
    requirements: list[FieldRequirement] = []
    for part in raw.split(","):
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid selector: '{raw}'; can't understand '{part}'")
        name, op, value = match.groups()
        if name not in supported:
            raise bad_request(f"field label not supported: {name}")
        requirements.append(FieldRequirement(name, op != "!=", value))
    return requirements


def fields_match(requirements: list[FieldRequirement], obj: JSON, resource: str) -> bool:
    supported = SUPPORTED_FIELDS.get(resource, {})
    for requirement in requirements:
        actual = supported[requirement.field](obj)
        if (actual == requirement.value) != requirement.equal:
            return False
    return True

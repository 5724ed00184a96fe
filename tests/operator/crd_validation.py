"""Validate objects against the CRD the way the API server does, without an API server.

- the ``openAPIV3Schema`` with jsonschema (OpenAPI 3.0 = draft 4 + ``nullable``);
- strict field validation (kubectl's default ``--validate=strict``): unknown fields
  are errors, emulated by closing every object that lists its properties;
- defaulting, then the ``x-kubernetes-validations`` CEL rules, compiled and evaluated
  with Google's CEL (cel-expr-python, the C++ runtime: the same grammar as cel-go,
  which the API server uses). As in the API server, each rule runs at the node where it
  sits (``self`` is the value there, ``oldSelf`` the old object's value at the same
  place), with ``self`` and ``oldSelf`` declared for every rule; a rule that reads
  ``oldSelf`` is a transition rule and runs only on updates that have an old value.

Not emulated: typed ``self`` (declared ``dyn`` here, so a misspelt field is found at
evaluation, not at compilation), homogeneous list literals, the Kubernetes CEL
libraries (quantity, url, ...), cost limits, validation ratcheting.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
from cel_expr_python import cel

_ENV = cel.NewEnv(variables={"self": cel.Type.DYN, "oldSelf": cel.Type.DYN})
_ENV_WITHOUT_OLD_SELF = cel.NewEnv(variables={"self": cel.Type.DYN})
_ABSENT = object()  # no old value: a create, or a node the old object lacks


@dataclass(frozen=True)
class CompiledRule:
    expression: Any  # cel.Expression
    transition: bool  # reads oldSelf


@functools.cache
def compile_rule(rule: str) -> CompiledRule:
    """Compile ``rule`` as the API server does when the CRD is created; raise where it refuses."""
    expression = _ENV.compile(rule)  # RuntimeError: syntax, escapes, undeclared names, types
    if expression.return_type() not in (cel.Type.BOOL, cel.Type.DYN):
        raise ValueError(f"rule must evaluate to a bool, not {expression.return_type().name()}: {rule}")
    try:
        _ENV_WITHOUT_OLD_SELF.compile(rule)
    except RuntimeError:
        return CompiledRule(expression, transition=True)
    return CompiledRule(expression, transition=False)


def schema_nodes(node: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every node of a structural schema with its path (``.a.b``, ``[]`` items, ``{}`` values)."""
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def schema_rules(schema: dict) -> Iterator[tuple[str, dict, dict]]:
    """(path, schema node, rule) for every ``x-kubernetes-validations`` rule."""
    for path, node in schema_nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, node, rule


def _openapi_to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        out.pop("nullable")
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def _as_declared(schema: dict, value: Any) -> Any:
    # The API server hands CEL a `number` as a double even when the YAML says 20.
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        values = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: _as_declared(props.get(k, values), v) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_as_declared(schema["items"], v) for v in value]
    return value


def _evaluate(rule: dict, schema: dict, value: Any, old: Any, path: str) -> str | None:
    compiled = compile_rule(rule["rule"])
    if compiled.transition and old is _ABSENT:
        return None
    data = {"self": _as_declared(schema, value)}
    if old is not _ABSENT:
        data["oldSelf"] = _as_declared(schema, old)
    result = compiled.expression.eval(data=data)
    if result.type() == cel.Type.ERROR:
        return f"{path or '.'}: rule {rule['rule']!r} could not be evaluated: {result.value()}"
    if result.value() is not True:
        return f"{path or '.'}: {rule.get('message') or 'failed rule: ' + rule['rule']}"
    return None


def _children(schema: dict, value: Any, old: Any, path: str) -> Iterator[tuple[dict, Any, Any, str]]:
    """(schema, value, old value, path) of the child nodes, old values correlated as the API server does."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        values = schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        for key, sub in value.items():
            sub_schema = props.get(key, values if isinstance(values, dict) else None)
            if sub_schema is not None:
                yield sub_schema, sub, old_map.get(key, _ABSENT), f"{path}.{key}"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        # Only items of a map list have an old counterpart (matched by their keys).
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        old_items = {}
        if keys and isinstance(old, list):
            old_items = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, sub in enumerate(value):
            old_sub = old_items.get(tuple(sub.get(k) for k in keys), _ABSENT) if keys else _ABSENT
            yield schema["items"], sub, old_sub, f"{path}[{i}]"


def _cel_errors(schema: dict, value: Any, old: Any, path: str) -> list[str]:
    if value is None:
        return []
    errors = [e for rule in schema.get("x-kubernetes-validations", [])
              if (e := _evaluate(rule, schema, value, old, path))]
    for sub_schema, sub, old_sub, sub_path in _children(schema, value, old, path):
        errors += _cel_errors(sub_schema, sub, old_sub, sub_path)
    return errors


def apply_defaults(schema: dict, value: Any) -> Any:
    # The API server defaults before it runs CEL rules.
    if not isinstance(value, dict):
        return value
    for name, sub in (schema.get("properties") or {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            value[name] = apply_defaults(sub, value[name])
    return value


def validation_errors(crd: dict, obj: dict, old: dict | None = None) -> list[str]:
    """The API server's complaints about creating ``obj``, or updating ``old`` to ``obj``."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checker = jsonschema.Draft4Validator(_openapi_to_jsonschema(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in checker.iter_errors(obj)]
    if errors:
        return errors
    new = apply_defaults(schema, copy.deepcopy(obj))
    previous = _ABSENT if old is None else apply_defaults(schema, copy.deepcopy(old))
    return _cel_errors(schema, new, previous, "")

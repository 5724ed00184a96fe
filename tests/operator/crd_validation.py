"""Validate objects against the CRD the way the API server does, without an API server.

- the ``openAPIV3Schema`` with jsonschema (OpenAPI 3.0 = draft 4 + ``nullable``);
- strict field validation (kubectl's default ``--validate=strict``): unknown fields
  are errors, emulated by closing every object that lists its properties;
- ``x-kubernetes-validations`` CEL rules, evaluated with cel-python.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema


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


def _cel_errors(schema: dict, value: Any, path: str) -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(_as_declared(schema, value))}):
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value and value[name] is not None:
                errors += _cel_errors(sub, value[name], f"{path}.{name}")
    return errors


def _as_declared(schema: dict, value: Any) -> Any:
    # The API server hands CEL a `number` as a double even when the YAML says 20.
    if schema.get("type") == "number" and isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _as_declared(props.get(k, {}), v) for k, v in value.items()}
    return value


def _apply_defaults(schema: dict, value: Any) -> Any:
    # The API server defaults before it runs CEL rules.
    if not isinstance(value, dict):
        return value
    for name, sub in (schema.get("properties") or {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            value[name] = _apply_defaults(sub, value[name])
    return value


def validation_errors(crd: dict, obj: dict) -> list[str]:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checker = jsonschema.Draft4Validator(_openapi_to_jsonschema(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in checker.iter_errors(obj)]
    if errors:
        return errors
    return _cel_errors(schema, _apply_defaults(schema, copy.deepcopy(obj)), "")

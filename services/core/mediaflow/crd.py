"""The MediaJob CustomResourceDefinition, generated from the pydantic models.

``python -m mediaflow.crd > charts/mediaflow/crds/mediajobs.mediaflow.dev.yaml``
regenerates the committed CRD; a test fails when the two differ.

Pydantic's JSON schema becomes a *structural* Kubernetes schema: ``$ref``s are
inlined, ``anyOf: [X, null]`` becomes ``X`` + ``nullable: true``, titles and
``additionalProperties`` go (a structural schema cannot say
``additionalProperties: false``). Unknown fields are rejected by the API
server's strict field validation (kubectl's default, ``--validate=strict``) and,
for clients that skip it, pruned before the operator sees the object; the
operator then validates the spec with :class:`MediaJobSpec` again.

The spec is immutable (:data:`SPEC_IMMUTABLE`): a running job's stages, artifacts and
index points were made from it, so a change would leave them describing another job.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from mediaflow.spec import MediaJobSpec
from mediaflow.status import MediaJobStatus

GROUP = "mediaflow.dev"
VERSION = "v1alpha1"
KIND = "MediaJob"
PLURAL = "mediajobs"
SINGULAR = "mediajob"
SHORT_NAMES = ["mj"]
CRD_NAME = f"{PLURAL}.{GROUP}"
API_VERSION = f"{GROUP}/{VERSION}"

# Enforced by a ValidatingAdmissionPolicy the chart installs
# (templates/mediajob-admission-policy.yaml; a test holds it to these), not by a CRD
# transition rule (``self == oldSelf``): validators that compile every CRD rule with ``self``
# alone refuse ``oldSelf``, and a policy also names the operation it guards. It matches
# UPDATEs of ``mediajobs`` only: writes to the status subresource (``mediajobs/status``)
# and to metadata (finalizers, labels) leave spec equal and pass.
SPEC_IMMUTABLE = {
    "expression": "object.spec == oldObject.spec",
    "message": "spec is immutable: delete the MediaJob and create a new one",
}

# -- JSON schema -> structural schema -------------------------------------------------
_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_structural(options[0], defs), **_structural(rest, defs)}
        if len(options) < len(node["anyOf"]):
            merged["nullable"] = True
        if merged.get("default", ...) is None:
            del merged["default"]  # null defaults mean "unset" and must not be written
        return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "exclusiveMinimum":  # JSON Schema 2020 number -> OpenAPI 3.0 boolean
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default":
            out[key] = _without_nulls(value)
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "additionalProperties":
            continue
        else:
            out[key] = _structural(value, defs)
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs)
    return out


def _without_nulls(value: Any) -> Any:
    # Unset optional fields stay absent in stored objects rather than null.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress"},
        {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
        {"name": "Language", "type": "string", "jsonPath": ".status.outputs.language"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> dict[str, Any]:
    spec_schema = structural_schema(MediaJobSpec)
    status_schema = structural_schema(MediaJobStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"mediaflow.dev/generated-by": "python -m mediaflow.crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["mediaflow"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A media file to turn into a transcript, a search index and a summary.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    return yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(crd_yaml())

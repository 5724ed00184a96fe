"""NetworkPolicies per component and least-privilege RBAC."""

from __future__ import annotations

from tests.chart.conftest import find, render


def policies(variant: str) -> dict[str, dict]:
    return {p["metadata"]["name"].removeprefix("mediaflow-"): p["spec"] for p in find(render(variant), "NetworkPolicy")}


def test_each_component_has_a_policy_for_both_directions():
    specs = policies("kind-cpu")
    assert set(specs) == {"gateway", "operator", "ray", "qdrant", "worker"}
    assert all(set(spec["policyTypes"]) == {"Ingress", "Egress"} for spec in specs.values())
    assert not find(render("minimal"), "NetworkPolicy")  # off in the minimal variant


def sources(rule: dict) -> set[str]:
    return {peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component", "ns")
            for peer in rule.get("from", [])}


def test_qdrant_only_from_gateway_and_operator_and_calls_nothing():
    spec = policies("kind-cpu")["qdrant"]
    assert [sources(rule) for rule in spec["ingress"]] == [{"gateway", "operator"}]
    assert spec["egress"] == []


def test_ray_serve_only_from_gateway_and_operator():
    spec = policies("kind-cpu")["ray"]
    serve_rules = [r for r in spec["ingress"] if {"port": 8000, "protocol": "TCP"} in r.get("ports", [])
                   and "podSelector" in r["from"][0]]
    assert [sources(r) for r in serve_rules] == [{"gateway", "operator"}]


def test_gateway_ingress_only_from_the_ingress_controller():
    (rule,) = policies("kind-cpu")["gateway"]["ingress"]
    assert list(rule["from"][0]) == ["namespaceSelector"]


def test_workers_take_no_inbound_traffic():
    assert policies("kind-cpu")["worker"]["ingress"] == []


def rules_of(kind: str, name: str, variant: str = "kind-cpu") -> list[dict]:
    (role,) = find(render(variant), kind, name)
    return role["rules"]


def test_operator_role_is_least_privilege():
    rules = rules_of("ClusterRole", "mediaflow-operator")
    granted = {(group, resource, verb) for r in rules for group in r["apiGroups"]
               for resource in r["resources"] for verb in r["verbs"]}
    assert not any("*" in item for item in granted)
    assert not any(resource in {"secrets", "pods/exec", "configmaps"} for _, resource, _ in granted)
    assert ("batch", "jobs", "create") in granted and ("batch", "jobs", "delete") not in granted
    assert ("mediaflow.dev", "mediajobs/status", "patch") in granted
    assert ("mediaflow.dev", "mediajobs", "create") not in granted  # users create them, not the operator
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in granted
    standalone = rules_of("ClusterRole", "mediaflow-operator", "minimal")
    assert not any("kopf.dev" in r["apiGroups"] for r in standalone)  # no peering, no peering rights


def test_gateway_role_is_namespaced_and_only_mediajobs():
    (rule,) = rules_of("Role", "mediaflow-gateway")
    assert rule["resources"] == ["mediajobs"] and "update" not in rule["verbs"]
    assert not find(render("kind-cpu"), "ClusterRole", "mediaflow-gateway")

"""NetworkPolicies per component, checked by the traffic they let through, and least-privilege RBAC."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.chart.conftest import CHART, find, helm, render
from tests.chart.test_policy import worker_job

NAMESPACE = "mediaflow"  # conftest.render installs release "mediaflow" into namespace "mediaflow"


# -- a small NetworkPolicy evaluator (networking.k8s.io/v1 semantics) ----------------------------

@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or an address outside the cluster's pods (ip)."""
    namespace: str | None = None
    labels: dict | None = None
    ip: str | None = None
    ns_labels: dict = field(default_factory=dict)

    @staticmethod
    def pod(namespace: str, labels: dict) -> Endpoint:
        return Endpoint(namespace, labels, None, {"kubernetes.io/metadata.name": namespace})

    @staticmethod
    def external(ip: str) -> Endpoint:
        return Endpoint(ip=ip)

    def __hash__(self):
        return hash((self.namespace, self.ip, tuple(sorted((self.labels or {}).items()))))


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.labels is None:  # an address outside the pods: only ipBlocks select it
        return False
    ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")
    in_namespace = (other.namespace == policy_namespace if ns_selector is None
                    else selects(ns_selector, other.ns_labels))
    return in_namespace and (pod_selector is None or selects(pod_selector, other.labels))


def port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        assert isinstance(p["port"], int), f"named port {p['port']!r}: the evaluator reads numbers only"
        if p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def allowed(policies: list[dict], pod: Endpoint, direction: str, other: Endpoint, port: int, protocol: str) -> bool:
    """Does ``pod`` (in the release namespace) accept/send this connection, per its policies?"""
    if pod.labels is None or pod.namespace != NAMESPACE:
        return True  # not a pod of ours: our policies do not apply to it
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], pod.labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(peer_matches(peer, other, NAMESPACE) for peer in peers):
                continue
            if port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def can_connect(docs, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    policies = find(docs, "NetworkPolicy")
    return (allowed(policies, src, "Egress", dst, port, protocol)
            and allowed(policies, dst, "Ingress", src, port, protocol))


# -- the pods, with the labels the chart (and the operator) give them ---------------------------

def pods(docs, variant: str | None = None) -> dict[str, Endpoint]:
    def template_labels(kind, name):
        (obj,) = find(docs, kind, name)
        return obj["spec"]["template"]["metadata"]["labels"]

    (service,) = find(docs, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    out = {
        "gateway": Endpoint.pod(NAMESPACE, template_labels("Deployment", "mediaflow-gateway")),
        "operator": Endpoint.pod(NAMESPACE, template_labels("Deployment", "mediaflow-operator")),
        "ray-head": Endpoint.pod(NAMESPACE, cluster["headGroupSpec"]["template"]["metadata"]["labels"]),
        "ray-worker": Endpoint.pod(NAMESPACE, cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"]),
        "worker": Endpoint.pod(NAMESPACE, worker_job(variant)["spec"]["template"]["metadata"]["labels"]),
        # outside the release
        "prometheus": Endpoint.pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "ingress-nginx": Endpoint.pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        "kuberay": Endpoint.pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}),
        "stranger": Endpoint.pod("default", {"app": "curl"}),
        "minio": Endpoint.pod(NAMESPACE, {"app": "minio"}),
        "api-server": Endpoint.external("10.96.0.1"),
        "internet": Endpoint.external("93.184.216.34"),
    }
    if find(docs, "StatefulSet", "mediaflow-qdrant"):
        out["qdrant"] = Endpoint.pod(NAMESPACE, template_labels("StatefulSet", "mediaflow-qdrant"))
    return out


def policies(variant: str) -> dict[str, dict]:
    return {p["metadata"]["name"].removeprefix("mediaflow-"): p["spec"] for p in find(render(variant), "NetworkPolicy")}


def test_each_component_has_a_policy_for_both_directions():
    specs = policies("kind-cpu")
    assert set(specs) == {"gateway", "operator", "ray", "ray-head", "qdrant", "worker"}
    assert all(set(spec["policyTypes"]) == {"Ingress", "Egress"} for name, spec in specs.items() if name != "ray-head")
    assert specs["ray-head"]["policyTypes"] == ["Egress"]  # an addition to "ray" for the head's autoscaler
    assert not find(render("minimal"), "NetworkPolicy")  # off in the minimal variant


def sources(rule: dict) -> set[str]:
    return {peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component", "ns")
            for peer in rule.get("from", [])}


def test_qdrant_only_from_gateway_and_operator_and_calls_nothing():
    spec = policies("kind-cpu")["qdrant"]
    assert [sources(rule) for rule in spec["ingress"]] == [{"gateway", "operator"}]
    assert spec["egress"] == []
    docs = render("kind-cpu")
    p = pods(docs, "kind-cpu")
    assert can_connect(docs, p["gateway"], p["qdrant"], 6333) and can_connect(docs, p["operator"], p["qdrant"], 6334)
    for who in ("ray-worker", "worker", "prometheus", "stranger"):
        assert not can_connect(docs, p[who], p["qdrant"], 6333), who


def test_ray_serve_only_from_gateway_and_operator():
    docs = render("kind-cpu")
    p = pods(docs, "kind-cpu")
    for who in ("gateway", "operator"):
        assert can_connect(docs, p[who], p["ray-worker"], 8000) and can_connect(docs, p[who], p["ray-head"], 8000)
    for who in ("worker", "stranger", "ingress-nginx"):
        assert not can_connect(docs, p[who], p["ray-worker"], 8000), who


def test_gateway_ingress_from_the_ingress_controller_and_prometheus_only():
    docs = render("kind-cpu")
    p = pods(docs, "kind-cpu")
    assert can_connect(docs, p["ingress-nginx"], p["gateway"], 8000)
    assert not can_connect(docs, p["stranger"], p["gateway"], 8000)
    assert not can_connect(docs, p["ingress-nginx"], p["gateway"], 9090)


def test_workers_take_no_inbound_traffic():
    assert policies("kind-cpu")["worker"]["ingress"] == []
    docs = render("kind-cpu")
    p = pods(docs, "kind-cpu")
    assert not can_connect(docs, p["operator"], p["worker"], 8080)


# -- Prometheus reaches exactly the ports its monitors name --------------------------------------

def container_port(docs, kind: str, name: str, port_name: str) -> int:
    (obj,) = find(docs, kind, name)
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port_name]
    return port


def scrape_targets(docs) -> list[tuple[str, int]]:
    """(component, container port) for every ServiceMonitor endpoint and PodMonitor endpoint."""
    targets = []
    for monitor in find(docs, "ServiceMonitor"):
        component = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        services = [s for s in find(docs, "Service")
                    if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert services, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            for service in services:
                (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
                target = port["targetPort"]
                if isinstance(target, str):
                    target = container_port(docs, "Deployment", f"mediaflow-{component}", target)
                targets.append((component, target))
    for monitor in find(docs, "PodMonitor"):
        (service,) = find(docs, "RayService")
        head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            # KubeRay gives every Ray container a "metrics" port (8080) when it lacks one
            (port,) = [p["containerPort"] for p in head["ports"] if p["name"] == endpoint["port"]] or [8080]
            targets += [("ray-head", port), ("ray-worker", port)]
    return targets


def test_prometheus_reaches_every_port_its_monitors_scrape_and_nothing_else():
    docs = render("gpu")
    p = pods(docs, "gpu")
    targets = scrape_targets(docs)
    assert {c for c, _ in targets} == {"operator", "gateway", "ray-head", "ray-worker"}
    assert ("gateway", 8000) in targets  # the gateway's metrics are on its http port
    for component, port in targets:
        assert can_connect(docs, p["prometheus"], p[component], port), (component, port)
        assert not can_connect(docs, p["stranger"], p[component], port), component
        assert not can_connect(docs, p["prometheus"], p[component], 22), component
    assert not can_connect(docs, p["prometheus"], p["qdrant"], 6333)


def test_prometheus_selector_is_one_setting_for_every_component():
    docs = render("gpu", "networkPolicy.monitoringPodSelector.matchLabels.app=prometheus")
    p = pods(docs, "gpu")
    ours = Endpoint.pod("monitoring", {"app": "prometheus"})
    other = Endpoint.pod("monitoring", {"app": "grafana"})
    for component, port in scrape_targets(docs):
        assert can_connect(docs, ours, p[component], port), component
        assert not can_connect(docs, other, p[component], port), component


# -- the Ray head's autoscaler reaches the API server; nothing else does from Ray ----------------

def test_kuberay_autoscaler_reaches_the_api_server():
    docs = render("kind-cpu", "networkPolicy.apiServerCidr=10.96.0.1/32")
    p = pods(docs, "kind-cpu")
    assert find(docs, "RayService")[0]["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    for port in (443, 6443):
        assert can_connect(docs, p["ray-head"], p["api-server"], port), port
        assert not can_connect(docs, p["ray-worker"], p["api-server"], port), port  # no autoscaler there
    assert not can_connect(docs, p["ray-head"], p["api-server"], 80)
    assert not can_connect(docs, p["ray-head"], p["internet"], 443)
    # the same API server rule as the operator's and the gateway's
    for who in ("operator", "gateway"):
        assert can_connect(docs, p[who], p["api-server"], 443) and not can_connect(docs, p[who], p["internet"], 443)
    custom = render("kind-cpu", "networkPolicy.apiServerCidr=10.96.0.1/32", "networkPolicy.apiServerPorts={8443}")
    assert can_connect(custom, pods(custom, "kind-cpu")["ray-head"], p["api-server"], 8443)
    assert not can_connect(custom, pods(custom, "kind-cpu")["ray-head"], p["api-server"], 443)


# -- S3 egress on the endpoint's own port --------------------------------------------------------

S3_CASES = [
    ("", 443),
    ("https://s3.eu-west-1.amazonaws.com", 443),
    ("http://minio", 80),
    ("http://minio:9000", 9000),
    ("https://minio.example.com:9443/base", 9443),
    ("http://[fd00::10]:9000", 9000),
]


@pytest.mark.parametrize(("endpoint", "port"), S3_CASES)
def test_s3_egress_follows_the_configured_endpoint(endpoint, port):
    sets = ("storage.media.backend=s3", "storage.media.s3.artifactRoot=s3://bucket/mf",
            "networkPolicy.apiServerCidr=10.96.0.1/32", f"storage.media.s3.endpointUrl={endpoint}")
    docs = render(None, *sets)
    (config,) = find(docs, "ConfigMap", "mediaflow-pipeline")
    assert config["data"].get("AWS_ENDPOINT_URL", "") == endpoint
    p = pods(docs)
    s3 = p["minio"] if endpoint.startswith("http://minio") else p["internet"]
    for who in ("worker", "gateway", "operator", "ray-head", "ray-worker"):
        assert can_connect(docs, p[who], s3, port), (who, port)
        for other in {80, 443, 9000, 9443} - {port}:
            if who == "worker" and other in (80, 443):
                continue  # http(s) sources
            assert not can_connect(docs, p[who], s3, other), (who, other)
    assert not can_connect(docs, p["worker"], s3, 8080)


def test_no_s3_port_without_the_s3_backend():
    docs = render("kind-cpu", "networkPolicy.apiServerCidr=10.96.0.1/32",
                  "storage.media.s3.endpointUrl=http://minio:9000")  # set, but the backend is pvc
    p = pods(docs, "kind-cpu")
    for who in ("worker", "gateway", "operator", "ray-head"):
        assert not can_connect(docs, p[who], p["minio"], 9000), who
    assert can_connect(docs, p["worker"], p["internet"], 443)  # http(s) sources still


def test_bad_s3_endpoints_are_refused():
    result = helm("template", "t", str(CHART), "--set", "storage.media.s3.endpointUrl=minio:9000", check=False)
    assert result.returncode != 0 and "/storage/media/s3/endpointUrl" in result.stderr, result.stderr


def test_the_worker_policy_selects_the_operators_worker_jobs(variant):
    docs = render(variant)
    if not find(docs, "NetworkPolicy"):
        pytest.skip("NetworkPolicies off in this variant")
    (worker_policy,) = find(docs, "NetworkPolicy", "mediaflow-worker")
    job = worker_job(variant)
    assert job["metadata"]["namespace"] == NAMESPACE
    assert selects(worker_policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])


# -- RBAC ----------------------------------------------------------------------------------------

MEDIAJOBS = {
    ("mediaflow.dev", "mediajobs"): {"get", "list", "watch", "patch", "delete"},
    ("mediaflow.dev", "mediajobs/status"): {"patch"},
    ("mediaflow.dev", "mediajobs/finalizers"): {"update"},
    ("", "events"): {"create"},
}
PEERING = {("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"}}
CLUSTER_PEERING = {("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"}}
JOBS = {("batch", "jobs"): {"get", "list", "watch", "create", "delete"}}


def grants(docs, service_account: str) -> dict[str, dict[tuple[str, str], set[str]]]:
    """Where ("*" = cluster-wide) -> (apiGroup, resource) -> verbs, for one ServiceAccount."""
    roles = {(r["kind"], r["metadata"].get("namespace", NAMESPACE if r["kind"] == "Role" else "*"),
              r["metadata"]["name"]): r for r in docs if r["kind"] in {"Role", "ClusterRole"}}
    out: dict[str, dict[tuple[str, str], set[str]]] = {}
    for binding in (d for d in docs if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == NAMESPACE
                   for s in binding["subjects"]):
            continue
        where = "*" if binding["kind"] == "ClusterRoleBinding" else binding["metadata"].get("namespace", NAMESPACE)
        ref = binding["roleRef"]
        role_ns = "*" if ref["kind"] == "ClusterRole" else where
        role = roles[(ref["kind"], role_ns, ref["name"])]
        for rule in role["rules"]:
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault(where, {}).setdefault((group, resource), set()).update(rule["verbs"])
    return out


RBAC_CASES = {
    "release namespace only": ((), {NAMESPACE: MEDIAJOBS | PEERING | JOBS}),
    "extra namespaces": (("operator.watchNamespaces={team-a,mediaflow,team-b}",),
                         {NAMESPACE: MEDIAJOBS | PEERING | JOBS, "team-a": MEDIAJOBS | PEERING,
                          "team-b": MEDIAJOBS | PEERING}),
    "every namespace": (("operator.watchNamespaces={*}",),
                        {"*": MEDIAJOBS | CLUSTER_PEERING, NAMESPACE: JOBS}),
    "standalone": (("operator.standalone=true",), {NAMESPACE: MEDIAJOBS | JOBS}),
    "standalone, extra namespaces": (("operator.standalone=true", "operator.watchNamespaces={team-a}"),
                                     {NAMESPACE: MEDIAJOBS | JOBS, "team-a": MEDIAJOBS}),
    "standalone, every namespace": (("operator.standalone=true", "operator.watchNamespaces={*}"),
                                    {"*": MEDIAJOBS, NAMESPACE: JOBS}),
}


@pytest.mark.parametrize("case", sorted(RBAC_CASES))
def test_operator_rbac_is_exactly_what_it_uses(case):
    sets, expected = RBAC_CASES[case]
    docs = render(None, *sets)
    assert grants(docs, "mediaflow-operator") == expected
    cluster_scoped = {d["kind"] for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}}
    assert cluster_scoped == ({"ClusterRole", "ClusterRoleBinding"} if "*" in expected else set())


def test_no_variant_grants_the_operator_cluster_discovery_or_secrets(variant):
    granted = grants(render(variant), "mediaflow-operator")
    resources = {resource for rules in granted.values() for _, resource in rules}
    assert not resources & {"namespaces", "customresourcedefinitions", "secrets", "pods/exec", "configmaps"}
    assert not any(group == "events.k8s.io" for rules in granted.values() for group, _ in rules)
    assert not any("*" in verbs for rules in granted.values() for verbs in rules.values())


def test_gateway_role_is_namespaced_and_only_mediajobs():
    docs = render("kind-cpu")
    assert grants(docs, "mediaflow-gateway") == {NAMESPACE: {("mediaflow.dev", "mediajobs"):
                                                             {"get", "list", "create", "delete"}}}
    assert not find(docs, "ClusterRole", "mediaflow-gateway")


def test_worker_jobs_run_as_a_tokenless_service_account_without_rights(variant):
    docs = render(variant)
    (account,) = find(docs, "ServiceAccount", "mediaflow-worker")
    assert account["automountServiceAccountToken"] is False
    assert worker_job(variant)["spec"]["template"]["spec"]["serviceAccountName"] == "mediaflow-worker"
    assert grants(docs, "mediaflow-worker") == {}

"""gateway.trustedProxies reaches the gateway as the setting uvicorn's proxy handling reads."""

from __future__ import annotations

from mediaflow_gateway.settings import GatewaySettings
from tests.chart.conftest import find, render


def gateway_env(*sets: str) -> dict[str, str]:
    [deployment] = [d for d in find(render(None, *sets), "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_no_proxy_is_trusted_by_default():
    assert "MEDIAFLOW_GATEWAY_FORWARDED_ALLOW_IPS" not in gateway_env()


def test_trusted_proxies_parse_into_the_gateway_setting(monkeypatch):
    env = gateway_env("gateway.trustedProxies={10.0.0.5,10.0.0.6}")
    monkeypatch.setenv("MEDIAFLOW_GATEWAY_FORWARDED_ALLOW_IPS", env["MEDIAFLOW_GATEWAY_FORWARDED_ALLOW_IPS"])
    assert GatewaySettings().forwarded_allow_ips == ["10.0.0.5", "10.0.0.6"]

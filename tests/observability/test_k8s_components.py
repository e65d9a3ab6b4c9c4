"""k8s/components/loki, pyroscope, alertmanager and blackbox: on top of the dev overlay they render
(`kubectl kustomize`), validate strictly (kubernetes-validate, the newest version the deploy
checks use), give the collector's Loki exporter and the pods' PYROSCOPE_SERVER_ADDRESS a
Service to reach, and run the images compose runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import KUSTOMIZE, run, tool
from tests.observability.conftest import OBSERVABILITY, ROOT, load_yaml


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("with-components")
    root = os.path.relpath(ROOT, folder)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{root}/k8s/overlays/dev"],
                "components": [
                    f"{root}/k8s/components/{name}"
                    for name in ("loki", "pyroscope", "alertmanager", "blackbox")
                ],
            }
        )
    )
    result = run(tool("kubectl"), *KUSTOMIZE, str(folder))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def named(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_the_components_validate_strictly(rendered: list[dict[str, Any]]) -> None:
    for document in rendered:
        kubernetes_validate.validate(document, "1.37", strict=True)


def test_loki_is_where_the_collector_sends_logs(rendered: list[dict[str, Any]]) -> None:
    collector = load_yaml(OBSERVABILITY / "otel-collector" / "config.yaml")
    endpoint = collector["exporters"]["otlp_http/loki"]["endpoint"]
    assert endpoint == "http://loki:3100/otlp"
    service = named(rendered, "Service", "loki")
    assert [p["port"] for p in service["spec"]["ports"]] == [3100]
    loki = named(rendered, "StatefulSet", "loki")
    (container,) = loki["spec"]["template"]["spec"]["containers"]
    compose = (ROOT / "compose.yaml").read_text()
    assert f"image: {container['image']}\n" in compose


def test_pods_profile_to_pyroscope(rendered: list[dict[str, Any]]) -> None:
    otel = next(
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("glassbox-otel")
    )
    assert otel["data"]["PYROSCOPE_SERVER_ADDRESS"] == "http://pyroscope:4040"
    service = named(rendered, "Service", "pyroscope")
    assert [p["port"] for p in service["spec"]["ports"]] == [4040]
    pyroscope = named(rendered, "StatefulSet", "pyroscope")
    (container,) = pyroscope["spec"]["template"]["spec"]["containers"]
    assert f"image: {container['image']}\n" in (ROOT / "compose.yaml").read_text()
    egress = named(rendered, "NetworkPolicy", "glassbox-to-pyroscope")
    assert egress["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 4040}]


def test_alertmanager_runs_compose_image_and_takes_webhooks_from_an_optional_secret(
    rendered: list[dict[str, Any]],
) -> None:
    service = named(rendered, "Service", "alertmanager")
    assert [p["port"] for p in service["spec"]["ports"]] == [9093]
    alertmanager = named(rendered, "StatefulSet", "alertmanager")
    (container,) = alertmanager["spec"]["template"]["spec"]["containers"]
    assert f"image: {container['image']}\n" in (ROOT / "compose.yaml").read_text()
    assert container["envFrom"] == [
        {"secretRef": {"name": "glassbox-alertmanager", "optional": True}}
    ]
    assert "render-receivers.sh" in container["args"][0]
    config = next(
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("alertmanager")
    )
    assert set(config["data"]) == {"alertmanager.yml", "render-receivers.sh"}


def test_the_blackbox_exporter_may_probe_both_services(rendered: list[dict[str, Any]]) -> None:
    exporter = named(rendered, "Deployment", "blackbox-exporter")
    (container,) = exporter["spec"]["template"]["spec"]["containers"]
    assert f"image: {container['image']}\n" in (ROOT / "compose.yaml").read_text()
    allowed = named(rendered, "NetworkPolicy", "glassbox-from-blackbox-exporter")
    ports = {p["port"] for p in allowed["spec"]["ingress"][0]["ports"]}
    services = {
        d["metadata"]["name"]: d["spec"]["ports"][0]["port"]
        for d in rendered
        if d["kind"] == "Service" and d["metadata"]["name"].startswith("glassbox-")
    }
    assert ports == {services["glassbox-api"], services["glassbox-payments"]}


def test_every_component_says_what_it_is_for() -> None:
    for name in ("loki", "pyroscope", "alertmanager", "blackbox"):
        text = (ROOT / "k8s" / "components" / name / "kustomization.yaml").read_text()
        assert text.startswith("# Optional:"), name
    assert Path(ROOT / "k8s" / "components" / "loki" / "loki.yaml").exists()

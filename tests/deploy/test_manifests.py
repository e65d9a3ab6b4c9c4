"""k8s/: every overlay renders (kubectl kustomize), validates strictly against each Kubernetes
version of the supported range (kubernetes-validate), and keeps the promises docs/deploy.md
makes: probes, limits, a locked-down securityContext, graceful drains, the migration Job,
network isolation, /metrics kept private, the collector sharing observability/'s config.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from service import gunicorn_conf
from tests.deploy.conftest import (
    OVERLAYS,
    ROOT,
    app_workloads,
    find,
    pod_templates,
)

# The range docs/deploy.md states: 1.29 is the oldest minor still met on managed clusters,
# 1.37 the newest kubernetes-validate knows. Every minor in between is checked.
KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    template = yaml.safe_load((ROOT / "k8s" / "secret.template.yaml").read_text())
    problems = []
    checked = 0
    for overlay, docs in {**rendered, "secret.template.yaml": [template]}.items():
        for doc in docs:
            name = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{name}: {path}: {error.message}")
            # The CLI only warns about a kind it has no schema for: here that is a failure
            # (a typo in apiVersion would otherwise pass).
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{name}: {error.message}")
            checked += 1
    assert problems == []
    assert checked > 50


def test_the_strict_validator_rejects_a_misspelt_field() -> None:
    # The check above is only worth something if a typo fails it.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x"},
        "spec": {"backofLimit": 3, "template": {"spec": {"containers": []}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_has_the_expected_objects(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    namespace = {"dev": "glassbox-dev", "prod": "glassbox"}[overlay]
    for kind, name in [
        ("Deployment", "glassbox-api"),
        ("Deployment", "glassbox-payments"),
        ("Deployment", "otel-collector"),
        ("Deployment", "glassbox-reconcile"),
        ("Service", "glassbox-api"),
        ("Service", "glassbox-payments"),
        ("Service", "otel-collector"),
        ("Job", "glassbox-migrate"),
        ("HorizontalPodAutoscaler", "glassbox-api"),
        ("PodDisruptionBudget", "glassbox-api"),
        ("NetworkPolicy", "default-deny"),
        ("Ingress", "glassbox-api"),
        ("Namespace", namespace),
    ]:
        find(docs, kind, name)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    # The Secret is created out of band (k8s/secret.template.yaml): applying a rendered
    # placeholder would overwrite the real one.
    assert [d for d in docs if d["kind"] == "Secret"] == []
    datastores = {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"}
    assert datastores == ({"postgres", "redis"} if overlay == "dev" else set())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload, spec in pod_templates(rendered[overlay]):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert {"cpu", "memory"} <= resources["limits"].keys(), name
            assert ":" in container["image"] or "@" in container["image"], name
            assert not container["image"].endswith(":latest"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_app_servers_probe_health_and_drain(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    # The reconciliation is a periodic job, not a server (test_reconciliation_runs_...).
    servers = [
        (w, s)
        for w, s in app_workloads(rendered[overlay])
        if w["kind"] == "Deployment" and w["metadata"]["name"] != "glassbox-reconcile"
    ]
    assert {w["metadata"]["name"] for w, _ in servers} == {"glassbox-api", "glassbox-payments"}
    for _, spec in servers:
        container = spec["containers"][0]
        port = container["ports"][0]["containerPort"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PORT"] == str(port)
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        # The pod must outlive the preStop pause plus gunicorn's drain, or SIGKILL cuts
        # requests in flight.
        drain = int(sleep[1]) + gunicorn_conf.graceful_timeout
        assert spec["terminationGracePeriodSeconds"] > drain
        assert container["command"][:3] == ["gunicorn", "-c", "python:service.gunicorn_conf"]
        # prometheus_client's multiprocess files need a writable folder: an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = mounts[env["PROMETHEUS_MULTIPROC_DIR"]]
        assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == volume)
        temporary = mounts["/tmp"]  # noqa: S108 (the container's /tmp, an emptyDir)
        assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == temporary)
    payments = next(s for w, s in servers if w["metadata"]["name"] == "glassbox-payments")
    assert payments["containers"][0]["command"][3] == "service.payments:create_app()"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_and_disruption(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    for name in ("glassbox-api", "glassbox-payments"):
        deployment = find(docs, "Deployment", name)
        # The HPA owns the replica count; one in the manifest would reset it on every apply.
        assert "replicas" not in deployment["spec"]
        hpa = find(docs, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        pdb = find(docs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    minimum = find(docs, "HorizontalPodAutoscaler", "glassbox-api")["spec"]["minReplicas"]
    assert minimum == (1 if overlay == "dev" else 3)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_runs_the_locked_upgrade(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    job = find(docs, "Job", "glassbox-migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["command"] == ["python", "/opt/glassbox-migrate/migrate_locked.py"]
    volume = next(v for v in spec["volumes"] if "configMap" in v)
    script = find(docs, "ConfigMap", volume["configMap"]["name"])["data"]["migrate_locked.py"]
    assert script == (ROOT / "k8s" / "base" / "migrate_locked.py").read_text()
    # cd.yml applies these first (label selector), waits for the Job, then rolls out.
    phase = {
        d["metadata"]["name"]
        for d in docs
        if d["metadata"].get("labels", {}).get("glassbox.io/rollout-phase") == "migrate"
    }
    needed = {volume["configMap"]["name"], job["metadata"]["name"]} | {
        ref["configMapRef"]["name"] for ref in container["envFrom"]
    }
    assert phase == needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_are_not_public(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    ingress = find(docs, "Ingress", "glassbox-api")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for path in paths:
        for private in ("/metrics", "/health/live", "/health/ready"):
            routed = (
                private == path["path"]
                if path["pathType"] == "Exact"
                else (private + "/").startswith(path["path"].rstrip("/") + "/")
            )
            assert not routed, f"{path['path']} routes {private} to the internet"
    assert {p["path"] for p in paths} >= {"/api/", "/openapi.json", "/docs"}
    # Scrape annotations point at the API's own port, which only these namespaces reach.
    api = find(docs, "Deployment", "glassbox-api")
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
    policy = find(docs, "NetworkPolicy", "glassbox-api")
    sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert sources == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    # The reconciliation's gauges: scraped the same way, on the port only monitoring reaches.
    reconcile = find(docs, "Deployment", "glassbox-reconcile")["spec"]["template"]
    annotations = reconcile["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "9464"
    assert reconcile["spec"]["containers"][0]["ports"] == [
        {"name": "metrics", "containerPort": 9464}
    ]
    policy = find(docs, "NetworkPolicy", "glassbox-reconcile")
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 9464}],
        }
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reconciliation_runs_as_compose_runs_it(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployment = find(docs, "Deployment", "glassbox-reconcile")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two at once
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert container["command"] == compose["services"]["reconcile"]["command"]
    # The api's settings and both books' addresses, from the same ConfigMap and Secret.
    api = find(docs, "Deployment", "glassbox-api")["spec"]["template"]["spec"]["containers"][0]
    api_config = next(
        r for r in api["envFrom"] if r["configMapRef"]["name"].startswith("glassbox-api")
    )
    assert api_config in container["envFrom"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    for name in ("DATABASE_URL", "PAYMENTS_DATABASE_URL", "SECRET_KEY"):
        assert secrets[name] == {"name": "glassbox-secrets", "key": name}


def _config_map(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The data of a generated ConfigMap (its name carries a content hash)."""
    (match,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(name + "-")
    ]
    return dict(match["data"])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a Kubernetes label selector match these labels (matchLabels + matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w, _ in pod_templates(docs)
    }


def _may_connect(docs: list[dict[str, Any]], source: str, target: str, port: int) -> bool:
    """Ingress side of NetworkPolicy for two pods of the namespace (all ingress is denied by
    default-deny, so a connection needs a rule of a policy that selects the target)."""
    pods = _pods(docs)
    policies = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], pods[target])
    ]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("from", []):
                same_namespace = "podSelector" in peer and "namespaceSelector" not in peer
                if same_namespace and _selects(peer["podSelector"], pods[source]):
                    return True
    return False


def test_network_policies_isolate_payments_and_datastores(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["dev"]  # dev has every pod, datastores included
    default_deny = find(docs, "NetworkPolicy", "default-deny")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    pods = set(_pods(docs))
    assert pods == {
        "glassbox-api",
        "glassbox-payments",
        "glassbox-migrate",
        "glassbox-reconcile",
        "otel-collector",
        "postgres",
        "redis",
    }
    allowed = {
        ("glassbox-payments", 8001): {"glassbox-api"},
        ("postgres", 5432): {"glassbox-api", "glassbox-migrate", "glassbox-reconcile"},
        ("redis", 6379): {"glassbox-api"},
        ("otel-collector", 4318): {"glassbox-api", "glassbox-payments"},
        ("glassbox-api", 8000): set(),  # from other namespaces only (ingress, monitoring)
        ("glassbox-reconcile", 9464): set(),  # the monitoring namespace only
    }
    for (target, port), sources in allowed.items():
        reached = {s for s in pods - {target} if _may_connect(docs, s, target, port)}
        assert reached == sources, f"{target}:{port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_collector_shares_the_observability_config(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    collector = find(docs, "Deployment", "otel-collector")["spec"]["template"]["spec"]
    volume = next(v for v in collector["volumes"] if "configMap" in v)
    config = find(docs, "ConfigMap", volume["configMap"]["name"])["data"]["config.yaml"]
    shared = ROOT / "observability" / "otel-collector" / "config.yaml"
    assert config == shared.read_text(), "run `make k8s-config` after changing the collector"
    # The pods export where the collector listens.
    otel = _config_map(docs, "glassbox-otel")
    assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert otel["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    ratio = {"dev": "1.0", "prod": "0.25"}[overlay]
    assert otel["OTEL_TRACES_SAMPLER_ARG"] == ratio
    service = find(docs, "Service", "otel-collector")
    assert 4318 in [p["port"] for p in service["spec"]["ports"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_production_settings(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    api = _config_map(docs, "glassbox-api")
    assert api["GLASSBOX_ENV"] == {"dev": "development", "prod": "production"}[overlay]
    container = find(docs, "Deployment", "glassbox-api")["spec"]["template"]["spec"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert secrets == {
        name: {"name": "glassbox-secrets", "key": name}
        for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PAYMENTS_SHARED_SECRET")
    }
    payments = find(docs, "Deployment", "glassbox-payments")["spec"]["template"]["spec"]
    payments_secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in payments["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert payments_secrets == {
        name: {"name": "glassbox-secrets", "key": name}
        for name in ("PAYMENTS_SHARED_SECRET", "PAYMENTS_DATABASE_URL")
    }
    template = yaml.safe_load((ROOT / "k8s" / "secret.template.yaml").read_text())
    assert set(template["stringData"]) == set(secrets) | set(payments_secrets)
    # Placeholders only: every value still has a <...> to fill in.
    assert all("<" in value for value in template["stringData"].values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_request_thread_can_have_a_database_connection(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    # A worker runs WEB_THREADS requests at once (service/gunicorn_conf.py): with fewer
    # pooled connections, requests would wait for one, then answer 503.
    api = _config_map(rendered[overlay], "glassbox-api")
    assert int(api["DATABASE_POOL_SIZE"]) >= int(api["WEB_THREADS"]) >= 1
    assert int(api["WEB_CONCURRENCY"]) >= 1


@pytest.mark.parametrize(
    ("source", "copy"),
    [
        ("observability/otel-collector/config.yaml", "k8s/base/otel-collector-config.yaml"),
        ("observability/loki/config.yaml", "k8s/components/loki/loki-config.yaml"),
        (
            "observability/alertmanager/alertmanager.yml",
            "k8s/components/alertmanager/alertmanager.yml",
        ),
        (
            "observability/alertmanager/render-receivers.sh",
            "k8s/components/alertmanager/render-receivers.sh",
        ),
        ("observability/blackbox/blackbox.yml", "k8s/components/blackbox/blackbox.yml"),
    ],
)
def test_the_config_copies_under_k8s_match_their_source(source: str, copy: str) -> None:
    """k8s/ carries copies (kustomize loads nothing from outside its tree): one source each."""
    assert (ROOT / copy).read_bytes() == (ROOT / source).read_bytes(), "run `make k8s-config`"

"""compose.yaml as Compose v2 reads it (`docker compose config`, no engine needed): it
resolves with the secrets supplied, refuses to without them, and its wiring agrees with the
app's configuration, the collector's and Prometheus' ports, and the mounted files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.config import all_variable_names, load_config
from tests.observability.conftest import (
    DATASOURCES,
    OBSERVABILITY,
    ROOT,
    STACK_SECRETS,
    load_yaml,
)

APP_SERVICES = ("api", "payments", "migrate", "reconcile")
LONG_RUNNING = (
    "api",
    "payments",
    "postgres",
    "redis",
    "otel-collector",
    "jaeger",
    "prometheus",
    "alertmanager",
    "blackbox-exporter",
    "postgres-exporter",
    "redis-exporter",
    "reconcile",
    "loki",
    "pyroscope",
    "grafana",
)
# The collector's and redis_exporter's images are built FROM scratch and Loki's and
# Pyroscope's are distroless: no shell or client to run a healthcheck with. Prometheus
# watches them instead (`up`).
WITHOUT_HEALTHCHECK = {"otel-collector", "redis-exporter", "loki", "pyroscope"}


def compose(
    binary: str, env_file: Path, *args: str, files: tuple[str, ...] = ("compose.yaml",)
) -> subprocess.CompletedProcess[str]:
    command = [binary, "--env-file", str(env_file)]
    for name in files:
        command += ["-f", str(ROOT / name)]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # Only PATH: a developer's exported POSTGRES_PASSWORD must not hide a missing one.
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "stack.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in STACK_SECRETS.items()))
    return path


@pytest.fixture(scope="module")
def stack(docker_compose: str, env_file: Path) -> dict[str, Any]:
    result = compose(docker_compose, env_file, "--profile", "load", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    return stack["services"]


def test_compose_config_is_valid(docker_compose: str, env_file: Path) -> None:
    result = compose(docker_compose, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_profiling_override_adds_ptrace_to_the_api_only(
    docker_compose: str, env_file: Path
) -> None:
    files = ("compose.yaml", "compose.profiling.yaml")
    result = compose(docker_compose, env_file, "config", "--format", "json", files=files)
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)["services"]
    assert merged["api"]["cap_add"] == ["SYS_PTRACE"]
    assert all("cap_add" not in s for name, s in merged.items() if name != "api")


def test_without_secrets_compose_refuses_and_names_them(
    docker_compose: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose(docker_compose, empty, "config", "-q")
    assert result.returncode != 0
    for name in STACK_SECRETS:
        assert f"required variable {name} is missing" in result.stderr


def test_the_example_secrets_file_lists_exactly_what_compose_requires() -> None:
    example = (OBSERVABILITY / "stack.env.example").read_text()
    listed = {line.split("=")[0] for line in example.splitlines() if line and line[0] != "#"}
    required = set()
    text = (ROOT / "compose.yaml").read_text()
    for name in STACK_SECRETS:
        if f"${{{name}:?" in text:
            required.add(name)
    assert listed == required == set(STACK_SECRETS)


def test_no_secret_is_written_into_compose_yaml() -> None:
    """Every secret-looking setting is a required interpolation, never a literal value."""
    raw = load_yaml(ROOT / "compose.yaml")
    secret_names = ("PASSWORD", "SECRET_KEY", "_AUTH")
    checked = 0
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.endswith(secret_names):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), f"{name}.{key}"
                checked += 1
            elif isinstance(value, str) and "://" in value and "@" in value:
                # A URL with credentials: the password part is interpolated.
                assert re.search(r":\$\{[A-Z_]+:\?[^}]*\}@", value), f"{name}.{key}"
                checked += 1
    for key, value in raw["x-app-environment"].items():
        if key.endswith(secret_names):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), key
    assert checked >= 8


def test_every_service_the_stack_needs_is_there(services: dict[str, Any]) -> None:
    assert set(LONG_RUNNING) | {"migrate", "locust"} == set(services)
    assert services["locust"]["profiles"] == ["load"]


def test_long_running_services_are_healthchecked(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        if name in WITHOUT_HEALTHCHECK:
            assert check is None, f"{name} gained a healthcheck: update WITHOUT_HEALTHCHECK"
            continue
        assert check, name
        assert check.get("test"), name
        assert not check.get("disable"), name
        assert services[name]["restart"] == "unless-stopped", name


def test_depends_on_waits_for_health_and_for_migrations(services: dict[str, Any]) -> None:
    api = services["api"]["depends_on"]
    assert api["migrate"]["condition"] == "service_completed_successfully"
    for dependency in ("postgres", "redis", "payments"):
        assert api[dependency]["condition"] == "service_healthy", dependency
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            if spec["condition"] == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} -> {dependency}"
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["flask", "--app", "service", "db", "upgrade"]


def test_app_services_use_only_variables_the_app_knows(services: dict[str, Any]) -> None:
    known = all_variable_names()
    for name in APP_SERVICES:
        unknown = set(services[name]["environment"]) - known
        assert unknown == set(), f"{name}: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["api", "migrate"])
def test_app_configuration_loads_from_the_compose_environment(
    services: dict[str, Any], name: str
) -> None:
    """The values compose passes are accepted by the app's own validation, production rules
    included (a real secret, no development key)."""
    environment = services[name]["environment"]
    config = load_config(environment)
    assert config["GLASSBOX_ENV"] == "production"
    database = urlsplit(environment["DATABASE_URL"])
    assert database.hostname == "postgres"
    assert database.port == 5432
    assert database.password == STACK_SECRETS["POSTGRES_PASSWORD"]
    postgres = services["postgres"]["environment"]
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]


def test_api_reaches_redis_payments_and_the_collector_where_they_listen(
    services: dict[str, Any],
) -> None:
    api = services["api"]["environment"]
    config = load_config(api)
    assert config["CACHE_TYPE"] == "RedisCache"
    redis = urlsplit(api["REDIS_URL"])
    assert (redis.hostname, redis.port) == ("redis", 6379)
    assert redis.password == STACK_SECRETS["REDIS_PASSWORD"]
    assert STACK_SECRETS["REDIS_PASSWORD"] in services["redis"]["command"]

    payments = urlsplit(api["PAYMENTS_URL"])
    assert payments.hostname == "payments"
    assert str(payments.port) == services["payments"]["environment"]["PORT"]

    collector = load_yaml(OBSERVABILITY / "otel-collector" / "config.yaml")
    http_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for name in ("api", "payments"):
        endpoint = urlsplit(services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.hostname, str(endpoint.port)) == ("otel-collector", http_port)
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert services["api"]["environment"]["OTEL_SERVICE_NAME"] == "glassbox-api"
    assert services["payments"]["environment"]["OTEL_SERVICE_NAME"] == "glassbox-payments"


def test_gunicorn_runs_several_workers_with_a_metrics_folder_on_tmpfs(
    services: dict[str, Any],
) -> None:
    for name in ("api", "payments"):
        service = services[name]
        environment = service["environment"]
        assert int(environment["WEB_CONCURRENCY"]) >= 2
        assert environment["PROMETHEUS_MULTIPROC_DIR"] in service["tmpfs"]
        assert service["command"][:3] == ["gunicorn", "-c", "python:service.gunicorn_conf"]
        assert service["read_only"] is True
        # The healthcheck asks the port the service listens on.
        assert "os.environ['PORT']" in " ".join(service["healthcheck"]["test"])
    assert services["payments"]["command"][3] == "service.payments:create_app()"
    # Each worker runs WEB_THREADS requests at once, each may need a pooled connection.
    api = services["api"]["environment"]
    assert int(api["DATABASE_POOL_SIZE"]) >= int(api["WEB_THREADS"]) >= 1


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        if name in APP_SERVICES:
            assert "build" in service, name  # the repository's own Dockerfile
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image}"
        assert tag not in ("", "latest"), f"{name}: {image}"
        assert any(ch.isdigit() for ch in tag), f"{name}: {image}"


def test_the_readme_says_where_each_pinned_image_was_seen(services: dict[str, Any]) -> None:
    """observability/README.md's table of pins names exactly the images compose runs, each
    with where its tag was seen."""
    readme = (OBSERVABILITY / "README.md").read_text()
    rows = re.findall(r"^\| `([\w./-]+)` \| `([\w.-]+)` \| (.+) \|$", readme, flags=re.MULTILINE)
    listed = {f"{image}:{tag}" for image, tag, _ in rows}
    images = {s["image"] for name, s in services.items() if name not in APP_SERVICES}
    assert listed == images
    assert all(len(where.strip()) > 10 for *_, where in rows)


def test_only_ui_ports_and_the_api_are_published_and_only_on_loopback(
    services: dict[str, Any],
) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} published beyond this host"
            published[name] = int(port["target"])
    assert published == {
        "api": 8000,
        "jaeger": 16686,
        "prometheus": 9090,
        "alertmanager": 9093,
        # Their HTTP APIs (and Pyroscope's UI), for `make stack-check` from the host.
        "loki": 3100,
        "pyroscope": 4040,
        "grafana": 3000,
        "locust": 8089,
    }


def test_mounted_files_exist_and_match_what_the_tools_read(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
                assert volume.get("read_only") is True, f"{name}: {volume['target']}"
    mounts = {
        name: {v["target"]: v["source"] for v in s.get("volumes", []) if v["type"] == "bind"}
        for name, s in services.items()
    }
    collector_config = services["otel-collector"]["command"][0].split("=", 1)[1]
    assert collector_config in mounts["otel-collector"]
    jaeger_config = services["jaeger"]["command"][0].split("=", 1)[1]
    assert jaeger_config in mounts["jaeger"]
    jaeger = load_yaml(Path(mounts["jaeger"][jaeger_config]))
    assert jaeger["extensions"]["jaeger_query"]["ui"]["config_file"] in mounts["jaeger"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    assert "/etc/prometheus/rules" in mounts["prometheus"]
    provisioning = Path(mounts["grafana"]["/etc/grafana/provisioning"])
    provider = load_yaml(provisioning / "dashboards" / "glassbox.yaml")["providers"][0]
    inside = Path(provider["options"]["path"]).relative_to("/etc/grafana/provisioning")
    assert list((provisioning / inside).glob("*.json")), "the provider's folder has no dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (provisioning / Path(home).relative_to("/etc/grafana/provisioning")).exists()
    locust = mounts["locust"]
    assert Path(locust["/mnt/glassbox/loadtests"], "locustfile.py").exists()


def test_prometheus_and_grafana_address_the_services_where_they_listen(
    services: dict[str, Any],
) -> None:
    collector = load_yaml(OBSERVABILITY / "otel-collector" / "config.yaml")
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    telemetry = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    prometheus = load_yaml(OBSERVABILITY / "prometheus" / "prometheus.yml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0]
        for job in prometheus["scrape_configs"]
        if job["job_name"] != "blackbox"
    }
    # The probes go through the exporter, to the services' own ports.
    (blackbox,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "blackbox"]
    assert blackbox["relabel_configs"][-1]["replacement"] == "blackbox-exporter:9115"
    probed = {c["labels"]["service"]: c["targets"][0] for c in blackbox["static_configs"]}
    assert probed == {
        "glassbox-api": "http://api:8000/health/ready",
        "glassbox-payments": "http://payments:8001/health/ready",
    }
    assert targets["otel-collector-exporter"] == f"otel-collector:{exporter_port}"
    assert targets["otel-collector"] == f"otel-collector:{telemetry['prometheus']['port']}"
    for job, target in targets.items():
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"{job} scrapes unknown {host}"
    exporter_job = next(
        job for job in prometheus["scrape_configs"] if job["job_name"] == "otel-collector-exporter"
    )
    assert exporter_job["honor_labels"] is True  # keeps job/instance set by the exporter

    urls = {d["uid"]: urlsplit(d["url"]) for d in load_yaml(DATASOURCES)["datasources"]}
    assert (urls["prometheus"].hostname, urls["prometheus"].port) == ("prometheus", 9090)
    assert (urls["jaeger"].hostname, urls["jaeger"].port) == ("jaeger", 16686)
    assert services["jaeger"]["ports"][0]["target"] == 16686


def test_one_postgresql_and_one_redis_version_everywhere() -> None:
    """compose.yaml, CI's service containers and k8s/components/dev-datastores run the same
    PostgreSQL and the same Redis image."""
    sources = {
        "compose.yaml": (ROOT / "compose.yaml").read_text(),
        "ci.yml": (ROOT / ".github" / "workflows" / "ci.yml").read_text(),
        "dev-datastores": "".join(
            p.read_text() for p in sorted((ROOT / "k8s/components/dev-datastores").glob("*.yaml"))
        ),
    }
    for product in ("postgres", "redis"):
        found = {
            name: set(re.findall(rf"image: ({product}:\S+)", text))
            for name, text in sources.items()
        }
        images = set().union(*found.values())
        assert len(images) == 1, found
        assert all(len(tags) == 1 for tags in found.values()), found

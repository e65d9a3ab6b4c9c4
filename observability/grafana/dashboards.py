"""Generate glassbox's Grafana dashboards as JSON, with grafana-foundation-sdk (11.6 schema,
which Grafana 13 loads and migrates).

Run `.venv/bin/python observability/grafana/dashboards.py` after a change; it rewrites the JSON
under provisioning/dashboards/glassbox/. The dashboards are built in glassbox_dashboards/, one
module per dashboard, panels in small groups. tests/observability/test_dashboards.py fails when
the committed JSON and this script's output differ, and evaluates every PromQL query against a
real Prometheus (test_promql_live.py). Metric names and labels: observability/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository root makes `observability` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from observability.grafana.glassbox_dashboards.business import business
from observability.grafana.glassbox_dashboards.dependencies import dependencies
from observability.grafana.glassbox_dashboards.overview import service_overview
from observability.grafana.glassbox_dashboards.payments import payments
from observability.grafana.glassbox_dashboards.profiles import profiles
from observability.grafana.glassbox_dashboards.runtime import runtime

OUTPUT = Path(__file__).resolve().parent / "provisioning" / "dashboards" / "glassbox"

DASHBOARDS = {
    "service-overview.json": service_overview,
    "dependencies.json": dependencies,
    "business.json": business,
    "payments.json": payments,
    "runtime.json": runtime,
    "profiles.json": profiles,
}


def render(builder: Any) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panels numbered in order."""
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(model.get("panels", []), start=1):
        panel["id"] = number
    return model


def to_text(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUTPUT / name).write_text(to_text(render(build())))
        print(f"wrote {OUTPUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

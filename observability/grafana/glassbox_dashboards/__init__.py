"""glassbox's Grafana dashboards, one module per dashboard (observability/grafana/dashboards.py
writes them)."""

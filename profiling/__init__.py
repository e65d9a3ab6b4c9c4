"""Measurement scripts: py-spy profiling of gunicorn workers and the `make bench` harness."""

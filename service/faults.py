"""Faults to rehearse incidents with, switched while the services run (docs/runbook.md).

The OpenTelemetry Demo's model: each fault is a flag of a flagd flags file
(FAULT_FLAGS_FILE, `observability/flagd/glassbox.flagd.json`), evaluated through OpenFeature
by the flagd provider in-process. The provider re-reads the file when it changes (it polls
its modification time every FLAGD_DEADLINE_MS, 500 ms by default): flip a flag's
`defaultVariant` and every worker follows, no restart. A flag missing from the file, a file
that cannot be read, or no file at all gives the service's own setting (PAYMENTS_LATENCY_MS,
PAYMENTS_FAILURE_RATE, REPORTS_SQL_DELAY_MS; the cache is on): 0, off, unless set.
Production refuses a flags file unless FAULTS_ALLOWED_IN_PRODUCTION=true (service/config).

Every evaluation is an event `feature_flag.evaluation` on the current span (OpenFeature's
OpenTelemetry hook), and a fault that is injected also sets `glassbox.fault.<flag>` on it.
An evaluation costs ≈ 50 µs here (the SDK's hooks and flagd's evaluator), paid only where a
flags file is set (cacheOff on every cached read): without one the SDK is not called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from opentelemetry import trace

log = logging.getLogger("service.faults")

_EXTENSION = "glassbox.faults"


@dataclass(frozen=True)
class Fault:
    """A flag of the flags file, and the setting that gives its value without one."""

    flag: str
    kind: type  # int, float or bool: the flag's type in the file
    setting: str | None = None  # None: off (0, False) unless the flag says otherwise


PAYMENTS_LATENCY_MS = Fault("paymentsLatencyMs", int, "PAYMENTS_LATENCY_MS")
PAYMENTS_FAILURE_RATE = Fault("paymentsFailureRate", float, "PAYMENTS_FAILURE_RATE")
REPORTS_SQL_DELAY_MS = Fault("reportsSqlDelayMs", int, "REPORTS_SQL_DELAY_MS")
CACHE_OFF = Fault("cacheOff", bool)


class Faults:
    """One service's faults: the flags file's value of each, or the setting's."""

    def __init__(self, config: Any, client: OpenFeatureClient | None) -> None:
        self._config = config
        self._client = client

    def value(self, fault: Fault) -> Any:
        fallback = fault.kind(self._config.get(fault.setting, 0) if fault.setting else 0)
        if self._client is None:  # no flags file: not even the SDK's hooks on the hot path
            value = fallback
        elif fault.kind is bool:
            value = self._client.get_boolean_value(fault.flag, fallback)
        elif fault.kind is float:
            value = self._client.get_float_value(fault.flag, fallback)
        else:
            value = self._client.get_integer_value(fault.flag, fallback)
        if value:
            trace.get_current_span().set_attribute(f"glassbox.fault.{fault.flag}", value)
        return value


def init_app(app: Flask, *, service_name: str) -> None:
    """Read FAULT_FLAGS_FILE through the flagd provider, in this process (after the fork)."""
    path = app.config.get("FAULT_FLAGS_FILE") or ""
    client = None
    if path:
        # A domain per service and file: tests build several apps in one process.
        domain = f"{service_name}:{path}"
        provider = FlagdProvider(
            resolver_type=ResolverType.IN_PROCESS, offline_flag_source_path=path
        )
        try:
            api.set_provider_and_wait(provider, domain)
        except Exception as exc:  # the provider keeps watching: a file that appears is read
            log.warning("fault flags file %s not readable yet, faults off: %s", path, exc)
        client = api.get_client(domain)
        client.add_hooks([TracingHook()])
        log.warning("fault flags read from %s: faults can be switched on while running", path)
    app.extensions[_EXTENSION] = Faults(app.config, client)


def faults() -> Faults:
    """The current app's faults."""
    found: Faults = current_app.extensions[_EXTENSION]
    return found


def value(fault: Fault) -> Any:
    """The fault's current value in the current app (0 or False: no fault)."""
    return faults().value(fault)

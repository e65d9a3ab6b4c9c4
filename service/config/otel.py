"""The OpenTelemetry SDK's own variables, checked as glassbox's settings are checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from service.config.parsers import ConfigError

OTEL_SIGNALS = ("TRACES", "METRICS", "LOGS")
OTEL_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True)
class SignalExport:
    """Where one signal goes: OTEL_<SIGNAL>_EXPORTER and its OTLP protocol."""

    exporters: tuple[str, ...]  # empty: exported nowhere
    protocol: str
    # glassbox's rule, not the SDK's: without an endpoint OTLP goes nowhere (the SDK would
    # try localhost), so a laptop run does not log export failures every few seconds.
    otlp_endpoint: bool = False


@dataclass(frozen=True)
class OtelProcess:
    """What the SDK's own variables decide about glassbox's defaults (service/telemetry)."""

    sdk_disabled: bool  # OTEL_SDK_DISABLED
    service_name_set: bool  # OTEL_SERVICE_NAME: else each service names itself
    environment_in_resource: bool  # OTEL_RESOURCE_ATTRIBUTES has deployment.environment.name
    sampler_set: bool  # OTEL_TRACES_SAMPLER: else parent-based 10%


def otel_process(environ: Mapping[str, str] | None = None) -> OtelProcess:
    environ = os.environ if environ is None else environ
    return OtelProcess(
        sdk_disabled=environ.get("OTEL_SDK_DISABLED", "").strip().lower()
        in ("1", "true", "yes", "on"),
        service_name_set=bool(environ.get("OTEL_SERVICE_NAME")),
        environment_in_resource="deployment.environment.name="
        in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""),
        sampler_set=bool(environ.get("OTEL_TRACES_SAMPLER")),
    )


def otel_exports(environ: Mapping[str, str] | None = None) -> dict[str, SignalExport]:
    """Validate the SDK's exporter variables as glassbox's own settings are validated.

    The SDK's documented values only: `otlp`, `console`, `none` (comma-separated lists
    allowed) and the protocols `grpc`, `http/protobuf`; anything else refuses the start
    with the variable's name instead of being silently ignored.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    general = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip().lower() or "http/protobuf"
    if general not in OTLP_PROTOCOLS:
        problems.append(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={general!r}: expected one of {', '.join(OTLP_PROTOCOLS)}"
        )
    exports: dict[str, SignalExport] = {}
    for signal in OTEL_SIGNALS:
        name = f"OTEL_{signal}_EXPORTER"
        # Logs are opt-in: the JSON lines on stdout already carry the trace ids.
        raw = environ.get(name, "").strip().lower() or ("none" if signal == "LOGS" else "otlp")
        chosen = tuple(part.strip() for part in raw.split(",") if part.strip())
        unknown = [part for part in chosen if part not in OTEL_EXPORTERS]
        if unknown or ("none" in chosen and len(chosen) > 1):
            problems.append(f"{name}={raw!r}: expected otlp, console, both (otlp,console) or none")
        protocol_name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
        protocol = environ.get(protocol_name, "").strip().lower() or general
        if protocol not in OTLP_PROTOCOLS:
            problems.append(
                f"{protocol_name}={protocol!r}: expected one of {', '.join(OTLP_PROTOCOLS)}"
            )
        endpoint = bool(
            environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        exports[signal] = SignalExport(tuple(p for p in chosen if p != "none"), protocol, endpoint)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return exports

"""What the pinned OpenTelemetry Collector and Jaeger versions accept, written down by hand.

Neither binary can run on the development machine (no Docker engine, no package ships them),
so their configs are checked against this: the component names of each version's
distribution, and the fields of the components glassbox uses. Sources: the component renames
to lower_snake_case of collector 0.144+ (open-telemetry/opentelemetry-collector#14396: the
`otlp` exporter is `otlp_grpc`, `otlphttp` is `otlp_http`, `spanmetrics` is `span_metrics`,
the old names deprecated aliases), the prometheus exporter's `translation_strategy` (which
replaces `add_metric_suffixes`), the OpenTelemetry demo's collector and Jaeger configs for
collector 0.159 / Jaeger 2.19 (Jaeger's `metric_backends.<name>.prometheus` with
`normalize_calls` / `normalize_duration`), and each component's README. The tail sampling
processor's and the prometheus exporter's fields are those of their upstream
`config.schema.yaml` (the generated metadata: `decision_wait_after_root_received`,
`sample_on_first_match`, the `drop` / `not` / `bytes_limiting` policies;
`resource_constant_labels`, which replaces the deprecated `resource_to_telemetry_conversion`,
`without_scope_info`, `sending_queue` and the HTTP server's settings). Fields not listed
are refused, so a typo fails the test instead of the container's start; a deprecated alias
or field is refused too, so the config keeps to the current names.
"""

from __future__ import annotations

from typing import Any

# Leaf: any value. A dict: its allowed keys. ("one of", values): an enumeration.
ANY: None = None


def enum(*values: Any) -> tuple[str, tuple[Any, ...]]:
    return ("one of", values)


COLLECTOR_VERSION = "0.162.0"
JAEGER_VERSION = "2.21.0"

TLS_CLIENT = {
    "insecure": ANY,
    "insecure_skip_verify": ANY,
    "ca_file": ANY,
    "cert_file": ANY,
    "key_file": ANY,
    "server_name_override": ANY,
    "min_version": ANY,
    "max_version": ANY,
}
GRPC_SERVER = {
    "endpoint": ANY,
    "transport": ANY,
    "tls": ANY,
    "max_recv_msg_size_mib": ANY,
    "max_concurrent_streams": ANY,
    "read_buffer_size": ANY,
    "write_buffer_size": ANY,
    "keepalive": ANY,
    "auth": ANY,
    "include_metadata": ANY,
}
HTTP_SERVER = {
    "endpoint": ANY,
    "tls": ANY,
    "cors": ANY,
    "auth": ANY,
    "max_request_body_size": ANY,
    "include_metadata": ANY,
    "response_headers": ANY,
    "traces_url_path": ANY,
    "metrics_url_path": ANY,
    "logs_url_path": ANY,
}
OTLP_RECEIVER = {"protocols": {"grpc": GRPC_SERVER, "http": HTTP_SERVER}}
BATCH = {
    "timeout": ANY,
    "send_batch_size": ANY,
    "send_batch_max_size": ANY,
    "metadata_keys": ANY,
    "metadata_cardinality_limit": ANY,
}
MEMORY_LIMITER = {
    "check_interval": ANY,
    "limit_mib": ANY,
    "spike_limit_mib": ANY,
    "limit_percentage": ANY,
    "spike_limit_percentage": ANY,
}
STATUS_CODE = enum("OK", "ERROR", "UNSET")
SAMPLING_POLICY = {
    "name": ANY,
    "type": enum(
        "always_sample",
        "latency",
        "numeric_attribute",
        "probabilistic",
        "status_code",
        "string_attribute",
        "rate_limiting",
        "span_count",
        "trace_state",
        "boolean_attribute",
        "ottl_condition",
        "and",
        "composite",
        "drop",
        "not",
        "bytes_limiting",
    ),
    "latency": {"threshold_ms": ANY, "upper_threshold_ms": ANY},
    "probabilistic": {"sampling_percentage": ANY, "hash_salt": ANY},
    "status_code": {"status_codes": [STATUS_CODE]},
    "string_attribute": {
        "key": ANY,
        "values": ANY,
        "enabled_regex_matching": ANY,
        "cache_max_size": ANY,
        "invert_match": ANY,
    },
    "numeric_attribute": {"key": ANY, "min_value": ANY, "max_value": ANY, "invert_match": ANY},
    "rate_limiting": {"spans_per_second": ANY},
    "span_count": {"min_spans": ANY, "max_spans": ANY},
    "boolean_attribute": {"key": ANY, "value": ANY, "invert_match": ANY},
    "trace_state": {"key": ANY, "values": ANY},
    "ottl_condition": {"error_mode": ANY, "span": ANY, "spanevent": ANY},
    "bytes_limiting": {"bytes_per_second": ANY, "burst_capacity": ANY},
    "and": ANY,
    "composite": ANY,
    "drop": ANY,
    "not": ANY,
}
TAIL_SAMPLING = {
    "decision_wait": ANY,
    "decision_wait_after_root_received": ANY,
    "num_traces": ANY,
    "expected_new_traces_per_sec": ANY,
    "decision_cache": ANY,
    "block_on_overflow": ANY,
    "drop_pending_traces_on_shutdown": ANY,
    "maximum_trace_size_bytes": ANY,
    "sample_on_first_match": ANY,
    "sampling_strategy": enum("trace-complete", "span-ingest"),
    "policies": [SAMPLING_POLICY],
}
TRANSFORM = {
    "error_mode": enum("ignore", "silent", "propagate"),
    "trace_statements": ANY,
    "metric_statements": [
        {
            "context": enum("resource", "scope", "metric", "datapoint"),
            "statements": ANY,
            "conditions": ANY,
        }
    ],
    "log_statements": ANY,
}
QUEUE_AND_RETRY = {"sending_queue": ANY, "retry_on_failure": ANY, "timeout": ANY}
OTLP_EXPORTER = {
    "endpoint": ANY,
    "tls": TLS_CLIENT,
    "headers": ANY,
    "compression": ANY,
    "balancer_name": ANY,
    "auth": ANY,
    "keepalive": ANY,
    "write_buffer_size": ANY,
    **QUEUE_AND_RETRY,
}
OTLP_HTTP_EXPORTER = {
    "endpoint": ANY,
    "traces_endpoint": ANY,
    "metrics_endpoint": ANY,
    "logs_endpoint": ANY,
    "tls": TLS_CLIENT,
    "headers": ANY,
    "compression": ANY,
    "encoding": enum("proto", "json"),
    "timeout": ANY,
    "auth": ANY,
    **QUEUE_AND_RETRY,
}
SPAN_METRICS = {
    "namespace": ANY,
    "histogram": {
        "disable": ANY,
        "unit": enum("ms", "s"),
        "explicit": {"buckets": ANY},
        "exponential": {"max_size": ANY},
        "dimensions": ANY,
    },
    "dimensions": [{"name": ANY, "default": ANY}],
    "calls_dimensions": ANY,
    "exclude_dimensions": ANY,
    "dimensions_cache_size": ANY,
    "resource_metrics_cache_size": ANY,
    "resource_metrics_key_attributes": ANY,
    "aggregation_temporality": enum(
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"
    ),
    "metrics_flush_interval": ANY,
    "metrics_expiration": ANY,
    "exemplars": {"enabled": ANY, "max_per_data_point": ANY},
    "events": ANY,
    "add_resource_attributes": ANY,
    "aggregation_cardinality_limit": ANY,
}
PROMETHEUS_EXPORTER = {
    **HTTP_SERVER,  # confighttp's server settings (endpoint, tls, cors, ...)
    "namespace": ANY,
    "const_labels": ANY,
    "send_timestamps": ANY,
    "metric_expiration": ANY,
    "enable_open_metrics": ANY,
    "translation_strategy": enum(
        "UnderscoreEscapingWithSuffixes",
        "UnderscoreEscapingWithoutSuffixes",
        "NoUTF8EscapingWithSuffixes",
        "NoTranslation",
    ),
    "resource_constant_labels": {"included": ANY, "excluded": ANY},
    "without_scope_info": ANY,
    "sending_queue": ANY,
}
HEALTH_CHECK = {
    "endpoint": ANY,
    "path": ANY,
    "tls": ANY,
    "response_body": ANY,
    "check_collector_pipeline": ANY,
}
PULL_READER = {
    "pull": {
        "exporter": {
            "prometheus": {
                "host": ANY,
                "port": ANY,
                "without_units": ANY,
                "without_type_suffix": ANY,
                "without_scope_info": ANY,
            }
        }
    }
}
TELEMETRY = {
    "resource": ANY,
    "logs": {
        "level": enum("debug", "info", "warn", "error"),
        "development": ANY,
        "encoding": ANY,
        "output_paths": ANY,
        "error_output_paths": ANY,
        "initial_fields": ANY,
        "sampling": ANY,
        "processors": ANY,
    },
    "metrics": {
        "level": enum("none", "basic", "normal", "detailed"),
        "address": ANY,
        "readers": [PULL_READER],
    },
    "traces": ANY,
}

# The components of otelcol-contrib 0.162.0 glassbox uses get a field schema (a dict); the
# others of the distribution are listed by name only (ANY), so using one without a schema
# is allowed but unchecked.
CONTRIB = {
    "receivers": {
        "otlp": OTLP_RECEIVER,
        **dict.fromkeys(
            (
                "prometheus",
                "filelog",
                # Upstream metadata.yaml names them hostmetrics and httpcheck; the
                # OpenTelemetry demo's config (contrib 0.159) spells them host_metrics and
                # http_check. Neither is shown deprecated: both are accepted.
                "hostmetrics",
                "host_metrics",
                "httpcheck",
                "http_check",
                "jaeger",
                "zipkin",
                "kafka",
                "kafkametrics",
                "k8s_cluster",
                "k8s_events",
                "k8sobjects",
                "kubeletstats",
                "statsd",
                "carbon",
                "collectd",
                "fluentforward",
                "syslog",
                "tcplog",
                "udplog",
                "journald",
                "docker_stats",
                "redis",
                "postgresql",
                "mysql",
                "mongodb",
                "nginx",
                "apache",
                "elasticsearch",
                "rabbitmq",
                "sqlquery",
                "awsxray",
                "opencensus",
                "signalfx",
                "splunk_hec",
                "influxdb",
                "loki",
                "receiver_creator",
                "otlpjsonfile",
            ),
            ANY,
        ),
    },
    "processors": {
        "batch": BATCH,
        "memory_limiter": MEMORY_LIMITER,
        "tail_sampling": TAIL_SAMPLING,
        "transform": TRANSFORM,
        **dict.fromkeys(
            (
                "attributes",
                "resource",
                "resourcedetection",  # resource_detection in the demo: both accepted
                "resource_detection",
                "filter",
                "probabilistic_sampler",
                "k8sattributes",
                "groupbyattrs",
                "groupbytrace",
                "metricstransform",
                "cumulativetodelta",
                "deltatocumulative",
                "redaction",
                "routing",
                "span",
                "metricsgeneration",
                "interval",
            ),
            ANY,
        ),
    },
    "exporters": {
        "otlp_grpc": OTLP_EXPORTER,
        "otlp_http": OTLP_HTTP_EXPORTER,
        "prometheus": PROMETHEUS_EXPORTER,
        **dict.fromkeys(
            (
                "debug",
                "nop",
                "prometheusremotewrite",
                "file",
                "kafka",
                "loadbalancing",
                "zipkin",
                "elasticsearch",
                "opensearch",
                "loki",
                "clickhouse",
                "awsxray",
                "datadog",
                "splunk_hec",
                "influxdb",
            ),
            ANY,
        ),
    },
    "extensions": {
        "health_check": HEALTH_CHECK,
        **dict.fromkeys(
            (
                "pprof",
                "zpages",
                "basicauth",
                "bearertokenauth",
                "file_storage",
                "oauth2client",
                "headers_setter",
                "healthcheckv2",
            ),
            ANY,
        ),
    },
    "connectors": {
        "span_metrics": SPAN_METRICS,
        **dict.fromkeys(("servicegraph", "forward", "count", "routing", "exceptions"), ANY),
    },
}

# Old names the current release still accepts with a deprecation warning: refused here.
DEPRECATED_ALIASES = {
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http"},
    "connectors": {"spanmetrics": "span_metrics"},
}

# Jaeger v2 is itself a collector distribution with Jaeger's own extensions and exporter.
JAEGER_STORAGE_BACKEND = {
    "memory": {"max_traces": ANY},
    "badger": ANY,
    "cassandra": ANY,
    "elasticsearch": ANY,
    "opensearch": ANY,
    "grpc": ANY,
}
JAEGER_METRIC_BACKEND = {
    "prometheus": {
        "endpoint": ANY,
        "tls": ANY,
        "connect_timeout": ANY,
        "token_file_path": ANY,
        "token_override_from_context": ANY,
        "metric_namespace": ANY,
        "latency_unit": enum("ms", "s"),
        "normalize_calls": ANY,
        "normalize_duration": ANY,
        "extra_query_parameters": ANY,
    }
}
JAEGER = {
    "receivers": {
        "otlp": OTLP_RECEIVER,
        **dict.fromkeys(("jaeger", "zipkin", "kafka", "nop"), ANY),
    },
    "processors": {
        "batch": BATCH,
        "memory_limiter": MEMORY_LIMITER,
        **dict.fromkeys(
            ("adaptive_sampling", "attributes", "filter", "resource", "tail_sampling"), ANY
        ),
    },
    "exporters": {
        "jaeger_storage_exporter": {"trace_storage": ANY, **QUEUE_AND_RETRY},
        **dict.fromkeys(("otlp_grpc", "otlp_http", "debug", "kafka", "nop"), ANY),
    },
    "extensions": {
        "jaeger_storage": {
            "backends": ("map of", JAEGER_STORAGE_BACKEND),
            "metric_backends": ("map of", JAEGER_METRIC_BACKEND),
        },
        "jaeger_query": {
            "storage": {"traces": ANY, "traces_archive": ANY, "metrics": ANY},
            "base_path": ANY,
            "ui": {"config_file": ANY, "log_access": ANY},
            "grpc": ANY,
            "http": ANY,
            "max_clock_skew_adjust": ANY,
            "enable_tracing": ANY,
        },
        "healthcheckv2": {
            "use_v2": ANY,
            "http": {"endpoint": ANY, "status": ANY, "config": ANY},
            "grpc": ANY,
            "component_health": ANY,
        },
        **dict.fromkeys(
            ("remote_sampling", "expvar", "zpages", "pprof", "storage_cleaner", "remote_storage"),
            ANY,
        ),
    },
    "connectors": dict.fromkeys(("forward", "span_metrics"), ANY),
}

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
PIPELINE_SIGNALS = ("traces", "metrics", "logs")


def check_fields(value: Any, spec: Any, path: str) -> list[str]:
    """Problems of `value` against a spec: unknown keys, values outside an enumeration."""
    if spec is ANY or value is None:
        return []
    if isinstance(spec, tuple) and spec[0] == "one of":
        return [] if value in spec[1] else [f"{path}: {value!r} is not one of {spec[1]}"]
    if isinstance(spec, tuple) and spec[0] == "map of":
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        return [p for k, v in value.items() for p in check_fields(v, spec[1], f"{path}.{k}")]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in check_fields(v, spec[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {value!r}"]
    problems = [f"{path}: unknown field {key!r}" for key in value if key not in spec]
    for key, sub in value.items():
        if key in spec:
            problems += check_fields(sub, spec[key], f"{path}.{key}")
    return problems


def component_type(component_id: str) -> str:
    """`otlp/jaeger` -> `otlp` (a component id is type[/name])."""
    return component_id.split("/", 1)[0]


def check_config(config: dict[str, Any], known: dict[str, dict[str, Any]]) -> list[str]:
    """Every problem the collector (of the version `known` describes) would refuse at start,
    as far as this schema knows it."""
    problems: list[str] = []
    for key in config:
        if key not in (*KINDS, "service"):
            problems.append(f"unknown top-level section {key!r}")
    for kind in KINDS:
        for component_id, settings in (config.get(kind) or {}).items():
            kind_known = known[kind]
            name = component_type(component_id)
            if name in DEPRECATED_ALIASES.get(kind, {}):
                current = DEPRECATED_ALIASES[kind][name]
                problems.append(f"{kind}.{component_id}: deprecated alias, use {current!r}")
                continue
            if name not in kind_known:
                problems.append(f"{kind}.{component_id}: no {name!r} in this distribution")
                continue
            problems += check_fields(settings, kind_known[name], f"{kind}.{component_id}")
    service = config.get("service") or {}
    problems += check_fields(
        service,
        {"extensions": ANY, "pipelines": ANY, "telemetry": TELEMETRY},
        "service",
    )
    for extension in service.get("extensions", []):
        if extension not in (config.get("extensions") or {}):
            problems.append(f"service.extensions: {extension!r} is not defined")
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for pipeline_id, pipeline in (service.get("pipelines") or {}).items():
        if component_type(pipeline_id) not in PIPELINE_SIGNALS:
            problems.append(f"service.pipelines.{pipeline_id}: not a signal")
        for key in pipeline:
            if key not in ("receivers", "processors", "exporters"):
                problems.append(f"service.pipelines.{pipeline_id}: unknown field {key!r}")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"service.pipelines.{pipeline_id}: needs receivers and exporters")
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                defined = component_id in (config.get(kind) or {})
                connector = component_id in (config.get("connectors") or {})
                if not (defined or (connector and kind != "processors")):
                    problems.append(
                        f"service.pipelines.{pipeline_id}.{kind}: {component_id!r} undefined"
                    )
                used["connectors" if connector else kind].add(component_id)
    used["extensions"] = set(service.get("extensions", []))
    for kind in KINDS:
        for component_id in config.get(kind) or {}:
            if component_id not in used[kind]:
                problems.append(f"{kind}.{component_id}: defined but never used")
    return problems

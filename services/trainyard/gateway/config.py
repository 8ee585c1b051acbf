"""Renders the Envoy configuration: one listener, the JSON transcoder, the status Lua filter,
JSON local replies, /healthz, and one HTTP/2 cluster per service with gRPC health checks."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainyard.gateway.descriptors import SERVICES, descriptor_set, streaming_methods

LUA_STATUS = (Path(__file__).parent / "status.lua").read_text()

UNARY_TIMEOUT = "120s"
# Active gRPC health checks of every upstream: /healthz turns 503 within
# interval * unhealthy_threshold (0.8 s) of a service dying; a check is 2 gRPC calls a second.
HEALTH_CHECK_INTERVAL_SECONDS = 0.4
HEALTH_CHECK_UNHEALTHY_THRESHOLD = 2
HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
_T = "type.googleapis.com/envoy.extensions."

# HTTP status of Envoy's own replies -> the gRPC code number used in every JSON error body.
_LOCAL_REPLY_CODES = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    405: 12,
    408: 4,
    413: 8,
    429: 8,
    500: 13,
    501: 12,
    502: 14,
    503: 14,
    504: 4,
}


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _cluster(name: str, address: str) -> dict[str, Any]:
    host, port = _split(address)
    try:
        ipaddress.ip_address(host)
        discovery = "STATIC"
    except ValueError:
        discovery = "STRICT_DNS"
    return {
        "name": name,
        "type": discovery,
        "connect_timeout": "5s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "initial_stream_window_size": 16 * 1024 * 1024,
                        "initial_connection_window_size": 32 * 1024 * 1024,
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": f"{HEALTH_CHECK_TIMEOUT_SECONDS}s",
                "interval": f"{HEALTH_CHECK_INTERVAL_SECONDS}s",
                "no_traffic_interval": f"{HEALTH_CHECK_INTERVAL_SECONDS}s",
                "unhealthy_threshold": HEALTH_CHECK_UNHEALTHY_THRESHOLD,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
    }


def _routes(upstreams: Mapping[str, str]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for service in upstreams:
        for full_name in SERVICES[service]:
            # Streams (uploads, log follow) must not be cut by a route timeout.
            for path in streaming_methods(full_name):
                routes.append(
                    {
                        "match": {"path": path},
                        "route": {"cluster": service, "timeout": "0s", "idle_timeout": "3600s"},
                    }
                )
            routes.append(
                {
                    "match": {"prefix": f"/{full_name}/"},
                    "route": {"cluster": service, "timeout": UNARY_TIMEOUT},
                }
            )
    return routes


def _local_reply_config() -> dict[str, Any]:
    def body(code: int) -> dict[str, Any]:
        return {
            "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
            "content_type": "application/json",
        }

    healthy = {
        "filter": {
            "status_code_filter": {
                "comparison": {"op": "EQ", "value": {"default_value": 200, "runtime_key": "lr.200"}}
            }
        },
        "body_format_override": {
            "json_format": {"status": "SERVING"},
            "content_type": "application/json",
        },
    }
    return {
        "mappers": [healthy]
        + [
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": status, "runtime_key": f"lr.{status}"},
                        }
                    }
                },
                "body_format_override": body(code),
            }
            for status, code in _LOCAL_REPLY_CODES.items()
        ],
        "body_format": body(2),
    }


def render(
    upstreams: Mapping[str, str],
    *,
    http_host: str = "127.0.0.1",
    http_port: int = 8080,
    admin_host: str = "127.0.0.1",
    admin_port: int = 0,
    descriptor_path: Path | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap for `upstreams` (service name -> host:port). The descriptor set is
    inlined unless `descriptor_path` names a file holding it."""
    unknown = set(upstreams) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services: {sorted(unknown)}")
    transcoded = [name for svc in upstreams for name in SERVICES[svc]]
    transcoder: dict[str, Any] = {
        "@type": _T + "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "services": transcoded,
        "print_options": {
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": True,
            "stream_sse_style_delimited": True,
        },
        "convert_grpc_status": True,
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
        "max_request_body_size": 16 * 1024 * 1024,
        "max_response_body_size": 64 * 1024 * 1024,
    }
    if descriptor_path is not None:
        transcoder["proto_descriptor"] = str(descriptor_path)
    else:
        transcoder["proto_descriptor_bin"] = base64.b64encode(descriptor_set()).decode()
    hcm = {
        "@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "stream_idle_timeout": "3600s",
        "request_timeout": "0s",
        "common_http_protocol_options": {"idle_timeout": "3600s"},
        "http2_protocol_options": {
            "initial_stream_window_size": 16 * 1024 * 1024,
            "initial_connection_window_size": 32 * 1024 * 1024,
        },
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "trainyard",
            "virtual_hosts": [
                {"name": "trainyard", "domains": ["*"], "routes": _routes(upstreams)}
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": _T + "filters.http.health_check.v3.HealthCheck",
                    "pass_through_mode": False,
                    "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
                    "cluster_min_healthy_percentages": {svc: {"value": 100.0} for svc in upstreams},
                },
            },
            {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": _T + "filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": LUA_STATUS},
                },
            },
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": http_host, "port_value": http_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(svc, addr) for svc, addr in upstreams.items()],
        },
    }

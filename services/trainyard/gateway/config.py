"""Renders the Envoy configuration: one listener, the JSON transcoder, the edge Lua filter
(request limits, 405, status fix-ups), JSON local replies, /healthz, and one HTTP/2 cluster per
service with gRPC health checks."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainyard.gateway.descriptors import (
    SERVICES,
    HttpRoute,
    descriptor_set,
    http_routes,
    streaming_methods,
)
from trainyard.runtime.http import CLIENT_ADDRESS_HEADER
from trainyard.runtime.untrusted import MAX_JSON_DEPTH

LUA_STATUS = (Path(__file__).parent / "status.lua").read_text()

# Edge limits of REST requests, stated once (the README's "Limits" lists them). Envoy refuses
# anything beyond them before a service sees it; the gRPC servers accept more than these
# (runtime/server.py), so no limit ever surfaces as gRPC's RESOURCE_EXHAUSTED (429).
#: Longest :path (path + query string) in bytes; longer is 414.
MAX_URL_BYTES = 4096
#: Largest request head (request line + headers) in KiB; larger is 431 (Envoy's own check).
MAX_REQUEST_HEADERS_KB = 32
#: Request body limit of a REST route whose body is not streamed; larger is 413.
DEFAULT_BODY_LIMIT = 64 * 1024
#: Routes that differ from DEFAULT_BODY_LIMIT, by gRPC method. Streamed bodies (uploads,
#: clustering training data) have no edge limit: their services enforce theirs while streaming.
BODY_LIMITS: dict[str, int] = {
    "trainyard.api.auth.v1.AuthService/IssueToken": 16 * 1024,
    "trainyard.api.finetuning.v1.FinetuningService/CreateGoldenRecords": 1024 * 1024,
    "trainyard.api.clustering.v1.ClusteringTrainingService/AssignClusters": 1024 * 1024,
}
#: Envoy buffers a checked body up to this (its per-connection buffer limit, 1 MiB by default);
#: no route limit may exceed it.
EDGE_BUFFER_BYTES = 1024 * 1024


def body_limit(route: HttpRoute) -> int | None:
    """The edge body limit of `route` in bytes; None for streamed bodies."""
    if route.streamed:
        return None
    return BODY_LIMITS.get(route.method, DEFAULT_BODY_LIMIT)


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
    414: 8,
    429: 8,
    431: 8,
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


def _lua_pattern(template: str) -> str:
    """A Lua pattern matching the paths of a google.api.http template."""
    out = []
    for piece in re.split(r"({[^}]*}|\*\*|\*)", template):
        if not piece:
            continue
        if piece == "**" or (piece.startswith("{") and "**" in piece):
            out.append(".+")
        elif piece == "*" or piece.startswith("{"):
            out.append("[^/]+")
        else:
            out.append(re.sub(r"([%^$().\[\]*+\-?])", r"%\1", piece))
    return "^" + "".join(out) + "$"


def _lua_routes(upstreams: Mapping[str, str]) -> str:
    """The ROUTES table of the Lua filter: every REST template of the served services with its
    methods, body limits and whether its body is JSON; literal templates first."""
    names = [n for svc in upstreams for n in SERVICES[svc]]
    by_pattern: dict[str, dict[str, HttpRoute]] = {}
    for route in http_routes(names):
        by_pattern.setdefault(_lua_pattern(route.template), {})[route.verb] = route
    order = sorted(by_pattern, key=lambda p: (p.count("[^/]+") + p.count(".+"), p))
    lines = ["ROUTES = {"]
    for pattern in order:
        methods = by_pattern[pattern]
        allow = ", ".join(sorted(methods))
        cells = []
        for verb, route in sorted(methods.items()):
            limit = body_limit(route)
            assert limit is None or limit <= EDGE_BUFFER_BYTES, route
            json_body = "true" if route.body_is_json else "false"
            cells.append(
                f"{verb} = {{limit = {-1 if limit is None else limit}, json = {json_body}}}"
            )
        lines.append(
            f'  {{pattern = "{pattern}", allow = "{allow}", methods = {{{", ".join(cells)}}}}},'
        )
    lines.append("}")
    return "\n".join(lines)


def lua_source(upstreams: Mapping[str, str]) -> str:
    """The Lua filter: generated limits and route table, then status.lua."""
    prelude = (
        "-- Generated by trainyard.gateway.config; do not edit.\n"
        f"LIMITS = {{url = {MAX_URL_BYTES}, depth = {MAX_JSON_DEPTH}}}\n"
        + _lua_routes(upstreams)
        + "\n\n"
    )
    return prelude + LUA_STATUS


# Envoy's own text for these names its connection internals ("upstream connect error or
# disconnect/reset before headers. reset reason: ..."): say what it means instead.
_LOCAL_REPLY_MESSAGES = {
    502: "the service behind this route answered with something that is not gRPC",
    503: "the service behind this route is unavailable; try again shortly",
    504: "the service behind this route did not answer in time",
}


def _local_reply_config() -> dict[str, Any]:
    def body(code: int, message: str = "%LOCAL_REPLY_BODY%") -> dict[str, Any]:
        return {
            "json_format": {"code": code, "message": message, "details": []},
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
                "body_format_override": body(
                    code, _LOCAL_REPLY_MESSAGES.get(status, "%LOCAL_REPLY_BODY%")
                ),
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
    xff_trusted_hops: int = 0,
) -> dict[str, Any]:
    """The Envoy bootstrap for `upstreams` (service name -> host:port). The descriptor set is
    inlined unless `descriptor_path` names a file holding it. `xff_trusted_hops` counts the
    proxies in front of Envoy (a load balancer: 1) whose x-forwarded-for entries are trusted
    when Envoy works out the client's address."""
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
        # The Lua filter refuses bodies over their route's limit first; this is a backstop.
        "max_request_body_size": EDGE_BUFFER_BYTES,
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
        # The client's address, as Envoy works it out (the peer, or the entry `xff_trusted_hops`
        # from the right of x-forwarded-for), reaches the services as CLIENT_ADDRESS_HEADER,
        # overwriting whatever a client sent: e.g. the failed-login limit of /connect/token.
        "use_remote_address": True,
        "xff_num_trusted_hops": xff_trusted_hops,
        "stream_idle_timeout": "3600s",
        "request_timeout": "0s",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "common_http_protocol_options": {"idle_timeout": "3600s"},
        "http2_protocol_options": {
            "initial_stream_window_size": 16 * 1024 * 1024,
            "initial_connection_window_size": 32 * 1024 * 1024,
        },
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "trainyard",
            "request_headers_to_add": [
                {
                    "header": {
                        "key": CLIENT_ADDRESS_HEADER,
                        "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
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
                    "default_source_code": {"inline_string": lua_source(upstreams)},
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

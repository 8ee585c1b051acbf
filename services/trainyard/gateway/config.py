"""Renders the Envoy configuration: one listener, the JSON transcoder, the edge Lua filter
(request limits, 405, status fix-ups), JSON local replies, /healthz, and one HTTP/2 cluster per
service with gRPC health checks.

The static parts live in envoy/bootstrap.yaml and the filter's code in envoy/status.lua at the
top of the repository (envoy/README.md); render() fills the template's ${...} values and its
slots with what is generated from the catalogue and the contract. The package finds them as
trainyard/gateway/envoy, a symlink to the top-level folder that the wheel ships as data."""

from __future__ import annotations

import base64
import ipaddress
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from trainyard.gateway.descriptors import (
    SERVICES,
    HttpRoute,
    descriptor_set,
    http_routes,
    streaming_methods,
)
from trainyard.runtime.http import CLIENT_ADDRESS_HEADER
from trainyard.runtime.untrusted import MAX_JSON_DEPTH

#: envoy/ at the top of the repository (a symlink here; a copy in an installed wheel).
ENVOY_DIR = Path(__file__).parent / "envoy"
LUA_STATUS = (ENVOY_DIR / "status.lua").read_text()
BOOTSTRAP_TEMPLATE = (ENVOY_DIR / "bootstrap.yaml").read_text()
_SLOT = "slot: "
_MERGE_SLOT = "slot+: "

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
    # NDB search (up to 1,000 queries) and feedback (up to 1,000 pairs a call).
    "trainyard.api.orchestrator.v1.ModelService/Search": 1024 * 1024,
    "trainyard.api.orchestrator.v1.ModelService/Upvote": 1024 * 1024,
    "trainyard.api.orchestrator.v1.ModelService/Associate": 1024 * 1024,
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


def fill_template(template: str, values: Mapping[str, Any], slots: Mapping[str, Any]) -> Any:
    """envoy/bootstrap.yaml with its ${name} `values` substituted, then every "slot: name" value
    replaced by slots[name] and every "slot+: name" key by the entries of slots[name]. Every
    slot must be used exactly as given; a missing or unused one is an error."""
    tree = yaml.safe_load(string.Template(template).substitute(values))
    used: set[str] = set()

    def fill(node: Any) -> Any:
        if isinstance(node, str) and node.startswith(_SLOT):
            name = node.removeprefix(_SLOT)
            used.add(name)
            return slots[name]
        if isinstance(node, list):
            return [fill(item) for item in node]
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if isinstance(key, str) and key.startswith(_MERGE_SLOT):
                    name = key.removeprefix(_MERGE_SLOT)
                    used.add(name)
                    out.update(slots[name])
                else:
                    out[key] = fill(value)
            return out
        return node

    filled = fill(tree)
    unused = set(slots) - used
    if unused:
        raise ValueError(f"slots not in the template: {sorted(unused)}")
    return filled


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
    descriptor: dict[str, str] = (
        {"proto_descriptor": str(descriptor_path)}
        if descriptor_path is not None
        else {"proto_descriptor_bin": base64.b64encode(descriptor_set()).decode()}
    )
    bootstrap: dict[str, Any] = fill_template(
        BOOTSTRAP_TEMPLATE,
        {
            "http_host": http_host,
            "http_port": int(http_port),
            "admin_host": admin_host,
            "admin_port": int(admin_port),
            "xff_trusted_hops": int(xff_trusted_hops),
            "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
            "edge_buffer_bytes": EDGE_BUFFER_BYTES,
            "client_address_header": CLIENT_ADDRESS_HEADER,
        },
        {
            "local_reply_config": _local_reply_config(),
            "routes": _routes(upstreams),
            "cluster_min_healthy_percentages": {svc: {"value": 100.0} for svc in upstreams},
            "lua_source": lua_source(upstreams),
            "transcoded_services": [name for svc in upstreams for name in SERVICES[svc]],
            "descriptor": descriptor,
            "clusters": [_cluster(svc, addr) for svc, addr in upstreams.items()],
        },
    )
    return bootstrap

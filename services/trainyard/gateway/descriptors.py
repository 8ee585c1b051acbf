"""The descriptor set Envoy's transcoder needs, built from the generated modules (no protoc)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from trainyard.catalogue import CATALOGUE

# Every public service Envoy transcodes, by owning process (from the catalogue).
SERVICES: dict[str, tuple[str, ...]] = {s.name: s.proto_services for s in CATALOGUE}

_MODULES = (
    *(module for s in CATALOGUE for module in s.proto_modules),
    # Without these Envoy returns an empty body for errors that carry details.
    "google.rpc.status_pb2",
    "google.rpc.error_details_pb2",
)


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in _MODULES]


def service_descriptor(full_name: str) -> ServiceDescriptor:
    for module in _modules():
        for svc in module.DESCRIPTOR.services_by_name.values():
            if svc.full_name == full_name:
                found: ServiceDescriptor = svc
                return found
    raise KeyError(full_name)


def descriptor_set() -> bytes:
    """A FileDescriptorSet of every service file and its imports, dependencies first."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(fds.file.add())

    for module in _modules():
        add(module.DESCRIPTOR)
    return fds.SerializeToString()


def streaming_methods(full_name: str) -> list[str]:
    """`/pkg.Service/Method` paths of methods that stream in either direction."""
    svc = service_descriptor(full_name)
    return [
        f"/{svc.full_name}/{m.name}"
        for m in svc.methods
        if m.client_streaming or m.server_streaming
    ]


@dataclass(frozen=True)
class HttpRoute:
    """One google.api.http binding of a public RPC: what REST request reaches which method."""

    verb: str  # GET, POST, ...
    template: str  # /training-jobs/{name}
    method: str  # pkg.Service/Method
    body: str  # "", "*" or the request field the body fills
    body_is_json: bool  # the transcoder parses the body as JSON (not a google.api.HttpBody)
    streamed: bool  # the request body streams (uploads): no edge body limit


_VERBS = ("get", "post", "put", "patch", "delete")


def http_routes(services: list[str] | None = None) -> list[HttpRoute]:
    """Every REST binding of `services` (default: all public ones), from the contract."""
    names = services if services is not None else [n for s in SERVICES.values() for n in s]
    out: list[HttpRoute] = []
    for full_name in names:
        svc = service_descriptor(full_name)
        for m in svc.methods:
            opts = m.GetOptions()
            if not opts.HasExtension(annotations_pb2.http):
                continue
            rule: http_pb2.HttpRule = opts.Extensions[annotations_pb2.http]
            for binding in [rule, *rule.additional_bindings]:
                verb = next(v for v in _VERBS if getattr(binding, v))
                body = binding.body
                field = m.input_type.fields_by_name.get(body) if body and body != "*" else None
                is_http_body = (
                    field is not None
                    and field.message_type is not None
                    and field.message_type.full_name == "google.api.HttpBody"
                ) or (body == "*" and m.input_type.full_name == "google.api.HttpBody")
                out.append(
                    HttpRoute(
                        verb=verb.upper(),
                        template=getattr(binding, verb),
                        method=f"{svc.full_name}/{m.name}",
                        body=body,
                        body_is_json=bool(body) and not is_http_body,
                        streamed=m.client_streaming,
                    )
                )
    return out

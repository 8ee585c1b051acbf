"""Generate openapi/trainyard.json, the REST surface as Envoy serves it, from protos/.

    python scripts/gen_openapi.py           # regenerate
    python scripts/gen_openapi.py --check   # fail if the committed document is stale

Paths, methods and bodies come from the google.api.http rules; schemas from the messages with
their original field names (Envoy prints proto names; int64 fields are JSON strings); the
descriptions are the proto comments; security from the auth_policy option; required fields from
google.api.field_behavior; the error statuses of each route from what the gateway and the
services enforce (see `_responses`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

# Registers the auth_policy extension, so the parsed MethodOptions carry it.
from trainyard.api.options.v1 import options_pb2
from trainyard.gateway.config import body_limit
from trainyard.gateway.descriptors import HttpRoute
from trainyard.runtime.protoc import run_protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GOOGLEAPIS = ROOT / "third_party" / "googleapis"
OUT = ROOT / "openapi" / "trainyard.json"
POLICY_NAMES = {1: "public", 2: "user", 3: "job", 4: "service"}
#: Minimums of request fields, by name, that every service enforces through one helper
#: (page_size: trainyard.runtime.pagination.checked_page_size).
MINIMUMS = {"page_size": 0}
#: The servicer class implementing each public service; a service that is missing here is
#: registered with its generated base class, so every RPC of it answers 501 for now. An RPC its
#: class does not override answers 501 as well.
SERVICERS = {
    "trainyard.api.upload.v1.UploadService": "trainyard.upload.servicer:UploadServicer",
    "trainyard.api.orchestrator.v1.TrainService": "trainyard.orchestrator.servicer:TrainServicer",
    "trainyard.api.auth.v1.AuthService": "trainyard.orchestrator.servicer:AuthServicer",
    "trainyard.api.jobrunner.v1.TrainingJobsService": (
        "trainyard.jobrunner.servicer:TrainingJobsServicer"
    ),
}
#: Error descriptions particular to one RPC, beyond those every route of its kind can return.
#: HTTP statuses that are not the gRPC code's mapping (201, 202, 413, 422, 507) are not listed
#: here: they come from the RPC's options (success_http_status, validation_http_status,
#: http_statuses in trainyard/api/options/v1/options.proto), which the services obey too.
EXTRA_STATUSES: dict[str, dict[str, str]] = {
    "AuthService/IssueToken": {
        "401": "unknown client_id or wrong client_secret",
        "429": "too many failed attempts for this client_id or source address; see Retry-After",
    },
    "TrainingJobsService/CreateTrainingJob": {"404": "no such pipeline is registered"},
}
#: What a create RPC's answer names, for OpenAPI links to the routes of that object: the path
#: parameter it fills and the runtime expression that reads it from the 200 body.
CREATES: dict[str, tuple[str, str]] = {
    "UploadService/UploadData": ("upload_id", "$response.body#/upload_id"),
    "TrainingJobsService/CreateTrainingJob": ("name", "$response.body"),
}
#: The form fields of multipart routes, by RPC (the body streams to the service as it comes).
MULTIPART_FORMS: dict[str, dict[str, Any]] = {
    "UploadService/UploadData": {
        "type": "object",
        "description": "one or more file parts (any field name); each is stored under its "
        "sanitized file name",
        "properties": {"file": {"type": "string", "format": "binary"}},
        "required": ["file"],
        "additionalProperties": {"type": "string", "format": "binary"},
    },
}
STATUS_TEXT = {
    "400": "invalid request: malformed JSON, an unknown query parameter, an invalid field "
    "(google.rpc.BadRequest names it), JSON nested deeper than 32 levels",
    "401": "missing, malformed or expired bearer token",
    "403": "the token may not use this route or this object",
    "404": "no such object (or not yours)",
    "413": "the body is over the route's limit (see the description)",
    "414": "the URL is longer than 4096 bytes",
    "422": "a valid request the domain refuses (Model Bazaar validation)",
    "429": "rate limited; retry after Retry-After seconds",
    "431": "the request headers are larger than 32 KiB",
    "501": "not implemented yet",
    "507": "insufficient storage",
}

SCALARS: dict[int, dict[str, Any]] = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: {"type": "string", "format": "int64"},
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: {"type": "integer", "format": "int64"},
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: {"type": "boolean"},
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: {"type": "string"},
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "example": "30s"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {"type": "object", "additionalProperties": True},
}


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        run_protoc(
            PROTOS,
            GOOGLEAPIS,
            ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}"],
        )
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


class Builder:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        self.locations: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.files = list(fds.file)
        for fd in self.files:
            for loc in fd.source_code_info.location:
                text = (loc.leading_comments or loc.trailing_comments).strip()
                if text:
                    self.comments[(fd.name, tuple(loc.path))] = " ".join(text.split())
            for i, msg in enumerate(fd.message_type):
                self._index(fd, f".{fd.package}", msg, (4, i))
            for i, enum in enumerate(fd.enum_type):
                self.enums[f".{fd.package}.{enum.name}"] = enum
                self.locations[f".{fd.package}.{enum.name}"] = (fd.name, (5, i))
        self.schemas: dict[str, Any] = {}

    def _index(self, fd: Any, scope: str, msg: Any, path: tuple[int, ...]) -> None:
        name = f"{scope}.{msg.name}"
        self.messages[name] = msg
        self.locations[name] = (fd.name, path)
        for i, nested in enumerate(msg.nested_type):
            self._index(fd, name, nested, (*path, 3, i))
        for i, enum in enumerate(msg.enum_type):
            self.enums[f"{name}.{enum.name}"] = enum
            self.locations[f"{name}.{enum.name}"] = (fd.name, (*path, 4, i))

    def comment(self, type_name: str, *sub: int) -> str:
        file, path = self.locations[type_name]
        return self.comments.get((file, (*path, *sub)), "")

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder against recursion
            self.schemas[key] = (
                self._enum(type_name) if type_name in self.enums else self._message(type_name)
            )
        return {"$ref": f"#/components/schemas/{key}"}

    def _enum(self, type_name: str) -> dict[str, Any]:
        enum = self.enums[type_name]
        return {
            "type": "string",
            "enum": [v.name for v in enum.value],
            "description": self.comment(type_name),
        }

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in SCALARS:
            schema = dict(SCALARS[field.type])
            if field.name in MINIMUMS and field.type in _INTEGERS:
                schema["minimum"] = MINIMUMS[field.name]
        else:
            msg = self.messages.get(field.type_name)
            if msg is not None and msg.options.map_entry:
                value = next(f for f in msg.field if f.name == "value")
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            schema = self.ref(field.type_name)
        if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def _message(self, type_name: str, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        msg = self.messages[type_name]
        props: dict[str, Any] = {}
        for i, field in enumerate(msg.field):
            if field.name in skip:
                continue
            schema = self.field_schema(field)
            text = self.comment(type_name, 2, i)
            if text:
                schema = (
                    {**schema, "description": text}
                    if "$ref" not in schema
                    else {"allOf": [schema], "description": text}
                )
            props[field.name] = schema
        out: dict[str, Any] = {
            "type": "object",
            "description": self.comment(type_name),
            "properties": props,
            # The transcoder drops keys that are not fields and refuses an empty key (400).
            "additionalProperties": False,
        }
        required = [f.name for f in msg.field if f.name not in skip and _required(f)]
        if required:
            out["required"] = required
        return out

    def message_inline(self, type_name: str, skip: set[str]) -> dict[str, Any]:
        if not skip:
            return self.ref(type_name)
        return self._message(type_name, frozenset(skip))


_INTEGERS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
}


def _required(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    behaviors = field.options.Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors


def _implemented(service_full_name: str, method: str) -> bool:
    ref = SERVICERS.get(service_full_name)
    if ref is None:
        return False
    module, _, name = ref.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return any(
        method in vars(klass)
        for klass in cls.__mro__[:-1]
        if "Servicer" in klass.__name__ and not klass.__module__.startswith("trainyard.api.")
    )


def _responses(
    service: str,
    method_proto: descriptor_pb2.MethodDescriptorProto,
    policy: int,
    template: str,
    has_body: bool,
    implemented: bool,
) -> dict[str, Any]:
    """The other statuses a route can return: every route 400/414/431 (the edge checks), 413
    when it takes a body, 401/403 unless public, 404 with a path parameter or a job token's
    model, the RPC's own (its validation_http_status and http_statuses options, and
    EXTRA_STATUSES), 501 while unimplemented."""
    method = method_proto.name
    opts = method_proto.options
    codes = {"400", "414", "431"}
    if has_body:
        codes.add("413")
    if policy != options_pb2.AUTH_POLICY_PUBLIC:
        codes |= {"401", "403"}
    if _path_params(template) or policy == options_pb2.AUTH_POLICY_JOB:
        codes.add("404")
    extra = dict(EXTRA_STATUSES.get(f"{service}/{method}", {}))
    validation = opts.Extensions[options_pb2.validation_http_status]
    if validation and validation != 400:
        extra[str(validation)] = "the request breaks field rules: every violation at once"
    for status in opts.Extensions[options_pb2.http_statuses]:
        extra[str(status.code)] = status.when
    codes |= set(extra)
    if not implemented:
        codes.add("501")
    out: dict[str, Any] = {}
    for code in sorted(codes):
        ref: dict[str, Any] = {"$ref": f"#/components/responses/E{code}"}
        out[code] = (
            {**_error_response(extra[code]), **({"headers": _RETRY_AFTER} if code == "429" else {})}
            if code in extra
            else ref
        )
    return out


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until a new attempt can succeed",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _path_params(template: str) -> list[str]:
    return re.findall(r"{([^}=]+)", template)


def build(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    b = Builder(fds)
    paths: dict[str, dict[str, Any]] = {}
    for fd in b.files:
        if not fd.package.startswith("trainyard.api."):
            continue
        for si, svc in enumerate(fd.service):
            for mi, method in enumerate(svc.method):
                opts = method.options
                if not opts.HasExtension(annotations_pb2.http):
                    continue
                rule = opts.Extensions[annotations_pb2.http]
                policy = opts.Extensions[options_pb2.auth_policy] or options_pb2.AUTH_POLICY_USER
                text = b.comments.get((fd.name, (6, si, 2, mi)), "")
                for n, binding in enumerate([rule, *rule.additional_bindings]):
                    verb, template = _verb(binding)
                    op = _operation(
                        b, fd.package, svc.name, method, binding, template, text, policy
                    )
                    if n:
                        op["operationId"] += f"_{n + 1}"
                    paths.setdefault(re.sub(r"{([^}=]+)=[^}]*}", r"{\1}", template), {})[verb] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Trainyard",
            "version": "v1",
            "description": "The REST surface Envoy serves (transcoded to gRPC). Generated from "
            "protos/ by scripts/gen_openapi.py; do not edit. Limits on every route: URLs up to "
            "4096 bytes (414), request headers up to 32 KiB (431), JSON nested at most 32 levels "
            "(400), bodies up to 64 KiB unless the route says otherwise (413; uploads stream with "
            "the upload service's limits). A method a path does not list is 405 with an Allow "
            "header. Object bodies take only the listed fields: other keys are dropped by the "
            "gateway and an empty key is refused. Errors may also be 500 (an internal error, "
            "with a correlation id) or 503 (a service is unavailable).",
        },
        "paths": _with_links(dict(sorted(paths.items()))),
        "components": {
            "responses": {f"E{code}": _error_response(text) for code, text in STATUS_TEXT.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                **dict(sorted(b.schemas.items())),
                "Error": {
                    "type": "object",
                    "description": "Every error: a gRPC code number, a message saying what to "
                    "fix, and google.rpc details (ErrorInfo, BadRequest).",
                    "properties": {
                        "code": {"type": "integer"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    }


def _with_links(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Link each create RPC's 200 answer to every route of the object it created (OpenAPI
    links: clients and stateful fuzzers follow them from a new object to its reads/deletes)."""
    for ops in paths.values():
        for op in ops.values():
            created = CREATES.get(op["operationId"].replace("_", "/", 1))
            if created is None:
                continue
            parameter, expression = created
            links = {
                other["operationId"]: {
                    "operationId": other["operationId"],
                    "parameters": {parameter: expression},
                }
                for template, other_ops in paths.items()
                if "{" + parameter + "}" in template
                for other in other_ops.values()
            }
            ok = next(code for code in op["responses"] if code.startswith("2"))
            op["responses"][ok]["links"] = dict(sorted(links.items()))
    return paths


def _verb(binding: http_pb2.HttpRule) -> tuple[str, str]:
    for verb in ("get", "post", "put", "patch", "delete"):
        template = getattr(binding, verb)
        if template:
            return verb, template
    raise ValueError(f"unsupported http rule {binding}")


def _operation(
    b: Builder,
    package: str,
    service: str,
    method: Any,
    binding: Any,
    template: str,
    text: str,
    policy: int,
) -> dict[str, Any]:
    request_type, response_type = method.input_type, method.output_type
    params = set(_path_params(template))
    op: dict[str, Any] = {
        "operationId": f"{service}_{method.name}",
        "summary": text.split(". ")[0][:120],
        "description": text + f" (gRPC: {package}.{service}/{method.name}; callers: "
        f"{POLICY_NAMES.get(policy, 'user')} tokens)",
        "tags": [service],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(template)
        ],
        "responses": {
            "default": {
                "description": "an unexpected error (500 internal, 503 unavailable)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
    }
    if policy != 1:
        op["security"] = [{"bearer": []}]
    request = b.messages[request_type]
    body_field = binding.body
    if body_field == "*":
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": b.message_inline(request_type, params)}},
        }
    elif body_field:
        field = next(f for f in request.field if f.name == body_field)
        if field.type_name == ".google.api.HttpBody":
            # Streamed HttpBody bodies are multipart uploads; the unary one is the token form.
            media = (
                "multipart/form-data"
                if method.client_streaming
                else "application/x-www-form-urlencoded"
            )
            form = MULTIPART_FORMS.get(f"{service}/{method.name}", {"type": "object"})
            op["requestBody"] = {
                "required": True,
                "content": {
                    media: {"schema": form if method.client_streaming else {"type": "object"}}
                },
            }
        else:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": b.field_schema(field)}},
            }
    if body_field != "*":
        for field in request.field:
            if field.name in params or field.name == body_field:
                continue
            if field.type in SCALARS or field.type_name in b.enums:
                param: dict[str, Any] = {
                    "name": field.name,
                    "in": "query",
                    "schema": b.field_schema(field),
                }
                if _required(field):
                    param["required"] = True
                text_ = b.comment(request_type, 2, list(request.field).index(field))
                if text_:
                    param["description"] = text_
                op["parameters"].append(param)
    if method.server_streaming:
        content = {
            "text/event-stream": {
                # Each Server-Sent Event of the stream (OpenAPI 3.0 has no way to type the JSON
                # inside `data`; its shape is the message named in the description).
                "schema": {
                    "type": "object",
                    "description": "one event per message of "
                    + response_type.lstrip(".")
                    + "; `data` is the message as JSON",
                    "properties": {
                        "data": {"type": "string"},
                        "event": {"type": "string"},
                        "id": {"type": "string"},
                    },
                    "required": ["data"],
                }
            }
        }
    elif binding.response_body:
        content = {
            "application/json": {
                "schema": {"description": "exact JSON of the documented API (see the description)"}
            }
        }
    else:
        content = {"application/json": {"schema": b.ref(response_type)}}
    success = method.options.Extensions[options_pb2.success_http_status] or 200
    op["responses"][str(success)] = {"description": "success", "content": content}
    limit = body_limit(
        HttpRoute(
            verb="",
            template=template,
            method=f"{package}.{service}/{method.name}",
            body=body_field,
            body_is_json=False,
            streamed=method.client_streaming,
        )
    )
    if "requestBody" in op:
        op["description"] += (
            f" Body limit: {limit} bytes." if limit is not None else " The body streams."
        )
    op["responses"].update(
        _responses(
            service,
            method,
            policy,
            template,
            "requestBody" in op,
            _implemented(f"{package}.{service}", method.name),
        )
    )
    for code, answer in op["responses"].items():
        if code.startswith("2") and code != str(success):  # e.g. 202: the same answer body
            answer["content"] = content
    return op


def render() -> str:
    return json.dumps(build(descriptor_set()), indent=1, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    text = render()
    if ns.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("openapi/trainyard.json is stale; run ./dev gen and commit")
            return 1
        print("openapi/trainyard.json is up to date")
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

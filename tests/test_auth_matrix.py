"""The authorization matrix, generated from the contract: every RPC of every service, called over
real gRPC against the real services, as each kind of caller. A new RPC is covered the moment it is
in a proto: its `auth_policy` option decides what each caller must get.

Callers: no token, a forged token (right shape, wrong key), an expired token, the owner (alice),
another user (bob), a job token and a service token. By policy:

| policy  | none / forged / expired | user          | job   | service |
|---------|-------------------------|---------------|-------|---------|
| PUBLIC  | not refused for identity (same answer whoever calls)            |
| USER    | 401                     | allowed       | 403   | 403     |
| JOB     | 401                     | 403           | allowed | 403   |
| SERVICE | 401                     | 403           | 403   | allowed |

"allowed" means the RPC ran past authentication (any answer but 401/403 for a caller of the right
kind). For objects, alice owns an upload and a training job; every user RPC whose request names
an object (`upload_id`, `name`, ...) is called with alice's object as bob, and must neither succeed
nor echo alice's object; list RPCs called by bob must not contain it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from tests.support.harness import TEST_SECRET, Harness
from trainyard import services
from trainyard.api.jobrunner.v1 import messages_pb2 as jr_msgs
from trainyard.api.jobrunner.v1 import service_pb2_grpc as jr_svc
from trainyard.api.options.v1 import options_pb2
from trainyard.api.upload.v1 import messages_pb2 as up_msgs
from trainyard.api.upload.v1 import service_pb2_grpc as up_svc
from trainyard.gateway.descriptors import SERVICES, service_descriptor
from trainyard.jobrunner.settings import Pipeline
from trainyard.runtime.auth import TokenAuthority
from trainyard.runtime.interceptors import auth_policy_of
from trainyard.runtime.settings import SERVICE_NAMES, CommonSettings

Code = grpc.StatusCode
REFUSED = (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)


@dataclass(frozen=True)
class Rpc:
    service: str  # owning process
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def policy(self) -> int:
        return auth_policy_of(self.path)

    def __str__(self) -> str:
        return self.path


def _rpcs() -> list[Rpc]:
    return [
        Rpc(service, method)
        for service, full_names in SERVICES.items()
        for full_name in full_names
        for method in service_descriptor(full_name).methods
    ]


RPCS = _rpcs()


@dataclass
class World:
    harness: Harness
    channels: dict[str, grpc.Channel]
    tokens: dict[str, str | None]
    objects: dict[str, str]  # request field name -> alice's object id


def _own_settings(name: str, tmp: Path) -> Any:
    extra: dict[str, Any] = {}
    if name == "jobrunner":
        extra["pipelines"] = {"matrix": Pipeline(command=["python", "-c", "pass"])}
        extra["kill_grace_seconds"] = 1
    return services.settings_class(name)(
        database_url=f"sqlite+aiosqlite:///{tmp / (name + '.db')}", **extra
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    harness = Harness(tmp)
    forger = TokenAuthority("a-different-secret-than-the-platforms-0123")
    authority = harness.authority
    tokens: dict[str, str | None] = {
        "none": None,
        "forged": forger.mint_user("alice"),
        "expired": jwt.encode(
            {"iss": "trainyard", "sub": "alice", "typ": "user", "exp": int(time.time()) - 60},
            TEST_SECRET,
            algorithm="HS256",
        ),
        "alice": authority.mint_user("alice"),
        "bob": authority.mint_user("bob"),
        "job": authority.mint_job("alice", model_id="m-1"),
        "service": authority.mint_service("orchestrator"),
    }
    channels: dict[str, grpc.Channel] = {}
    try:
        for name in SERVICE_NAMES:
            app = harness.loop.run(services.builder(name)(common, _own_settings(name, tmp)))
            running = harness.start_app(name, app)
            channels[name] = grpc.insecure_channel(running.address)
        objects = _alice_objects(channels, tokens["alice"] or "")
        yield World(harness, channels, tokens, objects)
    finally:
        for channel in channels.values():
            channel.close()
        harness.close()


def _md(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _alice_objects(channels: dict[str, grpc.Channel], token: str) -> dict[str, str]:
    uploads = up_svc.UploadServiceStub(channels["upload"])
    created = uploads.UploadData(
        iter([up_msgs.UploadDataRequest(file=up_msgs.FileChunk(filename="a.csv", data=b"x,y\n"))]),
        metadata=_md(token),
        timeout=30,
    )
    jobs = jr_svc.TrainingJobsServiceStub(channels["jobrunner"])
    job = jobs.CreateTrainingJob(
        jr_msgs.CreateTrainingJobRequest(pipeline="matrix"), metadata=_md(token), timeout=30
    )
    return {"upload_id": created.upload_id, "name": job.job_name}


def _request(rpc: Rpc, objects: dict[str, str] | None = None) -> Message:
    cls = message_factory.GetMessageClass(rpc.method.input_type)
    request = cls()
    for field_name, value in (objects or {}).items():
        fd = rpc.method.input_type.fields_by_name.get(field_name)
        if fd is not None and fd.type == fd.TYPE_STRING and not fd.is_repeated:
            setattr(request, field_name, value)
    return request


def _call(world: World, rpc: Rpc, token: str | None, request: Message) -> tuple[Code, bytes]:
    """The status code and the serialized answer (b"" on error)."""
    channel = world.channels[rpc.service]
    out_cls = message_factory.GetMessageClass(rpc.method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": out_cls.FromString,
    }
    md = _md(token)
    try:
        if rpc.method.client_streaming and rpc.method.server_streaming:
            call = channel.stream_stream(rpc.path, **kwargs)
            stream = call(iter([request]), metadata=md, timeout=10)
            answer = b"".join(m.SerializeToString() for m in stream)
        elif rpc.method.client_streaming:
            one = channel.stream_unary(rpc.path, **kwargs)(iter([request]), metadata=md, timeout=10)
            answer = one.SerializeToString()
        elif rpc.method.server_streaming:
            stream = channel.unary_stream(rpc.path, **kwargs)(request, metadata=md, timeout=10)
            answer = b"".join(m.SerializeToString() for m in _bounded(stream))
        else:
            one = channel.unary_unary(rpc.path, **kwargs)(request, metadata=md, timeout=10)
            answer = one.SerializeToString()
    except grpc.RpcError as exc:
        return exc.code(), b""
    return Code.OK, answer


def _bounded(stream: Any, limit: int = 50) -> Iterator[Any]:
    """The first messages of a stream (a watch never ends on its own)."""
    for n, message in enumerate(stream):
        yield message
        if n + 1 >= limit:
            stream.cancel()
            return


def _streams_forever(rpc: Rpc) -> bool:
    return rpc.method.name in ("WatchJobs",)


ANONYMOUS = ("none", "forged", "expired")
ALLOWED: dict[int, set[str]] = {
    options_pb2.AUTH_POLICY_USER: {"alice", "bob"},
    options_pb2.AUTH_POLICY_JOB: {"job"},
    options_pb2.AUTH_POLICY_SERVICE: {"service"},
}


@pytest.mark.parametrize("rpc", RPCS, ids=str)
def test_each_rpc_answers_each_caller_by_its_policy(world: World, rpc: Rpc) -> None:
    request = _request(rpc)
    if rpc.policy == options_pb2.AUTH_POLICY_PUBLIC:
        codes = {who: _call(world, rpc, world.tokens[who], request)[0] for who in world.tokens}
        assert len(set(codes.values())) == 1, f"a public RPC answers by identity: {codes}"
        return
    if _streams_forever(rpc):
        # An allowed watch never ends by itself; the refusals are what this test owns.
        callers = [*ANONYMOUS, *(w for w in world.tokens if w not in ANONYMOUS)]
    else:
        callers = list(world.tokens)
    for who in callers:
        allowed = who in ALLOWED[rpc.policy]
        if allowed and _streams_forever(rpc):
            continue
        code, _ = _call(world, rpc, world.tokens[who], request)
        if who in ANONYMOUS:
            assert code == Code.UNAUTHENTICATED, f"{who}: {code}"
        elif allowed:
            assert code not in REFUSED, f"{who} refused: {code}"
        else:
            assert code == Code.PERMISSION_DENIED, f"{who}: {code}"


USER_RPCS = [r for r in RPCS if r.policy == options_pb2.AUTH_POLICY_USER]


@pytest.mark.parametrize("rpc", USER_RPCS, ids=str)
def test_another_user_never_reaches_alices_objects(world: World, rpc: Rpc) -> None:
    request = _request(rpc, world.objects)
    code, answer = _call(world, rpc, world.tokens["bob"], request)
    names_object = any(f in rpc.method.input_type.fields_by_name for f in world.objects)
    if names_object and code == Code.OK and rpc.method.name.startswith(("Create", "Upload")):
        # Creating bob's own object under a name is not reaching alice's.
        pass
    elif names_object:
        assert code != Code.OK, f"bob reached alice's object: {code}"
    for object_id in world.objects.values():
        assert object_id.encode() not in answer, f"bob's answer carries alice's {object_id}"
    if rpc.method.name.startswith("Delete"):
        return  # the owner's call would delete the objects the other cases use
    # The owner gets past ownership checks on the same request (or the RPC is not built yet).
    owner_code, _ = _call(world, rpc, world.tokens["alice"], request)
    assert owner_code not in REFUSED, owner_code

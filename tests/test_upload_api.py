"""POST /api/v2/train/upload-data and /api/v2/train/uploads as a REST user sees them (real upload
service on SQLite + local storage, behind real Envoy), and the gRPC methods other services use
to resolve and read an upload with a service token."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.support.harness import TEST_SECRET, Harness
from tests.support.wait import eventually
from trainyard.api.upload.v1 import messages_pb2 as msgs
from trainyard.api.upload.v1 import service_pb2_grpc as svc
from trainyard.runtime.settings import CommonSettings
from trainyard.upload.app import build
from trainyard.upload.settings import UploadSettings

MiB = 1024 * 1024
UPLOAD = "/api/v2/train/upload-data"


def start_gateway(tmp: Path, **limits: Any) -> Harness:
    harness = Harness(tmp)
    common = CommonSettings(data_dir=tmp, auth_secret=TEST_SECRET)
    own = UploadSettings(database_url=f"sqlite+aiosqlite:///{tmp / 'upload.db'}", **limits)
    harness.start_app("upload", harness.loop.run(build(common, own)))
    harness.start_envoy()
    return harness


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    harness = start_gateway(tmp_path_factory.mktemp("upload-api"))
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """A second service with small limits: 1 MiB a file, 3 files, 2 MiB in all."""
    harness = start_gateway(
        tmp_path_factory.mktemp("upload-tight"),
        max_file_bytes=MiB,
        max_files=3,
        max_total_bytes=2 * MiB,
    )
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def stub(gateway: Harness) -> Iterator[svc.UploadServiceStub]:
    with grpc.insecure_channel(gateway.servers["upload"].address) as channel:
        yield svc.UploadServiceStub(channel)


def upload(harness: Harness, files: list[tuple[str, bytes]], user: str = "alice") -> httpx.Response:
    """Like `curl -F file=@name ...`: one multipart part per file."""
    return httpx.post(
        harness.http + UPLOAD,
        headers=harness.user_headers(user),
        files=[("file", (name, data, "application/octet-stream")) for name, data in files],
        timeout=60,
    )


def get(harness: Harness, upload_id: str, user: str = "alice") -> httpx.Response:
    return httpx.get(
        f"{harness.http}/api/v2/train/uploads/{upload_id}", headers=harness.user_headers(user)
    )


def stored_files(harness: Harness) -> list[Path]:
    """The files under the upload store; os.walk passes over a folder removed as it lists
    (a cleanup in progress), where rglob would raise."""
    found = []
    for folder, _, names in os.walk(harness.workdir / "uploads"):
        found += [Path(folder) / n for n in names if (Path(folder) / n).is_file()]
    return sorted(found)


def test_one_file(gateway: Harness) -> None:
    data = b"text,label\nhello,1\n"
    resp = upload(gateway, [("train.csv", data)])
    assert resp.status_code == 200, resp.text
    assert list(resp.json()) == ["upload_id"]
    upload_id = resp.json()["upload_id"]

    got = get(gateway, upload_id)
    assert got.status_code == 200
    body = got.json()["upload"]
    assert body["upload_id"] == upload_id and body["owner"] == "alice"
    assert body["total_size_bytes"] == str(len(data))
    [file] = body["files"]
    assert file["name"] == "train.csv" and file["size_bytes"] == str(len(data))
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["local_path"] == "" and file["uri"] == "", "server locations are for services"
    on_disk = gateway.workdir / "uploads" / upload_id / "train.csv"
    assert "file:" not in got.text and str(gateway.workdir.resolve()) not in got.text
    assert on_disk.read_bytes() == data


def test_many_files_keep_their_names_and_order(gateway: Harness) -> None:
    files = [
        ("a.csv", b"1"),
        ("b.json", b"{}"),
        ("a.csv", b"2"),
        ("c.txt", b""),
        ("d", b"x" * 5000),
    ]
    resp = upload(gateway, files)
    assert resp.status_code == 200, resp.text
    body = get(gateway, resp.json()["upload_id"]).json()["upload"]
    assert [(f["name"], int(f["size_bytes"])) for f in body["files"]] == [
        ("a.csv", 1),
        ("b.json", 2),
        ("a (1).csv", 1),
        ("c.txt", 0),
        ("d", 5000),
    ]


def test_a_200_mb_file_streams_through(gateway: Harness) -> None:
    size, block = 200 * MiB, bytes(range(256)) * 4096  # 1 MiB blocks, generated on the fly
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(size // len(block)):
            digest.update(block)
            yield block
        yield b"\r\n--bnd--\r\n"

    resp = httpx.post(
        gateway.http + UPLOAD,
        content=body(),
        headers={**gateway.user_headers(), "content-type": "multipart/form-data; boundary=bnd"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    [file] = get(gateway, resp.json()["upload_id"]).json()["upload"]["files"]
    assert file["size_bytes"] == str(size)
    assert file["sha256"] == digest.hexdigest()


def test_an_empty_body_is_400(gateway: Harness) -> None:
    resp = httpx.post(
        gateway.http + UPLOAD,
        content=b"",
        headers={**gateway.user_headers(), "content-type": "multipart/form-data; boundary=x"},
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == 3
    assert resp.json()["message"].startswith("the upload is empty")
    no_type = httpx.post(gateway.http + UPLOAD, headers=gateway.user_headers())
    assert no_type.status_code == 400 and "empty" in no_type.json()["message"]


def test_multipart_without_a_file_part_is_400(gateway: Harness) -> None:
    resp = httpx.post(
        gateway.http + UPLOAD, headers=gateway.user_headers(), files={"name": (None, b"value")}
    )
    assert resp.status_code == 400
    assert "holds no file part" in resp.json()["message"]


def test_a_body_that_is_not_multipart_is_400(gateway: Harness) -> None:
    resp = httpx.post(gateway.http + UPLOAD, headers=gateway.user_headers(), json={"a": 1})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith(
        "expected a multipart/form-data body, got 'application/json'"
    )
    reason = resp.json()["details"][0]["reason"]
    assert reason == "NOT_MULTIPART"


def test_a_truncated_body_is_400_and_stores_nothing(gateway: Harness) -> None:
    before = stored_files(gateway)
    body = b'--b\r\nContent-Disposition: form-data; name="f"; filename="cut.csv"\r\n\r\n1,2,3'
    resp = httpx.post(
        gateway.http + UPLOAD,
        content=body,
        headers={**gateway.user_headers(), "content-type": "multipart/form-data; boundary=b"},
    )
    assert resp.status_code == 400
    assert "closing boundary" in resp.json()["message"]
    assert stored_files(gateway) == before


class ClientGaveUp(Exception):
    pass


def test_a_client_that_disconnects_mid_upload_leaves_nothing(gateway: Harness) -> None:
    before = stored_files(gateway)

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.csv"\r\n\r\n1\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="f"; filename="gone.bin"\r\n\r\n'
        for _ in range(12):
            yield bytes(MiB)
        raise ClientGaveUp  # httpx drops the connection mid-body

    with pytest.raises(ClientGaveUp):
        httpx.post(
            gateway.http + UPLOAD,
            content=body(),
            headers={
                **gateway.user_headers("frank"),
                "content-type": "multipart/form-data; boundary=b",
            },
            timeout=60,
        )

    # Nothing new stays (a file an earlier test was still removing may go meanwhile).
    def nothing_new() -> bool:
        extra = sorted(str(p.relative_to(gateway.workdir)) for p in stored_files(gateway))
        extra = [p for p in extra if gateway.workdir / p not in set(before)]
        assert not extra, extra
        return True

    eventually(
        nothing_new,
        timeout=30,  # the cancellation reaches the service through Envoy; slow on a loaded box
        message="the cancelled upload's files and marker are removed",
    )
    listed = httpx.get(
        gateway.http + "/api/v2/train/uploads", headers=gateway.user_headers("frank")
    )
    assert listed.json()["uploads"] == []


def test_traversal_filenames_stay_inside_the_upload(gateway: Harness) -> None:
    names = [
        "../../../../tmp/evil.csv",
        "..\\..\\win.ini",
        "..",
        "/etc/passwd",
        "nul\x00byte.txt",
        "z" * 600 + ".csv",
    ]
    body = b""
    for name in names:
        body += (
            b'--b\r\nContent-Disposition: form-data; name="f"; filename="'
            + name.encode()
            + b'"\r\n\r\ndata\r\n'
        )
    body += b"--b--\r\n"
    resp = httpx.post(
        gateway.http + UPLOAD,
        content=body,
        headers={**gateway.user_headers(), "content-type": "multipart/form-data; boundary=b"},
    )
    assert resp.status_code == 200, resp.text
    upload_id = resp.json()["upload_id"]
    stored = [f["name"] for f in get(gateway, upload_id).json()["upload"]["files"]]
    assert stored[:5] == ["evil.csv", "win.ini", "file", "passwd", "nulbyte.txt"]
    assert stored[5].endswith(".csv") and len(stored[5].encode()) == 255
    folder = gateway.workdir / "uploads" / upload_id
    assert sorted(p.name for p in folder.iterdir()) == sorted(stored)
    escaped = [p for p in gateway.workdir.rglob("evil.csv") if p.parent != folder]
    assert escaped == []


def test_an_over_limit_file_is_413_naming_the_limit(tight: Harness) -> None:
    resp = upload(tight, [("ok.csv", b"1"), ("big.bin", bytes(MiB + 1))])
    assert resp.status_code == 413
    err = resp.json()
    assert err["code"] == 8
    assert "file 'big.bin' is larger than the limit of 1.0 MiB" in err["message"]
    assert "max_file_bytes" in err["message"]
    assert err["details"][0]["reason"] == "FILE_TOO_LARGE"
    assert err["details"][0]["metadata"] == {"limit": "max_file_bytes", "limit_value": str(MiB)}
    assert [p.name for p in stored_files(tight)] == [], "nothing stored, not even ok.csv"


def test_too_many_files_and_too_much_in_all_are_413(tight: Harness) -> None:
    many = upload(tight, [(f"{i}.csv", b"1") for i in range(4)])
    assert many.status_code == 413
    assert "more than 3 files" in many.json()["message"] and "max_files" in many.json()["message"]
    total = upload(tight, [("a", bytes(MiB)), ("b", bytes(MiB)), ("c", b"1")])
    assert total.status_code == 413
    assert "max_total_bytes" in total.json()["message"]
    lst = httpx.get(tight.http + "/api/v2/train/uploads", headers=tight.user_headers())
    assert lst.json() == {"uploads": [], "next_page_token": ""}
    assert stored_files(tight) == []


def test_uploads_are_the_owners_alone(gateway: Harness) -> None:
    upload_id = upload(gateway, [("mine.csv", b"1")], user="carol").json()["upload_id"]
    other = get(gateway, upload_id, user="mallory")
    assert other.status_code == 403
    assert other.json()["details"][0]["reason"] == "UPLOAD_ACCESS_DENIED"
    assert get(gateway, "4f7c5a9e-0000-4000-8000-000000000000").status_code == 404
    assert get(gateway, "not-a-uuid").status_code == 404
    url = f"{gateway.http}/api/v2/train/uploads/{upload_id}"
    assert httpx.delete(url, headers=gateway.user_headers("mallory")).status_code == 403
    assert httpx.get(url).status_code == 401

    mallory = httpx.get(
        gateway.http + "/api/v2/train/uploads", headers=gateway.user_headers("mallory")
    )
    assert mallory.json()["uploads"] == []

    deleted = httpx.delete(url, headers=gateway.user_headers("carol"))
    assert deleted.status_code == 200 and deleted.json() == {}
    assert get(gateway, upload_id, user="carol").status_code == 404
    assert not (gateway.workdir / "uploads" / upload_id).exists()


def test_list_pages_newest_first(gateway: Harness) -> None:
    ids = [upload(gateway, [(f"{i}.csv", b"1")], user="dave").json()["upload_id"] for i in range(3)]
    headers = gateway.user_headers("dave")
    first = httpx.get(gateway.http + "/api/v2/train/uploads?page_size=2", headers=headers).json()
    assert [u["upload_id"] for u in first["uploads"]] == ids[::-1][:2]
    rest = httpx.get(
        gateway.http + "/api/v2/train/uploads",
        params={"page_token": first["next_page_token"]},
        headers=headers,
    ).json()
    assert [u["upload_id"] for u in rest["uploads"]] == [ids[0]]
    assert rest["next_page_token"] == ""


def test_upload_needs_a_user_token(gateway: Harness) -> None:
    resp = httpx.post(gateway.http + UPLOAD, files={"file": ("a.csv", b"1")})
    assert resp.status_code == 401


# --- gRPC, as other services use it -------------------------------------------------------


def md(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(headers.items())


def test_resolve_and_read_for_the_owner(gateway: Harness, stub: svc.UploadServiceStub) -> None:
    data = bytes(range(256)) * 10_000  # 2.5 MB: several ReadUploadFile messages
    upload_id = upload(gateway, [("data.bin", data), ("b.csv", b"1")]).json()["upload_id"]
    service = md(gateway.service_headers("orchestrator"))

    resolved = stub.ResolveUpload(
        msgs.ResolveUploadRequest(upload_id=upload_id, owner="alice"), metadata=service
    ).upload
    assert resolved.owner == "alice" and resolved.total_size_bytes == len(data) + 1
    assert [f.name for f in resolved.files] == ["data.bin", "b.csv"]
    first = resolved.files[0]
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(first.local_path).read_bytes() == data
    assert first.uri == Path(first.local_path).as_uri()

    chunks = list(
        stub.ReadUploadFile(
            msgs.ReadUploadFileRequest(upload_id=upload_id, owner="alice", name="data.bin"),
            metadata=service,
        )
    )
    assert len(chunks) > 1 and all(len(c.data) <= MiB for c in chunks)
    assert b"".join(c.data for c in chunks) == data


def test_resolve_refuses_others_unknown_ids_and_user_tokens(
    gateway: Harness, stub: svc.UploadServiceStub
) -> None:
    upload_id = upload(gateway, [("a.csv", b"1")]).json()["upload_id"]
    service = md(gateway.service_headers("orchestrator"))
    cases = [
        (msgs.ResolveUploadRequest(upload_id=upload_id, owner="bob"), service, "PERMISSION_DENIED"),
        (
            msgs.ResolveUploadRequest(
                upload_id="8d4c1e2a-0000-4000-8000-000000000000", owner="alice"
            ),
            service,
            "NOT_FOUND",
        ),
        (
            msgs.ResolveUploadRequest(upload_id=upload_id, owner="alice"),
            md(gateway.user_headers("alice")),
            "PERMISSION_DENIED",
        ),
    ]
    for request, metadata, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.ResolveUpload(request, metadata=metadata)
        assert err.value.code().name == code, request
    for name, owner, code in (("a.csv", "bob", "PERMISSION_DENIED"), ("zz", "alice", "NOT_FOUND")):
        with pytest.raises(grpc.RpcError) as err:
            list(
                stub.ReadUploadFile(
                    msgs.ReadUploadFileRequest(upload_id=upload_id, owner=owner, name=name),
                    metadata=service,
                )
            )
        assert err.value.code().name == code


def test_grpc_clients_upload_file_chunks(gateway: Harness, stub: svc.UploadServiceStub) -> None:
    user = md(gateway.user_headers("erin"))

    def chunks() -> Iterator[msgs.UploadDataRequest]:
        for name, parts in (("x.csv", [b"a,b\n", b"1,2\n"]), ("../y.txt", [b"why"])):
            for part in parts:
                yield msgs.UploadDataRequest(file=msgs.FileChunk(filename=name, data=part))

    upload_id = stub.UploadData(chunks(), metadata=user).upload_id
    resolved = stub.ResolveUpload(
        msgs.ResolveUploadRequest(upload_id=upload_id, owner="erin"),
        metadata=md(gateway.service_headers()),
    ).upload
    assert [(f.name, f.size_bytes) for f in resolved.files] == [("x.csv", 8), ("y.txt", 3)]

    with pytest.raises(grpc.RpcError) as err:
        stub.UploadData(
            iter([msgs.UploadDataRequest(file=msgs.FileChunk(filename="", data=b"1"))]),
            metadata=user,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filename" in (err.value.details() or "")

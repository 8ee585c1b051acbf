"""fetch_inputs: files and folders on disk, objects and prefixes over the S3 protocol."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.upload_service import MotoServer
from trainyard.blobs import StorageSettings
from trainyard.workload import InputError, fetch_inputs


async def test_a_file_and_a_folder_keep_their_relative_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sports").mkdir(parents=True)
    (data / "news").mkdir()
    (data / "sports" / "b.txt").write_text("b")
    (data / "news" / "a.txt").write_text("a")
    outside = tmp_path / "secret.txt"
    outside.write_text("no")
    os.symlink(outside, data / "news" / "link.txt")
    single = tmp_path / "one.csv"
    single.write_text("x,y\n")
    found = await fetch_inputs([single.as_uri(), data.as_uri() + "/"], tmp_path / "work")
    assert [(f.name, f.path.read_text()) for f in found] == [
        ("one.csv", "x,y\n"),
        ("news/a.txt", "a"),
        ("sports/b.txt", "b"),
    ]


async def test_missing_and_malformed_uris_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        await fetch_inputs([(tmp_path / "nope.csv").as_uri()], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        await fetch_inputs([(tmp_path / "empty").as_uri()], tmp_path)
    with pytest.raises(InputError, match="unsupported scheme"):
        await fetch_inputs(["http://example.com/x.csv"], tmp_path)


async def test_s3_objects_and_prefixes_are_streamed_to_the_work_dir(
    moto: MotoServer, tmp_path: Path
) -> None:
    client = moto.client()
    client.create_bucket(Bucket="inputs")
    client.put_object(Bucket="inputs", Key="docs/sports/a.txt", Body=b"goal")
    client.put_object(Bucket="inputs", Key="docs/news/b.txt", Body=b"vote")
    client.put_object(Bucket="inputs", Key="train.csv", Body=b"t,l\n")
    settings = StorageSettings(s3_endpoint_url=moto.endpoint)
    found = await fetch_inputs(
        ["s3://inputs/train.csv", "s3://inputs/docs/"], tmp_path / "work", settings
    )
    assert [(f.name, f.path.read_bytes(), f.uri) for f in found] == [
        ("train.csv", b"t,l\n", "s3://inputs/train.csv"),
        ("news/b.txt", b"vote", "s3://inputs/docs/news/b.txt"),
        ("sports/a.txt", b"goal", "s3://inputs/docs/sports/a.txt"),
    ]
    assert all(f.path.is_relative_to(tmp_path / "work") for f in found)
    with pytest.raises(InputError, match="no such object"):
        await fetch_inputs(["s3://inputs/missing.csv"], tmp_path / "work", settings)
    with pytest.raises(InputError, match="no objects"):
        await fetch_inputs(["s3://inputs/nothing/"], tmp_path / "work", settings)

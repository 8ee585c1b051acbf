"""Upload building blocks without a server: file names and the multipart decoder."""

from __future__ import annotations

import os

import pytest

from trainyard.runtime.errors import InvalidArgument
from trainyard.upload.filenames import MAX_NAME_BYTES, UniqueNames, sanitize_filename
from trainyard.upload.multipart import MultipartDecoder, PartData, PartEnd, PartStart


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("train.csv", "train.csv"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/data.json", "data.json"),
        ("C:\\Users\\me\\data.csv", "data.csv"),
        ("..\\..\\win.ini", "win.ini"),
        ("a\x00b.csv", "ab.csv"),
        ("tab\tand\nnewline.txt", "tabandnewline.txt"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("dir/", "file"),
        ("  spaced name.csv  ", "spaced name.csv"),
        (".hidden", ".hidden"),
        ("résumé.txt", "résumé.txt"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_sanitize_caps_length_in_bytes_and_keeps_the_extension() -> None:
    long_ascii = sanitize_filename("x" * 1000 + ".csv")
    assert len(long_ascii.encode()) == MAX_NAME_BYTES and long_ascii.endswith(".csv")
    multibyte = sanitize_filename("é" * 400 + ".parquet")
    assert len(multibyte.encode()) <= MAX_NAME_BYTES
    assert multibyte.endswith(".parquet") and multibyte.startswith("é")
    multibyte.encode().decode()  # still valid UTF-8


def test_unique_names_within_an_upload() -> None:
    names = UniqueNames()
    got = [names.claim(n) for n in ("a.csv", "a.csv", "A.CSV", "b", "b", "a (1).csv")]
    assert got == ["a.csv", "a (1).csv", "A (2).CSV", "b", "b (1)", "a (1) (1).csv"]
    long = sanitize_filename("y" * 300 + ".csv")
    assert len(names.claim(long).encode()) <= MAX_NAME_BYTES
    second = names.claim(long)
    assert second.endswith(" (1).csv") and len(second.encode()) <= MAX_NAME_BYTES


# ---------------------------------------------------------------------------------------------


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def decode(body: bytes, content_type: str, step: int) -> list[tuple[str | None, bytes]]:
    """(filename, content) per part, feeding the body `step` bytes at a time."""
    decoder = MultipartDecoder(content_type)
    parts: list[tuple[str | None, bytes]] = []
    for i in range(0, len(body), step):
        for event in decoder.feed(body[i : i + step]):
            if isinstance(event, PartStart):
                parts.append((event.filename, b""))
            elif isinstance(event, PartData):
                name, data = parts[-1]
                parts[-1] = (name, data + bytes(event.data))
            else:
                assert isinstance(event, PartEnd)
    decoder.finish()
    return parts


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_decoder_handles_any_chunking(step: int) -> None:
    tricky = b"line\r\n--notquite\r\n--b\r" + os.urandom(300)  # boundary look-alikes in data
    body = multipart(
        "b", [("field", None, b"value"), ("f", "one.bin", tricky), ("g", "dos.txt", b"")]
    )
    parts = decode(body, "multipart/form-data; boundary=b", step)
    assert parts == [(None, b"value"), ("one.bin", tricky), ("dos.txt", b"")]


def test_decoder_reads_utf8_filenames() -> None:
    body = multipart("b", [("f", "données.csv", b"x")])
    assert decode(body, "multipart/form-data; boundary=b", 5) == [("données.csv", b"x")]


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("", "no content type"),
        ("application/json", "expected a multipart/form-data body, got 'application/json'"),
        ("multipart/form-data", "no boundary"),
    ],
)
def test_decoder_rejects_what_is_not_multipart(content_type: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        MultipartDecoder(content_type)


def test_decoder_notices_a_truncated_body() -> None:
    body = multipart("b", [("f", "a.csv", b"1,2,3")])
    decoder = MultipartDecoder("multipart/form-data; boundary=b")
    decoder.feed(body[:-10])
    with pytest.raises(InvalidArgument, match="closing boundary"):
        decoder.finish()


def test_decoder_rejects_garbage() -> None:
    decoder = MultipartDecoder("multipart/form-data; boundary=b")
    with pytest.raises(InvalidArgument, match="malformed multipart body"):
        decoder.feed(b"--b\r\nno-colon-header\r\n\r\n")

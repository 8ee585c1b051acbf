"""The shared streaming multipart/form-data decoder (trainyard.runtime.multipart)."""

from __future__ import annotations

import os

import pytest

from trainyard.runtime.errors import InvalidArgument
from trainyard.runtime.multipart import MultipartDecoder, PartData, PartEnd, PartStart


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


def test_each_service_chooses_the_hint_its_callers_read() -> None:
    with pytest.raises(InvalidArgument, match=r"got 'text/plain'; send it right$"):
        MultipartDecoder("text/plain", hint="send it right")
    decoder = MultipartDecoder("multipart/form-data; boundary=b", hint="send it right")
    with pytest.raises(InvalidArgument, match=r"malformed multipart body: .*; send it right$"):
        decoder.feed(b"--b\r\nno-colon-header\r\n\r\n")

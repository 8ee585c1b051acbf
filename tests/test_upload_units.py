"""Upload building blocks without a server: file names."""

from __future__ import annotations

import pytest

from trainyard.upload.filenames import MAX_NAME_BYTES, UniqueNames, sanitize_filename


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

"""Uploaded file names: sanitized to one safe path segment and unique within an upload."""

from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 255
MAX_EXTENSION_BYTES = 32
FALLBACK_NAME = "file"


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch == "\x7f"


def _split_extension(name: str) -> tuple[str, str]:
    """("archive.tar", ".gz"): the last suffix, when it is short and not the whole name."""
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return name, ""
    ext = name[dot:]
    if len(ext.encode()) > MAX_EXTENSION_BYTES or " " in ext:
        return name, ""
    return name[:dot], ext


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def fit_name(stem: str, ext: str, suffix: str = "", max_bytes: int = MAX_NAME_BYTES) -> str:
    """stem + suffix + ext, shortening the stem so the result fits in max_bytes of UTF-8."""
    room = max_bytes - len(ext.encode()) - len(suffix.encode())
    return _truncate_utf8(stem, max(room, 1)).rstrip() + suffix + ext


def sanitize_filename(raw: str) -> str:
    """One safe file name from what a client sent: the last path segment (`/` or `\\`), no
    NUL/control characters, NFC-normalized, at most 255 bytes with its extension kept; `.`, `..`
    or nothing left becomes "file"."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if not _is_control(ch))
    name = name.strip()
    if name in ("", ".", ".."):
        return FALLBACK_NAME
    stem, ext = _split_extension(name)
    return fit_name(stem, ext)


class UniqueNames:
    """Hands out names unique within one upload (case-insensitively, so the files also coexist
    on case-insensitive file systems): `a.csv`, then `a (1).csv`, `a (2).csv`, ..."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        candidate = name
        if candidate.casefold() in self._taken:
            stem, ext = _split_extension(name)
            n = 1
            while True:
                candidate = fit_name(stem, ext, f" ({n})")
                if candidate.casefold() not in self._taken:
                    break
                n += 1
        self._taken.add(candidate.casefold())
        return candidate

"""HTTP byte ranges (`Range: bytes=…`) and attachment file names of object downloads."""

from __future__ import annotations

from urllib.parse import quote

from api.errors import ApiError


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266), so `curl -OJ` saves it."""
    fallback = "".join(
        char if 32 <= ord(char) < 127 and char not in '"\\' else "_" for char in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single `Range: bytes=...`, None to send the whole object
    (no header, several ranges, or a syntax this API ignores); 416 when it starts past the end."""
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not all(
        part == "" or (part.isascii() and part.isdigit()) for part in (first, last)
    ):
        return None
    if first == "":
        if last == "":
            return None
        length = int(last)
        if length == 0 or size == 0:
            raise unsatisfiable(header, size)
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else max(start, size - 1)
    if end < start:
        return None
    if start >= size:
        raise unsatisfiable(header, size)
    return start, min(end, size - 1)


def unsatisfiable(header: str, size: int) -> ApiError:
    """416 for a range that starts past the end, with the object's size in `Content-Range`."""
    return ApiError(
        416,
        f"Range {header[:60]!r} starts past the end of the object ({size} bytes)",
        field="Range",
        headers={"Content-Range": f"bytes */{size}"},
    )

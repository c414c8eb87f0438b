"""Request-path normalisation: done once per request; the result is matched and forwarded.

A router and an upstream that read one path two ways is how path-confusion attacks work
(an ACL checks `/public/..%2Fadmin`, the upstream serves `/admin`). So the gateway puts the
path into one normal form, decides on that form, and forwards that same form, byte for byte.

Rules (RFC 3986 sections 2 and 6.2.2 where they apply):
- percent-encoding must be valid; hex digits are upper-cased; encoded unreserved characters
  (letters, digits, ``-._~``) are decoded;
- rejected (400): encoded ``/`` (%2F), ``\\`` (%5C), NUL and other controls (%00-%1F, %7F),
  encoded dot-segments (``%2e``, ``.%2E``), a literal backslash, ``;`` path parameters,
  literal or encoded (%3B), and dot-segments that would climb above the root;
- literal ``.`` and ``..`` segments inside the root are resolved (RFC 3986 5.2.4);
- empty segments (``//``) collapse to one ``/``; a trailing ``/`` is kept;
- other characters outside RFC 3986's ``pchar`` (and bytes above 0x7F) are percent-encoded.
"""

from __future__ import annotations

from functools import lru_cache

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCHAR = _UNRESERVED | frozenset(b"!$&'()*+,=:@")  # sub-delims and : @, less ';'
_HEX = frozenset(b"0123456789abcdefABCDEF")


class PathError(ValueError):
    """The request path cannot be normalised safely; the client gets 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def normalise(raw: bytes) -> str:
    """Return the normal form of a raw request path (no query string)."""
    if len(raw) <= CACHED_PATH_BYTES:
        return _cached(raw)
    return _normalise(raw)


def configured(text: str) -> str:
    """A path written in a config file, which requests will be compared with: it must be in
    normal form already (a trailing slash aside), so that what is written is what matches.
    ValueError names the form to write."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must start with '/'")
    try:
        path = normalise(text.encode())
    except PathError as exc:
        raise ValueError(f"{text!r}: {exc.detail}") from exc
    if path != text.rstrip("/") and path != text:
        raise ValueError(f"{text!r} is not in normal form (write {path!r})")
    return path


# The cache holds only short paths, so that it is bounded in bytes, not only in entries:
# 8192 entries of at most 512 bytes, each kept twice (raw and normal form, which can be 3x
# the raw one when every byte is percent-encoded): under 17 MiB with the objects' overhead.
# Longer paths (up to the edge's max_request_line) are normalised each time.
CACHED_PATH_BYTES = 512


def _normalise(raw: bytes) -> str:
    if not raw.startswith(b"/"):
        raise PathError("the path must start with '/'")
    out: list[str] = []
    segments = raw.split(b"/")[1:]
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        text, encoded_dot = _segment(segment)
        if text in (".", ".."):
            if encoded_dot:
                raise PathError("encoded dot-segments are not allowed")
            if text == "..":
                if not out:
                    raise PathError("the path climbs above the root")
                out.pop()
            if index == last:
                out.append("")  # "/a/." and "/a/b/.." end in a slash
        elif text or index == last:
            out.append(text)
    return "/" + "/".join(out)


_cached = lru_cache(maxsize=8192)(_normalise)


def _segment(segment: bytes) -> tuple[str, bool]:
    """One segment in normal form, and whether it held an encoded '.'."""
    out = bytearray()
    encoded_dot = False
    i, size = 0, len(segment)
    while i < size:
        byte = segment[i]
        if byte == 0x25:  # '%'
            pair = segment[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise PathError("invalid percent-encoding")
            value = int(pair, 16)
            if value in (0x2F, 0x5C):
                raise PathError("encoded '/' or '\\' is not allowed in the path")
            if value < 0x20 or value == 0x7F:
                raise PathError("encoded control characters are not allowed in the path")
            if value == 0x3B:  # servers that split path parameters after decoding see ';'
                raise PathError("encoded ';' is not allowed in the path")
            if value in _UNRESERVED:
                encoded_dot |= value == 0x2E
                out.append(value)
            else:
                out += b"%" + pair.upper()
            i += 3
            continue
        if byte == 0x3B:
            raise PathError("';' path parameters are not allowed")
        if byte == 0x5C:
            raise PathError("'\\' is not allowed in the path")
        if byte < 0x20 or byte == 0x7F:
            raise PathError("control characters are not allowed in the path")
        if byte in _PCHAR:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
        i += 1
    return out.decode("ascii"), encoded_dot

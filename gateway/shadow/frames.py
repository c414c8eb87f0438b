"""The frames between the gateway and its shadow worker (see `gateway.shadow.worker`).

A 5-byte header (payload length, uint32 little-endian; kind, one byte) and a pickled
payload. Pickle is safe here because both ends are this program and the socket pair is
private to the two processes.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from typing import Any

HELLO, ROUTE, COPIES, DROPS, SYNC, STATS, DONE, ACK = range(8)
_HEADER = struct.Struct("<IB")


def frame(kind: int, payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data), kind) + data


class Frames:
    """Splits a byte stream into (kind, payload) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, Any]]:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            size, kind = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            # Both ends are this program, over a socket pair no one else holds.
            yield kind, pickle.loads(buffer[start + _HEADER.size : end])  # noqa: S301
            start = end
        del buffer[:start]

"""The failing upstream of the faults benchmark: healthy until told, then failing a share.

Plain keep-alive HTTP/1.1 for bodiless requests. While faults are on, each request fails
with the given probability (seeded, so runs are comparable): it is answered ``503`` after
``--fail-delay-ms``, the way an overloaded service fails, slowly. Every other request gets
``200`` with a small JSON body at once. Control paths, never counted as load:

    GET /_faults/on | /_faults/off   start or stop failing (and zero the counters)
    GET /_faults/stats               {"received": N, "failed": N} since the last switch

Run it with ``python -m bench.flaky --port PORT [--share 0.5] [--fail-delay-ms 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys

import uvloop

_BODY = b'{"service":"flaky","status":"ok"}'
_FAILED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


class Faults:
    def __init__(self, share: float, delay: float) -> None:
        self.share = share
        self.delay = delay
        self.failing = False
        self.received = 0
        self.failed = 0
        self._draws = random.Random(7)  # seeded: every run fails the same requests

    def control(self, path: str) -> bytes | None:
        """The answer to a control path, or None for ordinary load."""
        if path in ("/_faults/on", "/_faults/off"):
            self.failing = path.endswith("on")
            self.received = self.failed = 0
        elif path != "/_faults/stats":
            return None
        body = json.dumps({"received": self.received, "failed": self.failed}).encode()
        return _ok(body)

    async def answer(self, path: str) -> bytes:
        answer = self.control(path)
        if answer is not None:
            return answer
        self.received += 1
        if self.failing and self._draws.random() < self.share:
            self.failed += 1
            await asyncio.sleep(self.delay)
            return _FAILED
        return _ok(_BODY)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].split(b"?")[0].decode("latin-1")
                writer.write(await self.answer(path))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


def _ok(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


def command(port: int, share: float, delay_ms: float) -> list[str]:
    """The argv that serves the flaky upstream on 127.0.0.1:``port`` in a child process."""
    return [
        sys.executable,
        "-m",
        "bench.flaky",
        "--port",
        str(port),
        "--share",
        str(share),
        "--fail-delay-ms",
        str(delay_ms),
    ]


async def serve(port: int, faults: Faults) -> None:
    server = await asyncio.start_server(faults.handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flaky", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--share", type=float, default=0.5, help="share of requests that fail")
    parser.add_argument("--fail-delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    faults = Faults(args.share, args.fail_delay_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, faults))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The WebSocket benchmark's upstream: echoes every message (websockets, on asyncio); a plain
GET of /health answers 200, so that bench.process sees it ready."""

from __future__ import annotations

import argparse
import asyncio
import http

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def _health(ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/health":
        return ws.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def _serve(port: int) -> None:
    async with serve(_echo, "127.0.0.1", port, process_request=_health) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()

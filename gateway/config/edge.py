"""The `edge:` section of routes.yaml: what a client may hold of the gateway, and for how long.

edge:
  max_request_line: 8KiB    # the request target (path and query); longer -> 414
  max_header_bytes: 64KiB   # the whole header section; more -> 431
  max_headers: 100          # header fields; more -> 431
  header_timeout: 10s       # from a request's first byte to the end of its headers -> 408
  idle_timeout: 75s         # a kept-alive (or new) connection with no request is closed
  body_timeout: 30s         # the longest wait between two reads of a request body -> 408
  body_buffer: 64KiB        # request bodies are read whole before the upstream is asked;
                            # up to this much in memory, the rest in a temporary file
  max_connections: 4096     # open client connections per process; past it, only /_strangler/
  admin_headroom: 64        # ... connections past the cap that may still reach /_strangler/

Each limit, the attack it stops, and the defaults of nginx and Envoy beside ours:

- max_request_line: huge URIs filling memory and caches. Ours 8 KiB; nginx 8 KiB
  (large_client_header_buffers); Envoy 60 KiB (within max_request_headers_kb).
- max_header_bytes: a 32 MB header forwarded whole. Ours 64 KiB; nginx 32 KiB (4 x 8 KiB);
  Envoy 60 KiB (max_request_headers_kb).
- max_headers: CPU and memory per header field. Ours 100; nginx none; Envoy 100
  (max_headers_count).
- header_timeout: slowloris, headers sent a byte at a time. Ours 10 s; nginx 60 s
  (client_header_timeout); Envoy off (request_headers_timeout).
- idle_timeout: idle connections held open to use up descriptors. Ours 75 s; nginx 75 s
  (keepalive_timeout); Envoy 1 h (idle_timeout).
- body_timeout: slow uploads (R.U.D.Y.). Ours 30 s; nginx 60 s (client_body_timeout);
  Envoy 5 min (stream_idle_timeout).
- body_buffer: slow uploads holding upstream connections. Ours 64 KiB, then a file; nginx
  16 KiB, then a file (proxy_request_buffering on); Envoy streams (per-stream buffer limit).
- max_connections: descriptor exhaustion. Ours 4096 (+ admin_headroom 64); nginx 512
  (worker_connections); Envoy none by default (its overload manager can set one).

The cap on connections is also kept under the process's descriptor limit (gateway/http/server.py
raises the soft limit to the hard one at start): a gateway out of descriptors cannot even
answer its own health check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yaml.nodes import Node

from common.validation import (
    NodeReader,
    non_negative_int,
    parse_size,
    positive_duration,
    positive_int,
)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    body_timeout: float = 30.0
    body_buffer: int = 64 * 1024
    max_connections: int = 4096
    admin_headroom: int = 64


def read_edge(reader: NodeReader, node: Node) -> EdgeSettings:
    what = "edge"
    defaults = EdgeSettings()
    fields = reader.mapping(node, what, set(EdgeSettings.__slots__))
    if fields is None:
        return defaults

    def read(key: str, convert: Callable[[str], object]) -> Any:
        return reader.optional(fields, key, what, convert, getattr(defaults, key))

    settings = EdgeSettings(
        max_request_line=read("max_request_line", _positive_size),
        max_header_bytes=read("max_header_bytes", _positive_size),
        max_headers=read("max_headers", positive_int),
        header_timeout=read("header_timeout", positive_duration),
        idle_timeout=read("idle_timeout", positive_duration),
        body_timeout=read("body_timeout", positive_duration),
        body_buffer=read("body_buffer", _positive_size),
        max_connections=read("max_connections", positive_int),
        admin_headroom=read("admin_headroom", non_negative_int),
    )
    if settings.max_request_line > settings.max_header_bytes:
        reader.error(node, "edge: max_request_line cannot be larger than max_header_bytes")
    return settings


def _positive_size(text: str) -> int:
    size = parse_size(text)
    if size < 1:
        raise ValueError(f"{text!r} must be at least 1 byte")
    return size

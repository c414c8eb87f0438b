"""A stand-in shadow worker that records how the gateway batched its copies.

    python -m tests.support.shadow_recorder OUT FD

It speaks the worker's side of the frames (gateway/shadow/worker_process.py) without
comparing anything: every COPIES frame is acknowledged at once and reported as that many
copies mirrored (a STATS frame), a SYNC is answered with DONE. At EOF it writes the number
of copies in each COPIES frame, in order, to OUT as a JSON list.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from gateway.shadow.frames import ACK, COPIES, DONE, STATS, SYNC, Frames, frame
from gateway.shadow.mirror import RouteStats


def main(argv: list[str]) -> int:
    out, fd = argv
    sock = socket.socket(fileno=int(fd))
    frames, sizes = Frames(), []
    while data := sock.recv(1 << 16):
        for kind, payload in frames.feed(data):
            if kind == COPIES:
                sizes.append(len(payload))
                stats = {"search": RouteStats(mirrored=len(payload))}
                sock.sendall(frame(ACK, sum(sizes)) + frame(STATS, stats))
            elif kind == SYNC:
                sock.sendall(frame(ACK, sum(sizes)) + frame(DONE, (payload[0], {})))
    Path(out).write_text(json.dumps(sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The access log writes whole JSON lines in batches and loses none on flush."""

from __future__ import annotations

import io
import json

import pytest

from gateway.http.accesslog import AccessLog

pytestmark = pytest.mark.anyio


async def test_batches_are_written_whole_and_flush_writes_the_rest() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, interval=60)
    for i in range(300):
        log.write({"n": i, "path": '/x\n"y'})
    assert len(stream.getvalue().splitlines()) == 256  # one full batch, at once
    log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in lines] == list(range(300))
    assert lines[0]["path"] == '/x\n"y'  # newlines inside values cannot split a line
    log.flush()
    assert len(stream.getvalue().splitlines()) == 300


async def test_a_partial_batch_is_written_when_its_timer_fires() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, interval=0.01)
    log.write({"n": 1})
    assert stream.getvalue() == b""
    assert log._timer is not None  # the flush is scheduled, not left to the next request
    log._timer._run()  # what the event loop does when the timer is due
    assert stream.getvalue() == b'{"n":1}\n'

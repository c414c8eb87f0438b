"""A headless Chromium driven over ChromeDriver's W3C WebDriver HTTP API, with httpx.

Only the few commands the dashboard test needs: open a URL, find an element, type into it,
click it, run a script. Waiting is always for a condition, with a deadline (`until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from bench.process import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UNTIL_SECONDS = 30.0  # the page polls every 2 s; a loaded machine may need several polls
COMMAND_SECONDS = 60.0  # one command: creating a session starts Chromium, slow when loaded
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
# Without the background-networking flags Chromium dials out at start-up, and this machine's
# closed network refuses it slowly; --disable-dev-shm-usage: containers have a small /dev/shm.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def require_browser() -> tuple[str, str]:
    """The Chromium and ChromeDriver binaries, or skip (fail under STRANGLER_REQUIRE_SERVICES)."""
    chromium = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    driver = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "chromium and chromedriver are not installed (Debian: chromium, chromium-driver)"
    if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


class WebDriverError(Exception):
    pass


class Browser:
    def __init__(self, http: httpx.AsyncClient, base: str, session: str) -> None:
        self.http = http
        self.base = f"{base}/session/{session}"

    async def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.http.request(method, self.base + path, json=body)
        answer = response.json()
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {answer['value']}")
        return answer["value"]

    async def open(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})

    async def find(self, css: str) -> str:
        found = await self.command("POST", "/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    async def type(self, css: str, text: str) -> None:
        await self.command("POST", f"/element/{await self.find(css)}/value", {"text": text})

    async def click(self, css: str) -> None:
        await self.command("POST", f"/element/{await self.find(css)}/click", {})

    async def script(self, source: str, *args: Any) -> Any:
        return await self.command("POST", "/execute/sync", {"script": source, "args": list(args)})

    async def until(self, what: str, check: Callable[[], Awaitable[Any]]) -> Any:
        """Poll `check` until it returns something truthy; fail after UNTIL_SECONDS."""
        last: Any = None
        try:
            async with asyncio.timeout(UNTIL_SECONDS):
                while True:
                    last = await check()
                    if last:
                        return last
                    # The state lives in another process (the browser): there is nothing
                    # to await but the next look, so this is a poll interval.
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {UNTIL_SECONDS:g}s waiting for {what} (last: {last!r})"
            ) from None


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    binary, driver = require_browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="strangler-chromium-") as profile:
        process = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # ChromeDriver listens on loopback: no proxy from the environment.
            async with httpx.AsyncClient(timeout=COMMAND_SECONDS, trust_env=False) as http:
                await _ready(http, base, process)
                capabilities = {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary,
                        "args": [*ARGS, f"--user-data-dir={profile}"],
                    },
                }
                response = await http.post(
                    f"{base}/session", json={"capabilities": {"alwaysMatch": capabilities}}
                )
                created = response.json()
                if response.status_code != 200:
                    raise WebDriverError(f"no browser session: {created['value']}")
                browser = Browser(http, base, created["value"]["sessionId"])
                try:
                    yield browser
                finally:
                    with contextlib.suppress(httpx.HTTPError, WebDriverError):
                        await browser.command("DELETE", "")
        finally:
            process.terminate()
            process.wait(timeout=10)


async def _ready(http: httpx.AsyncClient, base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WebDriverError(f"chromedriver exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            response = await http.get(f"{base}/status")
            if response.status_code == 200 and response.json()["value"]["ready"]:
                return
        await asyncio.sleep(0.05)  # chromedriver is starting: poll its /status
    raise WebDriverError("chromedriver did not become ready within 30 s")

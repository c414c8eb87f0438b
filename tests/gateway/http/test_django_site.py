"""A stock Django project, served by gunicorn, behind a real gateway: tested as a browser would.

The promise (issue #18): the legacy application does not change when the gateway goes in
front of it. tests/django_site is `django-admin startproject` with only `ALLOWED_HOSTS` and
the database path changed, plus the app `probes` with one view per behaviour checked here.
One gunicorn per module; each test has a fresh cookie jar, and follows redirects itself
where it checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urljoin

import httpx2
import pytest

from tests.support import ROOT
from tests.support.harness import Gateway, serve_gateway, write_routes

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        find_spec("django") is None or find_spec("gunicorn") is None,
        reason="Django and gunicorn are not installed (pip install -e '.[test]' installs them)",
    ),
]

SITE = ROOT / "tests" / "django_site"
USERNAME, PASSWORD = "admin", "not-a-secret-0123456789"
STARTUP = 30.0  # seconds: migrate, then gunicorn's master and workers, on a loaded machine
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # Module scope: the gateways below live for the module, so the event loop must too.
    return "asyncio"


@dataclass(frozen=True)
class DjangoSite:
    url: str  # gunicorn's own address; a browser never sees it

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SITE,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {args[0]}:\n{result.stdout}{result.stderr}"


def _gunicorn_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    """The port gunicorn bound (`--bind 127.0.0.1:0`: the kernel picks, so no race for a
    free port), read from its log line `Listening at: ...`."""
    deadline = time.monotonic() + STARTUP
    while not (found := LISTENING.search(log.read_text())):
        assert proc.poll() is None, f"gunicorn exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"gunicorn did not listen:\n{log.read_text()}"
        time.sleep(0.05)
    return int(found.group(1))


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, url: str) -> None:
    """Until a worker has imported the project and answers (a broken import kills the
    master: fail at once then, with its log)."""
    deadline = time.monotonic() + STARTUP
    while True:
        assert proc.poll() is None, f"gunicorn exited:\n{log.read_text()}"
        try:
            if httpx2.get(f"{url}/probes/absolute/", timeout=STARTUP).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        assert time.monotonic() < deadline, f"Django did not answer:\n{log.read_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoSite]:
    """The project migrated into a fresh SQLite file, with a superuser, under gunicorn."""
    data = tmp_path_factory.mktemp("django_site")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_site.settings",
        "DJANGO_SITE_DB_DIR": str(data),
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,  # read by createsuperuser --noinput
    }
    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "createsuperuser", "--noinput", "--username", USERNAME, "--email", "a@b.test")
    log = data / "gunicorn.log"
    with log.open("wb") as out:
        # Two sync workers (gunicorn's default kind): a stream held open by one test
        # leaves the other free.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                "127.0.0.1:0",
                "--workers",
                "2",
                "django_site.wsgi",
            ],
            cwd=SITE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        site = DjangoSite(f"http://127.0.0.1:{_gunicorn_port(proc, log)}")
        _wait_ready(proc, log, site.url)
        yield site
    finally:
        proc.send_signal(signal.SIGINT)  # quick shutdown: TERM would wait for held streams
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The gateway's `host:` modes, as routes.yaml says them. `client` is left unsaid: the
# default is what is tested.
HOST_MODES = {"client": "", "upstream": ", host: upstream"}


@pytest.fixture(scope="module")
async def gateways(
    django_site: DjangoSite, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Gateway]]:
    """One gateway per `host:` mode, each with the Django site as its only upstream."""
    async with contextlib.AsyncExitStack() as stack:
        started: dict[str, Gateway] = {}
        for mode, host in HOST_MODES.items():
            routes = tmp_path_factory.mktemp(f"host_{mode}") / "routes.yaml"
            write_routes(
                routes,
                f"""
upstreams:
  legacy: {{url: "{django_site.url}", timeout: 10s{host}}}
default: legacy
routes: []
""",
            )
            started[mode] = await stack.enter_async_context(serve_gateway(routes))
        yield started


@pytest.fixture(scope="module")
def gateway(gateways: dict[str, Gateway]) -> Gateway:
    """The default: the browser's `Host` is passed on."""
    return gateways["client"]


@pytest.fixture(scope="module")
def vhost_gateway(gateways: dict[str, Gateway]) -> Gateway:
    """`host: upstream`: Django gets gunicorn's address as `Host`."""
    return gateways["upstream"]


@contextlib.asynccontextmanager
async def browser(gateway: Gateway) -> AsyncIterator[httpx2.AsyncClient]:
    """A client with its own cookie jar that never follows redirects by itself."""
    async with httpx2.AsyncClient(base_url=gateway.url, timeout=15) as client:
        yield client


def form_token(html: str) -> str:
    """The CSRF token of the page's form, as a browser would submit it."""
    found = CSRF_FIELD.search(html)
    assert found, html
    return found.group(1)


def as_browser_posts(gateway: Gateway, page: str) -> dict[str, str]:
    """The headers a browser adds to a form's POST: where the form came from."""
    return {"Origin": gateway.url, "Referer": f"{gateway.url}{page}"}


async def log_in(client: httpx2.AsyncClient, gateway: Gateway) -> httpx2.Response:
    page = "/admin/login/?next=/admin/"
    form = await client.get(page)
    assert form.status_code == 200
    assert "csrftoken" in client.cookies  # set with the form, sent back with the POST
    return await client.post(
        page,
        data={
            "csrfmiddlewaretoken": form_token(form.text),
            "username": USERNAME,
            "password": PASSWORD,
            "next": "/admin/",
        },
        headers=as_browser_posts(gateway, page),
    )


async def test_admin_login_with_csrf_and_origin(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        before = await client.get("/admin/")
        assert before.status_code == 302  # not logged in yet: the session is what changes
        assert before.headers["location"] == "/admin/login/?next=/admin/"

        response = await log_in(client, gateway)
        assert response.status_code == 302, response.text
        assert response.headers["location"] == "/admin/"
        assert "sessionid" in client.cookies

        index = await client.get("/admin/")
        assert index.status_code == 200
        assert "<title>Site administration | Django site admin</title>" in index.text
        assert "Django administration" in index.text
        assert re.search(rf"Welcome,\s*<strong>{USERNAME}</strong>", index.text)


async def test_upstream_host_mode_breaks_the_csrf_login(
    vhost_gateway: Gateway, django_site: DjangoSite
) -> None:
    """Why `host: client` is the default: with gunicorn's address as `Host`, Django sees an
    `Origin` that is not its own and refuses the form; its absolute URLs name gunicorn."""
    async with browser(vhost_gateway) as client:
        response = await log_in(client, vhost_gateway)
        assert response.status_code == 403
        assert "Origin checking failed" in response.text

        absolute = await client.get("/probes/absolute/")
        assert absolute.text == f"{django_site.url}/probes/absolute/"


@pytest.mark.parametrize("mode", list(HOST_MODES))
async def test_redirect_chain_points_at_the_gateway(
    mode: str, gateways: dict[str, Gateway], django_site: DjangoSite
) -> None:
    """Three hops, absolute and relative; every `Location` is usable by the browser. With
    `host: upstream` Django names gunicorn and the gateway rewrites it."""
    front = gateways[mode]
    async with browser(front) as client:
        response = await client.get("/probes/chain/3/")
        locations = []
        while response.is_redirect:
            location = response.headers["location"]
            locations.append(location)
            assert str(django_site.port) not in location
            response = await client.get(urljoin(str(response.url), location))
        assert response.status_code == 200
        assert response.text == "end of chain\n"
        assert locations == [
            f"{front.url}/probes/chain/2/",
            "/probes/chain/1/",
            f"{front.url}/probes/chain/0/",
        ]


async def test_three_set_cookie_headers_kept_apart(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        response = await client.get("/probes/cookies/")
        assert response.status_code == 200
        lines = response.headers.get_list("set-cookie")
        assert [line.split("=", 1)[0] for line in lines] == ["flavour", "theme", "session_hint"]
        theme = lines[1]
        assert "expires=" in theme  # a comma inside: folding the lines would break it
        assert "Path=/probes/" in theme
        assert "HttpOnly" in lines[2]
        assert "SameSite=Strict" in lines[2]
        jar = {cookie.name: cookie.value for cookie in client.cookies.jar}
        assert jar == {"flavour": "oatmeal", "theme": "dark", "session_hint": "abc"}


async def test_multipart_upload_checked_by_hash(gateway: Gateway) -> None:
    """5 MB: past Django's 2.5 MB in-memory limit (a temporary file on its side) and past the
    gateway's in-memory body buffer (a temporary file on its side too)."""
    blob = random.Random(18).randbytes(5 * 1024 * 1024)
    page = "/probes/upload/"
    async with browser(gateway) as client:
        form = await client.get(page)
        response = await client.post(
            page,
            data={"csrfmiddlewaretoken": form_token(form.text)},
            files={"file": ("blob.bin", blob, "application/octet-stream")},
            headers=as_browser_posts(gateway, page),
        )
        assert response.status_code == 200, response.text
        assert response.text == f"{len(blob)} {hashlib.sha256(blob).hexdigest()}\n"


async def test_streaming_first_chunk_arrives_before_the_last_is_produced(
    gateway: Gateway,
) -> None:
    """The view connects to this test, sends its first chunk, and produces the last only
    after this test, having received the first through the gateway, writes a byte. A
    gateway that buffered the response would hold the first chunk: the wait times out."""
    views: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_view(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await views.put(writer)

    server = await asyncio.start_server(on_view, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    view: asyncio.StreamWriter | None = None
    try:
        async with browser(gateway) as client:
            request = client.stream("GET", "/probes/stream/", params={"port": port})
            async with request as response:
                assert response.status_code == 200
                chunks = response.aiter_bytes()
                received = b""
                while not received.endswith(b"\n"):
                    received += await asyncio.wait_for(anext(chunks), 10)
                assert received == b"first chunk\n"

                view = await asyncio.wait_for(views.get(), 10)
                view.write(b"!")  # now, and only now, the view produces the last chunk
                await view.drain()
                rest = b"".join([chunk async for chunk in chunks])
                assert rest == b"last chunk\n"
    finally:
        if view is not None:
            view.close()  # the view's read ends: a failed test leaves no worker waiting
        while not views.empty():
            views.get_nowait().close()
        server.close()
        await server.wait_closed()


async def test_build_absolute_uri_is_the_public_url(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        response = await client.get("/probes/absolute/?q=a%20b&q=c")
        assert response.status_code == 200
        assert response.text == f"{gateway.url}/probes/absolute/?q=a%20b&q=c"

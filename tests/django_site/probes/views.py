"""Views that behave as a monolith's pages do, one behaviour each, for the gateway's tests.

Each answers in plain text so that a test can compare it byte for byte.
"""

import hashlib
import socket
from collections.abc import Iterator

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse


def chain(request: HttpRequest, hops: int) -> HttpResponse:
    """Redirect `hops` times before answering. Odd hops redirect to an absolute URL built
    from the request (Django's own way, from `Host`), even ones to a path: a gateway must
    get both kinds right."""
    if hops == 0:
        return HttpResponse("end of chain\n", content_type="text/plain")
    target = reverse("chain", args=[hops - 1])
    if hops % 2:
        target = request.build_absolute_uri(target)
    return HttpResponseRedirect(target)


def cookies(request: HttpRequest) -> HttpResponse:
    """Three cookies, three `Set-Cookie` header lines: they must never be folded into one
    (RFC 6265 3: a comma is valid inside `Expires`)."""
    response = HttpResponse("three cookies\n", content_type="text/plain")
    response.set_cookie("flavour", "oatmeal")
    response.set_cookie("theme", "dark", max_age=3600, path="/probes/")
    response.set_cookie("session_hint", "abc", httponly=True, samesite="Strict")
    return response


def upload(request: HttpRequest) -> HttpResponse:
    """GET: the form (with its CSRF token); POST: the uploaded file's size and sha256."""
    if request.method != "POST":
        return render(request, "probes/upload.html")
    uploaded = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in uploaded.chunks():
        digest.update(chunk)
    return HttpResponse(f"{uploaded.size} {digest.hexdigest()}\n", content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """One chunk, then wait for the test before producing the last.

    The test listens on `?port=`; this connects to it before the first chunk and reads one
    byte from it before the last, so the last chunk does not exist until the test has seen
    the first. (Test-only: a real view would never connect where a query string says.)
    """
    port = int(request.GET["port"])

    def chunks() -> Iterator[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as signal:
            yield b"first chunk\n"
            signal.recv(1)
        yield b"last chunk\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def absolute(request: HttpRequest) -> HttpResponse:
    """The URL as Django sees it: scheme, `Host` and path, as the client asked."""
    return HttpResponse(request.build_absolute_uri(), content_type="text/plain")

"""nginx as the reference reverse proxy: the configuration and the command that runs it.

The configuration is the tuned setup one would deploy, so the ratio compares the gateway
against a fair bar rather than a strawman: one worker (the gateway runs one too), upstream
keep-alive (``keepalive`` needs HTTP/1.1 and an empty Connection header towards the upstream,
see https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive), no access log.
Every path nginx writes (pid, logs, temp directories) lives under the bench's temp directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def binary() -> str | None:
    """The nginx executable on PATH, or None when it is not installed."""
    return shutil.which("nginx")


def config(prefix: Path, *, listen_port: int, upstream_port: int) -> str:
    # Running as root, nginx would switch its worker to "nobody", who cannot write the temp
    # directories under the bench's own temp directory; the directive is ignored (with a
    # warning) when nginx does not run as root, so it is only written for root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def command(executable: str, prefix: Path, *, listen_port: int, upstream_port: int) -> list[str]:
    """Write ``prefix/nginx.conf`` and return the argv that runs nginx in the foreground.

    ``-e`` points the error log used before the configuration is read into ``prefix`` too, so
    nginx never touches /var/log/nginx.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, listen_port=listen_port, upstream_port=upstream_port))
    return [
        executable,
        "-p",
        f"{prefix}/",
        "-c",
        str(conf),
        "-e",
        f"{prefix}/error.log",
        "-g",
        "daemon off;",
    ]

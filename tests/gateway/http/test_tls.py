"""HTTPS to clients, and TLS with client certificates (mTLS) to upstreams."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.harness import Recorder, get, serve_gateway, serve_upstream, write_routes

pytestmark = pytest.mark.anyio


@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A throwaway CA that issues certificates for 127.0.0.1 into a directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        self.subject = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{name}-ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, name: str, usage: x509.ObjectIdentifier) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key()
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def upstream_tls(ca: Authority, server: Issued) -> dict[str, object]:
    """uvicorn options for an upstream that demands a client certificate from `ca`."""
    return {
        "ssl_certfile": str(server.cert),
        "ssl_keyfile": str(server.key),
        "ssl_ca_certs": str(ca.pem),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }


@pytest.mark.parametrize("variant", ["mtls", "no-client-cert", "wrong-ca"])
async def test_upstream_mtls(tmp_path: Path, variant: str) -> None:
    ca = Authority(tmp_path, "services")
    other = Authority(tmp_path, "other")
    server = ca.issue("search-service", ExtendedKeyUsageOID.SERVER_AUTH)
    client = ca.issue("gateway-client", ExtendedKeyUsageOID.CLIENT_AUTH)
    async with serve_upstream(**upstream_tls(ca, server)) as upstream:
        assert upstream.url.startswith("https://")
        tls = {
            "mtls": f"ca: {ca.pem.name}, client_cert: {client.cert.name}, client_key: {client.key.name}",
            "no-client-cert": f"ca: {ca.pem.name}",
            "wrong-ca": f"ca: {other.pem.name}, client_cert: {client.cert.name}, client_key: {client.key.name}",
        }[variant]
        routes = tmp_path / "routes.yaml"
        write_routes(routes, f'upstreams:\n  s: {{url: "{upstream.url}", {tls}}}\ndefault: s\n')
        async with serve_gateway(routes) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(get("/search"))
            status = await reader.readline()
            writer.close()
    if variant == "mtls":
        assert status.startswith(b"HTTP/1.1 200")
        assert [s.raw_path for s in upstream.seen] == ["/search"]
    else:
        assert status.startswith(b"HTTP/1.1 502")
        assert upstream.seen == []


async def test_gateway_serves_https(tmp_path: Path, upstream: Recorder) -> None:
    ca = Authority(tmp_path, "edge")
    edge = ca.issue("gateway", ExtendedKeyUsageOID.SERVER_AUTH)
    routes = tmp_path / "routes.yaml"
    write_routes(routes, f'upstreams:\n  s: {{url: "{upstream.url}"}}\ndefault: s\n')
    tls = {"ssl_certfile": str(edge.cert), "ssl_keyfile": str(edge.key)}
    async with serve_gateway(routes, **tls) as gw:
        assert gw.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(ca.pem))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=context)
        writer.write(get("/x"))
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert upstream.seen[-1].header("x-forwarded-proto") == ["https"]


def test_tls_options_need_an_https_upstream_and_come_in_pairs(tmp_path: Path) -> None:
    from common.validation import ConfigError
    from gateway.config.table import parse

    (tmp_path / "ca.pem").write_text("x")
    source = str(tmp_path / "routes.yaml")
    with pytest.raises(ConfigError) as info:
        parse(
            b'upstreams:\n  a: {url: "http://a", ca: ca.pem, client_cert: ca.pem}\n'
            b"  b: {url: 'https://b', ca: missing.pem}\n"
            b"auth: {default: none}\nauthz: none\n",
            source,
        )
    messages = [str(i) for i in info.value.issues]
    assert any("client_cert and client_key go together" in m for m in messages)
    assert any("need an https:// url" in m for m in messages)
    assert any("missing.pem" in m and "not a readable file" in m for m in messages)

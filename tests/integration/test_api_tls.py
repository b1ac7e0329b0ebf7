"""HTTPS: the all-in-one given `[api] tls_cert`/`tls_key` serves TLS on 127.0.0.1 (a self-signed
certificate made here with `cryptography`), and a plain-HTTP client gets no answer from it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.clouds import free_port, stack_settings


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "canopy-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "api.crt", folder / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_allinone_serves_https(data_dir: Path, tmp_path: Path) -> None:
    from canopy.allinone import AllInOne

    cert, key = self_signed(tmp_path)
    settings = stack_settings(data_dir)
    port = free_port()
    settings.api.host, settings.api.port = "127.0.0.1", port
    settings.api.tls_cert, settings.api.tls_key = str(cert), str(key)
    settings.api.public_url = f"https://127.0.0.1:{port}"
    aio = AllInOne(settings, hosts=1, serve_http=True)
    await aio.start()
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trusting, base_url=f"https://127.0.0.1:{port}") as https:
            body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": "admin"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
            resp = await https.post("/identity/v3/auth/tokens", json=body)
            assert resp.status_code == 201
            token = resp.headers["x-subject-token"]
            servers = await https.get("/compute/v2.1/servers", headers={"X-Auth-Token": token})
            assert servers.status_code == 200
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/identity/v3")  # TLS only: a plain request gets no HTTP answer
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}") as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/identity/v3")  # the system's CAs do not know our certificate
    finally:
        await aio.stop()

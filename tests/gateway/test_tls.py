"""TLS on every listener and mTLS from gateway to router, with certificates the test makes itself."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway_service.server import build_gateway
from router_service.server import build_router
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.conftest import router_settings
from tests.gateway.conftest import WEAK, Stack, gateway_settings


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost / 127.0.0.1, and a client certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, extra in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(f"test {role}")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        )
        if extra:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        files[f"{role}_cert"] = folder / f"{role}.pem"
        files[f"{role}_key"] = folder / f"{role}-key.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    return files


async def test_mtls_router_and_tls_gateway(stack: Stack, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_tls = {"tls_cert": pki["server_cert"], "tls_key": pki["server_key"]}
    router = await build_router(router_settings(
        server={"host": "127.0.0.1", "port": 0, "grace_s": 5, **server_tls, "tls_client_ca": pki["ca"]},
    ))
    ollama_url, openai_url = stack.upstream_roots
    settings = gateway_settings(
        router.port, ollama_url, openai_url,
        server={"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "grace_s": 5, **server_tls},
        router={"address": f"localhost:{router.port}", "timeout_s": 3, "tls_ca": pki["ca"],
                "tls_cert": pki["client_cert"], "tls_key": pki["client_key"]},
    )
    gateway = await build_gateway(settings)
    try:
        # A caller without a client certificate is turned away by the router.
        channel_creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{router.port}", channel_creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await router_pb2_grpc.RouterServiceStub(channel).Route(router_pb2.RouteRequest(prompt="hi"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The gateway, with its client certificate, routes over mTLS; clients reach it over TLS.
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=pki["ca"])) as http, openai.AsyncOpenAI(
            base_url=f"https://localhost:{gateway.http_port}/v1", api_key="x", max_retries=0,
            http_client=http,  # type: ignore[arg-type]  # the SDK types its own httpx fork; a plain httpx client works
        ) as sdk:
            raw = await sdk.chat.completions.with_raw_response.create(
                model="router-mf-50", messages=[{"role": "user", "content": "hello over TLS"}]
            )
        assert raw.headers["x-route-routed"] == "true" and raw.headers["x-route-degraded"] == "false"
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as plain:  # the system trust store does not know our CA
                await plain.get(f"https://localhost:{gateway.http_port}/healthz")
        gateway_creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{gateway.grpc_port}", gateway_creds) as channel:
            from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc

            request = gateway_pb2.ChatRequest(model=WEAK, messages=[gateway_pb2.ChatMessage(role="user", content="hi")])
            chunks = [c async for c in gateway_pb2_grpc.GatewayServiceStub(channel).Chat(request, timeout=10)]
        assert "".join(c.delta for c in chunks) == "Hello, world!"
    finally:
        await gateway.stop()
        await router.stop()

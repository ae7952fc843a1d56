"""TLS credentials from PEM files: gRPC servers and channels, and the HTTP listener's ssl options."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from .errors import ConfigError
from .settings import GrpcClientSettings, TlsServerSettings

__all__ = ["channel_credentials", "http_ssl_options", "read_pem", "server_credentials"]


def read_pem(path: Path | None, setting: str) -> bytes | None:
    """The bytes of a PEM file a setting names; None when unset."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} does not exist")
    return path.read_bytes()


def _check_pair(tls: TlsServerSettings, setting: str) -> bool:
    """True when TLS is on; a half-configured section is an error naming the missing key."""
    if tls.tls_cert is None and tls.tls_key is None:
        if tls.tls_client_ca is not None:
            raise ConfigError(f"{setting}.tls_client_ca needs {setting}.tls_cert and {setting}.tls_key")
        return False
    if tls.tls_cert is None or tls.tls_key is None:
        raise ConfigError(f"set both {setting}.tls_cert and {setting}.tls_key for TLS")
    return True


def server_credentials(tls: TlsServerSettings, setting: str) -> grpc.ServerCredentials | None:
    """TLS (and mTLS, with a client CA) credentials for a gRPC server; None: plaintext."""
    if not _check_pair(tls, setting):
        return None
    ca = read_pem(tls.tls_client_ca, f"{setting}.tls_client_ca")
    key = read_pem(tls.tls_key, f"{setting}.tls_key")
    cert = read_pem(tls.tls_cert, f"{setting}.tls_cert")
    assert key is not None and cert is not None  # _check_pair saw both
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def http_ssl_options(tls: TlsServerSettings, setting: str) -> dict[str, Any]:
    """uvicorn's ssl keyword arguments for the same files; empty: plaintext."""
    if not _check_pair(tls, setting):
        return {}
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        read_pem(getattr(tls, name), f"{setting}.{name}")  # a missing file is a ConfigError, not an ssl traceback
    options: dict[str, Any] = {"ssl_certfile": str(tls.tls_cert), "ssl_keyfile": str(tls.tls_key)}
    if tls.tls_client_ca is not None:
        options |= {"ssl_ca_certs": str(tls.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def channel_credentials(client: GrpcClientSettings, setting: str) -> grpc.ChannelCredentials | None:
    """Credentials to call a TLS (or mTLS) service; None: plaintext.

    ``setting``: the config section errors name (``router``); empty for command-line flags."""

    def name(field: str) -> str:
        return f"{setting}.{field}" if setting else "--" + field.replace("_", "-")

    if client.tls_ca is None:
        if client.tls_cert is not None or client.tls_key is not None:
            raise ConfigError(f"{name('tls_cert')} and {name('tls_key')} need {name('tls_ca')}")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(client.tls_ca, name("tls_ca")),
        private_key=read_pem(client.tls_key, name("tls_key")),
        certificate_chain=read_pem(client.tls_cert, name("tls_cert")),
    )

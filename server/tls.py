"""TLS and mutual TLS of the gRPC port.

The certificate files are checked with the standard library's :mod:`ssl` at
start-up, so a wrong path, a key that does not match its certificate or a file
that is not PEM stops the server with one clear line instead of failing every
handshake later.
"""

from __future__ import annotations

import logging
import pathlib
import ssl

import grpc

from server.config import Settings

logger = logging.getLogger(__name__)

#: ``auth_context()`` key of a verified client certificate's subject CN.
COMMON_NAME_KEY = "x509_common_name"


class TLSConfigError(RuntimeError):
    """A TLS file cannot be used; the message names it."""


def _read(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc}") from exc


def describe(settings: Settings) -> str:
    """The ``tls=`` part of the policy line: ``off``, ``tls`` or ``mtls``."""
    if not settings.tls_cert:
        return "off"
    return "mtls" if settings.tls_client_ca else "tls"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for ``settings.tls_*``, or ``None`` for plaintext.

    With ``tls_client_ca`` clients must present a certificate that chains to
    it (``require_client_auth``); the handshake refuses the others.

    Raises:
        TLSConfigError: A file is unreadable, not PEM, or the key does not
            match the certificate.
    """
    if not settings.tls_cert:
        return None
    cert = _read(settings.tls_cert, "--tls-cert")
    key = _read(settings.tls_key, "--tls-key")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(
            f"--tls-cert {settings.tls_cert} and --tls-key {settings.tls_key} are not a PEM "
            f"certificate and its private key: {exc}"
        ) from exc
    client_ca = None
    if settings.tls_client_ca:
        client_ca = _read(settings.tls_client_ca, "--tls-client-ca")
        try:
            check.load_verify_locations(cafile=settings.tls_client_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise TLSConfigError(
                f"--tls-client-ca {settings.tls_client_ca} is not a PEM CA certificate: {exc}"
            ) from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def peer_common_name(context: grpc.aio.ServicerContext) -> str | None:
    """The subject CN of the verified client certificate of a call, if any."""
    values = context.auth_context().get(COMMON_NAME_KEY) or ()
    for value in values:
        return value.decode("utf-8", errors="replace")
    return None

"""TLS contexts from files, checked at start: the broker's clients (bus/messaging/tls.py builds on
these), the gateway's server side and the HTTP destinations' client side.

Each is read once at start and checked by loading them into an ``ssl.SSLContext``: a
file that is missing, unreadable or not what it claims is a ConfigError naming the
option and the file, before anything is served or sent, never a failure at the first
request.  Modern defaults: TLS 1.2 at least, the ``ssl`` module's default ciphers.

Verification is never switched off here or anywhere (tests/unit/test_tls_never_off.py
greps the code for it): a destination whose certificate does not verify fails its
delivery, it is not sent to unverified.
"""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from bus.errors import ConfigError

GATEWAY_CERT = "GRIDBUS_GATEWAY_TLS_CERT"
GATEWAY_KEY = "GRIDBUS_GATEWAY_TLS_KEY"
GATEWAY_CLIENT_CA = "GRIDBUS_GATEWAY_TLS_CLIENT_CA"
DESTINATION_CA = "GRIDBUS_DESTINATION_CA"
DESTINATION_CERT = "GRIDBUS_DESTINATION_CERT"
DESTINATION_KEY = "GRIDBUS_DESTINATION_KEY"


def readable(option: str, path: str) -> str:
    """``path`` if it is a readable file; else a ConfigError naming ``option`` and the file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{option}: {path}: no such file", path)
    try:
        with open(file, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{option}: {path}: cannot read it ({exc.strerror or exc})", path) from exc
    return str(file)


def _load_chain(context: ssl.SSLContext, cert_option: str, cert: str, key_option: str, key: str | None) -> None:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        # OpenSSL says which step failed (PEM, key mismatch), not which file: name both
        raise ConfigError(f"{cert_option}/{key_option}: {cert} and {key or 'the key in it'} are not a "
                          f"certificate with its private key ({exc.reason or exc})", cert) from exc


def _load_ca(context: ssl.SSLContext, option: str, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(f"{option}: {path}: not a PEM CA certificate bundle ({exc.reason or exc})", path) from exc
    # OpenSSL loads an expired CA without a word and every handshake then fails with a bare
    # "certificate has expired": say which file, at start
    now = time.time()
    for ca in context.get_ca_certs():
        if ssl.cert_time_to_seconds(ca["notAfter"]) < now:
            subject = ", ".join(f"{k}={v}" for rdn in ca.get("subject", ()) for k, v in rdn)
            raise ConfigError(f"{option}: the CA certificate {subject} in {path} expired on {ca['notAfter']}", path)


def _modern(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_context(ca: tuple[str, str | None], cert: tuple[str, str | None] = ("", None),
                   key: tuple[str, str | None] = ("", None)) -> ssl.SSLContext:
    """A client context, each file given as (its option or setting, path or None): the server's
    certificate verified and its host name checked; with a CA bundle, that bundle alone is
    trusted (not the system's store beside it, as requests' ``verify=<bundle>`` does), else the
    system's store; the client certificate loaded when there is one.  Every file is read now."""
    (ca_option, ca_path), (cert_option, cert_path), (key_option, key_path) = ca, cert, key
    if ca_path:
        context = _modern(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # verify_mode REQUIRED, host names checked
        _load_ca(context, ca_option, readable(ca_option, ca_path))
    else:
        context = _modern(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    if cert_path:
        readable(cert_option, cert_path)
        if key_path:
            readable(key_option, key_path)
        _load_chain(context, cert_option, cert_path, key_option, key_path)
    return context


def server_context(cert: str, key: str | None, client_ca: str | None = None, *,
                   names: tuple[str, str, str] = ("--tls-cert", "--tls-key", "--tls-client-ca")) -> ssl.SSLContext:
    """The gateway's TLS: its certificate (chain) and key; with ``client_ca``, every client must
    present a certificate signed by it (the handshake fails without one).  ``names``: how the
    options are called in messages."""
    cert_name, key_name, ca_name = names
    cert = readable(cert_name, cert)
    key = readable(key_name, key) if key else None
    context = _modern(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    _load_chain(context, cert_name, cert, key_name, key)
    if client_ca:
        _load_ca(context, ca_name, readable(ca_name, client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True)
class DestinationTls:
    """How the HTTP destinations check whom they talk to, and who they say they are.

    ``ca``: the CA bundle destination certificates must verify against (None: the system's
    store); ``cert``/``key``: the client certificate for destinations that ask for one."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> "DestinationTls":
        ca, cert, key = (env.get(n) or None for n in (DESTINATION_CA, DESTINATION_CERT, DESTINATION_KEY))
        if key and not cert:
            raise ConfigError(f"{DESTINATION_KEY} is set without {DESTINATION_CERT}: the key of which certificate?")
        tls = cls(readable(DESTINATION_CA, ca) if ca else None, readable(DESTINATION_CERT, cert) if cert else None,
                  readable(DESTINATION_KEY, key) if key else None)
        tls.ssl_context()  # every file loaded once now: a bad one is named at start
        return tls

    @property
    def requests_cert(self) -> str | tuple[str, str] | None:
        """``requests``' ``cert``: the file, or (certificate, key)."""
        if not self.cert:
            return None
        return (self.cert, self.key) if self.key else self.cert

    def ssl_context(self) -> ssl.SSLContext:
        """The client context (aiohttp's ``ssl=``): host names checked, certificates verified;
        a configured CA replaces the system's store, as requests' ``verify=<bundle>`` does, so
        the two workers trust the same certificates."""
        return client_context((DESTINATION_CA, self.ca), (DESTINATION_CERT, self.cert), (DESTINATION_KEY, self.key))


def destination_tls() -> DestinationTls:
    """The destinations' TLS settings from the environment (and the env file)."""
    from bus.settings import environment

    return DestinationTls.from_environment(environment())

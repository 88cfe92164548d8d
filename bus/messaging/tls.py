"""TLS to the broker: the settings, and what each client library needs from them.

A broker URL with ``amqps://`` is spoken over TLS; the server's certificate is verified
against ``GRIDBUS_TLS_CA`` (a CA bundle file; unset: the system's store) and its host name
against the address in the URL.  ``GRIDBUS_TLS_CERT`` and ``GRIDBUS_TLS_KEY`` are a client
certificate shown to the broker (needed when it requires one), and ``GRIDBUS_BROKER_AUTH=external``
logs in by that certificate (SASL EXTERNAL, the rabbitmq_auth_mechanism_ssl plugin) instead of
the URL's user and password.  A plain ``amqp://`` URL ignores all of them.

The files are read here, when the settings are read, so that a missing, unreadable, garbage or
expired file is a ``ConfigError`` naming the variable and the file when a process starts, never
a handshake failure later.  Settings come from ``bus.settings.environment()`` (the process
environment over ``$GRIDBUS_HOME/dev.env``).
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass

from bus.errors import ConfigError

CA_VAR, CERT_VAR, KEY_VAR, AUTH_VAR = "GRIDBUS_TLS_CA", "GRIDBUS_TLS_CERT", "GRIDBUS_TLS_KEY", "GRIDBUS_BROKER_AUTH"
AUTH_METHODS = ("plain", "external")


@dataclass(frozen=True)
class TlsSettings:
    ca: str | None = None  # CA bundle file; None: the system's trust store
    cert: str | None = None  # client certificate (PEM), the key in it or in ``key``
    key: str | None = None
    external: bool = False  # SASL EXTERNAL: the client certificate is the login

    @property
    def login_method(self) -> str:
        """py-amqp's and kombu's ``login_method``.  Named always: left to itself py-amqp takes the
        first of GSSAPI, EXTERNAL, AMQPLAIN, PLAIN that the broker offers, so a broker offering
        EXTERNAL would get it for a user who meant the URL's password."""
        return "EXTERNAL" if self.external else "PLAIN"


def uses_tls(url: str) -> bool:
    """Whether a broker URL is spoken over TLS (``amqps://``)."""
    return url.strip().lower().startswith("amqps://")


def read_settings(env: dict[str, str] | None = None) -> TlsSettings:
    """The TLS settings of ``env`` (default: ``bus.settings.environment()``), their files checked:
    ``ConfigError`` naming the variable and the file when one cannot be used."""
    if env is None:
        from bus.settings import environment

        env = environment()
    auth = (env.get(AUTH_VAR) or "plain").strip().lower()
    if auth not in AUTH_METHODS:
        raise ConfigError(f"{AUTH_VAR}={env.get(AUTH_VAR)!r}: expected one of {', '.join(AUTH_METHODS)}")
    settings = TlsSettings(ca=env.get(CA_VAR) or None, cert=env.get(CERT_VAR) or None,
                           key=env.get(KEY_VAR) or None, external=auth == "external")
    if settings.key and not settings.cert:
        raise ConfigError(f"{KEY_VAR} is set but {CERT_VAR} is not: a key needs its certificate")
    if settings.external and not settings.cert:
        raise ConfigError(f"{AUTH_VAR}=external logs in by the client certificate: set {CERT_VAR} "
                          f"(and {KEY_VAR}) to it")
    client_context(settings)  # every file read and checked now, not at the first handshake
    return settings


def for_broker(broker_url: str, env: dict[str, str] | None = None) -> TlsSettings | None:
    """The TLS settings for connections to ``broker_url``, None when it is plain ``amqp://``
    (then the TLS variables are not even read: a plain URL works exactly as without them)."""
    from bus.messaging.addresses import broker_urls

    if env is None:
        from bus.settings import environment

        env = environment()
    if not any(uses_tls(url) for url in broker_urls(broker_url)):
        if (env.get(AUTH_VAR) or "").strip().lower() == "external":
            raise ConfigError(f"{AUTH_VAR}=external needs amqps:// addresses in GRIDBUS_BROKER_URL "
                              "(a certificate login is made in the TLS handshake)")
        return None
    settings = read_settings(env)
    check_broker_url(broker_url, settings)
    return settings


def check_broker_url(broker_url: str, settings: TlsSettings) -> None:
    """One broker URL setting is all TLS or all plain (Celery takes one TLS option for all of
    its addresses), and a certificate login needs TLS."""
    from bus.messaging.addresses import broker_urls

    schemes = {uses_tls(url) for url in broker_urls(broker_url)}
    if len(schemes) > 1:
        raise ConfigError("GRIDBUS_BROKER_URL mixes amqp:// and amqps:// addresses: all of them or none over TLS")
    if settings.external and schemes != {True}:
        raise ConfigError(f"{AUTH_VAR}=external needs amqps:// addresses in GRIDBUS_BROKER_URL "
                          "(a certificate login is made in the TLS handshake)")


_contexts: dict[TlsSettings, ssl.SSLContext] = {}


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """A client SSLContext: the server's certificate verified against the CA and its host name
    checked (``ssl.create_default_context``: TLS 1.2 at least), the client certificate loaded.
    One per settings: a context is thread-safe and loading a bundle takes a few milliseconds."""
    context = _contexts.get(settings)
    if context is None:
        context = _contexts[settings] = _new_context(settings)
    return context


def _new_context(settings: TlsSettings) -> ssl.SSLContext:
    from bus import tls

    return tls.client_context((CA_VAR, settings.ca), (CERT_VAR, settings.cert), (KEY_VAR, settings.key))


def amqp_ssl_options(settings: TlsSettings, host: str | None) -> dict:
    """py-amqp's (and kombu's ``broker_use_ssl``) ``ssl=`` for ``host``: it takes a dict of
    wrap options, not a context.  ``host`` None lets kombu fill in the host of the URL."""
    options = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": host,
               "tls_minimum_version": ssl.TLSVersion.TLSv1_2}
    if settings.ca:
        options["ca_certs"] = settings.ca
    if settings.cert:
        options["certfile"] = settings.cert
        if settings.key:
            options["keyfile"] = settings.key
    return options


def verify_hint(settings: TlsSettings | None = None) -> str:
    """What to check when the server's certificate did not verify: which CA it was checked against."""
    ca = settings.ca if settings else None
    return (f"the broker's certificate is not signed by the CA in {CA_VAR} ({ca}), or it does not name the host "
            "of the broker URL" if ca else
            f"the broker's certificate is not signed by a CA of the system's store ({CA_VAR} is not set), "
            "or it does not name the host of the broker URL")

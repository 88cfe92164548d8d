"""TLS to the broker (bus/messaging/tls.py): settings checked at start, handshakes refused clearly.

The handshake tests talk to a TLS server of their own on 127.0.0.1 (a thread; it only shakes
hands), signed by a throw-away CA (gridbus_dev.tls, trustme): what the clients say when the
server's certificate does not verify does not need a broker.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from bus.broker_admin import BrokerAdmin
from bus.errors import BrokerError, BrokerUnavailable, ConfigError
from bus.messaging import aio, broker_addresses, connect, pika_connect
from bus.messaging import tls as broker_tls
from bus.messaging.publisher import ConfirmingPublisher
from bus.worker.app import broker_tls_conf
from gridbus_dev import tls as dev_tls


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dev_tls.TlsFiles:
    return dev_tls.make(tmp_path_factory.mktemp("tls") / "certs", clients=("gridbus", "meter-reader"))


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No dev.env, no TLS variables of the caller's: each test sets its own."""
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(tmp_path / "none.env"))
    for var in ("GRIDBUS_TLS_CA", "GRIDBUS_TLS_CERT", "GRIDBUS_TLS_KEY", "GRIDBUS_BROKER_AUTH"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


class HandshakeServer:
    """Accepts on 127.0.0.1 and shakes hands with ``cert``; the client decides whether it trusts it."""

    def __init__(self, cert: Path, key: Path):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(8)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(certs):
    s = HandshakeServer(certs.server_cert, certs.server_key)
    yield s
    s.close()


@pytest.fixture(scope="module")
def wrong_host_server(certs):
    cert, key = dev_tls.issue_server_cert(certs, ("wrong.example",), "wrong-host")
    s = HandshakeServer(cert, key)
    yield s
    s.close()


# -------------------------------------------------------------------------------- settings

def test_a_plain_url_reads_no_tls_file_so_it_works_as_before(env, tmp_path):
    # Given TLS settings naming files that do not exist
    env.setenv("GRIDBUS_TLS_CA", str(tmp_path / "missing.pem"))
    # When the settings for a plain amqp:// URL are read
    # Then there are none, and no error
    assert broker_tls.for_broker("amqp://guest:guest@127.0.0.1:5672//") is None
    assert broker_tls_conf("amqp://guest:guest@127.0.0.1:5672//") == {}


def test_a_missing_ca_file_is_a_config_error_naming_the_variable_and_the_file(env, tmp_path):
    # Given GRIDBUS_TLS_CA names a file that is not there
    missing = tmp_path / "missing.pem"
    env.setenv("GRIDBUS_TLS_CA", str(missing))
    # When a TLS connection's settings are read
    with pytest.raises(ConfigError) as caught:
        broker_tls.for_broker("amqps://127.0.0.1:5671//")
    # Then the error names both
    assert "GRIDBUS_TLS_CA" in str(caught.value) and str(missing) in str(caught.value)


def test_an_unreadable_key_is_a_config_error_naming_it(env, certs, tmp_path):
    # Given a client key the process may not read
    key = tmp_path / "key.pem"
    key.write_bytes(certs.client_key("gridbus").read_bytes())
    key.chmod(0)
    env.setenv("GRIDBUS_TLS_CA", str(certs.ca))
    env.setenv("GRIDBUS_TLS_CERT", str(certs.client_cert("gridbus")))
    env.setenv("GRIDBUS_TLS_KEY", str(key))
    try:
        import os
        if os.access(key, os.R_OK):
            pytest.skip("running as a user who reads any file (root): nothing is unreadable")
        # When the settings are read
        with pytest.raises(ConfigError) as caught:
            broker_tls.read_settings()
        # Then the error names the variable and the file
        assert "GRIDBUS_TLS_KEY" in str(caught.value) and str(key) in str(caught.value)
    finally:
        key.chmod(0o600)


def test_a_garbage_ca_file_is_a_config_error_at_start(env, tmp_path):
    # Given a CA "bundle" that holds no certificate
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    env.setenv("GRIDBUS_TLS_CA", str(garbage))
    # When the settings are read, Then a ConfigError names the variable and the file
    with pytest.raises(ConfigError, match="GRIDBUS_TLS_CA") as caught:
        broker_tls.read_settings()
    assert str(garbage) in str(caught.value)


def test_an_expired_ca_is_a_config_error_at_start_not_a_failing_handshake_later(env, tmp_path):
    # Given a CA bundle whose only certificate expired yesterday (OpenSSL loads it without a word)
    ca = dev_tls.expired_ca_bundle(tmp_path / "expired.pem")
    env.setenv("GRIDBUS_TLS_CA", str(ca))
    # When the settings are read
    with pytest.raises(ConfigError) as caught:
        broker_tls.read_settings()
    # Then the error says it expired, and where
    assert "expired" in str(caught.value) and str(ca) in str(caught.value) and "GRIDBUS_TLS_CA" in str(caught.value)


def test_a_certificate_with_a_key_not_its_own_is_a_config_error(env, certs):
    # Given the gridbus client certificate with another client's key
    env.setenv("GRIDBUS_TLS_CERT", str(certs.client_cert("gridbus")))
    env.setenv("GRIDBUS_TLS_KEY", str(certs.client_key("meter-reader")))
    # When the settings are read, Then both variables are named
    with pytest.raises(ConfigError, match="GRIDBUS_TLS_CERT/GRIDBUS_TLS_KEY"):
        broker_tls.read_settings()


def test_a_key_without_a_certificate_and_an_unknown_login_are_config_errors(env, certs):
    env.setenv("GRIDBUS_TLS_KEY", str(certs.client_key("gridbus")))
    with pytest.raises(ConfigError, match="GRIDBUS_TLS_CERT is not"):
        broker_tls.read_settings()
    env.delenv("GRIDBUS_TLS_KEY")
    env.setenv("GRIDBUS_BROKER_AUTH", "kerberos")
    with pytest.raises(ConfigError, match="GRIDBUS_BROKER_AUTH"):
        broker_tls.read_settings()


def test_a_certificate_login_needs_a_certificate_and_tls(env, certs):
    # Given a certificate login asked for
    env.setenv("GRIDBUS_BROKER_AUTH", "external")
    # Then without a client certificate it is refused
    with pytest.raises(ConfigError, match="GRIDBUS_TLS_CERT"):
        broker_tls.for_broker("amqps://127.0.0.1:5671//")
    # and with one but a plain URL too
    env.setenv("GRIDBUS_TLS_CERT", str(certs.client_cert("meter-reader")))
    env.setenv("GRIDBUS_TLS_KEY", str(certs.client_key("meter-reader")))
    with pytest.raises(ConfigError, match="amqps://"):
        broker_tls.for_broker("amqp://127.0.0.1:5672//")
    # and with both it is EXTERNAL for py-amqp and Celery
    settings = broker_tls.for_broker("amqps://127.0.0.1:5671//")
    assert settings.login_method == "EXTERNAL"
    assert broker_tls_conf("amqps://127.0.0.1:5671//")["broker_login_method"] == "EXTERNAL"


def test_one_setting_is_all_tls_or_all_plain(env):
    with pytest.raises(ConfigError, match="mixes"):
        broker_tls.for_broker("amqps://127.0.0.1:5671//;amqp://127.0.0.1:5672//")


def test_an_amqps_address_defaults_to_port_5671_and_a_plain_one_to_5672(env):
    tls_address, plain_address = broker_addresses("amqps://u:p@node1//;amqp://u:p@node2//")
    assert (tls_address.port, tls_address.tls) == (5671, True)
    assert (plain_address.port, plain_address.tls) == (5672, False)


def test_celery_gets_the_ca_the_client_certificate_and_a_checked_host_name(env, certs):
    # Given a CA and a client certificate
    env.setenv("GRIDBUS_TLS_CA", str(certs.ca))
    env.setenv("GRIDBUS_TLS_CERT", str(certs.client_cert("gridbus")))
    env.setenv("GRIDBUS_TLS_KEY", str(certs.client_key("gridbus")))
    # When Celery's options are made for an amqps:// URL
    conf = broker_tls_conf("amqps://guest:guest@127.0.0.1:5671//")
    # Then the server certificate is required and verified against the CA, the host name left for
    # kombu to fill in from the URL (None), and the login is the URL's password, said explicitly
    ssl_options = conf["broker_use_ssl"]
    assert ssl_options["cert_reqs"] == ssl.CERT_REQUIRED and ssl_options["ca_certs"] == str(certs.ca)
    assert "server_hostname" in ssl_options and ssl_options["server_hostname"] is None
    assert ssl_options["certfile"] == str(certs.client_cert("gridbus"))
    assert conf["broker_login_method"] == "PLAIN"


# -------------------------------------------------------------------------------- handshakes

def _refused_quickly(call) -> BrokerError:
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        call()
    assert time.monotonic() - started < 5, "a refusal must come at once, not after retries"
    # a refusal, not "the node is away": nobody tries it again elsewhere
    assert not isinstance(caught.value, BrokerUnavailable), caught.value
    return caught.value


def _aio_connect(url: str):
    async def attempt():
        connection = await aio.connect(url, "test")
        await connection.close()
    return lambda: asyncio.run(attempt())


@pytest.mark.parametrize("client", ["py-amqp", "pika", "aio-pika", "publisher"])
def test_a_server_certificate_of_another_ca_is_refused_at_once_naming_gridbus_tls_ca(env, certs, server,
                                                                                      tmp_path, client):
    # Given a CA bundle that did not sign the server's certificate
    env.setenv("GRIDBUS_TLS_CA", str(dev_tls.other_ca_bundle(tmp_path / "other-ca.pem")))
    url = f"amqps://guest:guest@127.0.0.1:{server.port}//"
    call = {"py-amqp": lambda: connect(url, "test"), "pika": lambda: pika_connect(url, "test"),
            "aio-pika": _aio_connect(url),
            "publisher": lambda: ConfirmingPublisher(url, "test").publish("", "q", b"x", {}, {})}[client]
    # When the client connects
    refused = _refused_quickly(call)
    # Then it says the certificate did not verify, and which setting to look at
    assert "certificate verify failed" in str(refused) and "GRIDBUS_TLS_CA" in str(refused)


@pytest.mark.parametrize("client", ["py-amqp", "pika", "aio-pika"])
def test_a_server_certificate_for_another_host_name_is_refused(env, certs, wrong_host_server, client):
    # Given the right CA, but the server shows a certificate (of that CA) for wrong.example only
    env.setenv("GRIDBUS_TLS_CA", str(certs.ca))
    url = f"amqps://guest:guest@127.0.0.1:{wrong_host_server.port}//"
    call = {"py-amqp": lambda: connect(url, "test"), "pika": lambda: pika_connect(url, "test"),
            "aio-pika": _aio_connect(url)}[client]
    # When the client connects to 127.0.0.1, Then it refuses, saying so
    refused = _refused_quickly(call)
    assert "certificate verify failed" in str(refused) and "mismatch" in str(refused), refused


def test_the_management_api_over_https_is_verified_against_gridbus_tls_ca(env, certs, server, tmp_path):
    # Given an https management URL and a CA that did not sign the server's certificate
    env.setenv("GRIDBUS_TLS_CA", str(dev_tls.other_ca_bundle(tmp_path / "other-ca.pem")))
    admin = BrokerAdmin(f"https://guest:guest@127.0.0.1:{server.port}")
    # When it is asked, Then it refuses the server (never verify=False), saying why
    with pytest.raises(BrokerError, match="certificate verify failed"):
        admin.queues()
    # and with the right CA it goes as far as the handshake and past it (this server speaks no HTTP)
    env.setenv("GRIDBUS_TLS_CA", str(certs.ca))
    with pytest.raises(BrokerError) as caught:
        BrokerAdmin(f"https://guest:guest@127.0.0.1:{server.port}").queues()
    assert "certificate verify failed" not in str(caught.value)

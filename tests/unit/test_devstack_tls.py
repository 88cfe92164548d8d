"""`gridbus dev up --tls`'s pieces: the throw-away certificates and the TLS-only node's configuration."""
from __future__ import annotations

import ssl
import stat

import pytest

from bus.errors import GridbusError
from gridbus_dev import devstack
from gridbus_dev import tls as dev_tls


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dev_tls.TlsFiles:
    return dev_tls.make(tmp_path_factory.mktemp("dev-tls") / "tls", clients=dev_tls.DEV_STACK_CLIENTS)


def test_the_certificates_are_owner_only_and_made_once(files):
    # Given the dev stack's certificates
    # Then the folder and every file are for their owner alone
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in files.folder.iterdir()} == {0o600}
    # and made again with keep, nothing changes (the node's configuration names them)
    before = files.ca.read_bytes()
    assert dev_tls.make(files.folder, clients=dev_tls.DEV_STACK_CLIENTS).ca.read_bytes() == before


def test_the_server_certificate_names_loopback_and_each_client_its_user(files):
    # Given a client context trusting the throw-away CA
    context = ssl.create_default_context(cafile=str(files.ca))
    # Then the server's certificate names 127.0.0.1 and localhost, and each client's CN is its name
    server = ssl._ssl._test_decode_cert(str(files.server_cert))
    assert {v for k, v in server["subjectAltName"]} >= {"127.0.0.1", "localhost"}
    for name in dev_tls.DEV_STACK_CLIENTS:
        client = ssl._ssl._test_decode_cert(str(files.client_cert(name)))
        assert ("commonName", name) in [rdn[0] for rdn in client["subject"]]
        context.load_cert_chain(files.client_cert(name), files.client_key(name))  # its key is its own


def test_a_tls_node_has_no_plain_listener_and_https_management_on_loopback_only(files, tmp_path, monkeypatch):
    # Given a caller whose environment would open a plain listener (pytest-rabbitmq sets these)
    monkeypatch.setenv("RABBITMQ_NODE_PORT", "5672")
    monkeypatch.setenv("RABBITMQ_NODE_IP_ADDRESS", "0.0.0.0")
    node = devstack.TlsNode(files.ca, files.server_cert, files.server_key, require_client_cert=True,
                            cert_login=True)
    # When the node's environment and configuration are written
    env = devstack.rabbit_env(tmp_path / "node", 5999, 15999, 25999, "t@localhost", node)
    config = (tmp_path / "node" / "rabbitmq.conf").read_text().splitlines()
    # Then no plain AMQP listener, TLS on 127.0.0.1 only, and the management API over HTTPS only
    assert "RABBITMQ_NODE_PORT" not in env and "RABBITMQ_NODE_IP_ADDRESS" not in env
    assert "listeners.tcp = none" in config and "listeners.ssl.default = 127.0.0.1:5999" in config
    assert not [line for line in config if line.startswith("management.tcp")]
    assert "management.ssl.port = 15999" in config and "management.ssl.ip = 127.0.0.1" in config
    # and client certificates verified and required, EXTERNAL offered beside passwords
    assert "ssl_options.verify = verify_peer" in config and "ssl_options.fail_if_no_peer_cert = true" in config
    assert "auth_mechanisms.3 = EXTERNAL" in config and "ssl_cert_login_from = common_name" in config
    assert "rabbitmq_auth_mechanism_ssl" in (tmp_path / "node" / "enabled_plugins").read_text()
    assert "{127,0,0,1}" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]


def test_a_plain_node_is_configured_as_before(tmp_path):
    # When a node without TLS is configured
    env = devstack.rabbit_env(tmp_path / "node", 5999, 15999, 25999, "t@localhost")
    config = (tmp_path / "node" / "rabbitmq.conf").read_text()
    # Then it listens as it always did: plain AMQP from the environment, management over HTTP
    assert env["RABBITMQ_NODE_PORT"] == "5999" and env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    assert "management.tcp.port = 15999" in config and "ssl" not in config
    assert (tmp_path / "node" / "enabled_plugins").read_text() == "[rabbitmq_management].\n"


def test_certificate_login_is_off_unless_asked_and_client_certificates_optional_unless_required(files):
    lines = devstack.TlsNode(files.ca, files.server_cert, files.server_key).config_lines(5999, 15999)
    assert "ssl_options.fail_if_no_peer_cert = false" in lines
    assert not [line for line in lines if "EXTERNAL" in line or "ssl_cert_login_from" in line]


def test_dev_up_refuses_to_reuse_a_running_node_of_the_other_kind(files, tmp_path, monkeypatch):
    # Given a dev node running, started without TLS
    monkeypatch.setattr(devstack, "ensure_rabbitmq_installed", lambda: None)
    monkeypatch.setattr(devstack, "port_open", lambda port, host="127.0.0.1": True)
    (tmp_path / "rabbitmq").mkdir()
    (tmp_path / "rabbitmq" / "listens").write_text("tcp")
    node = devstack.TlsNode(files.ca, files.server_cert, files.server_key)
    # When `dev up --tls` would start it, Then it says to stop it first
    with pytest.raises(GridbusError, match="dev down"):
        devstack.start_rabbitmq(tmp_path / "rabbitmq", log=lambda _line: None, tls=node)
    # and a plain `dev up` takes it as it is
    devstack.start_rabbitmq(tmp_path / "rabbitmq", log=lambda _line: None)


def test_dev_up_tls_writes_tls_addresses_and_the_clients_certificates(files):
    values = dev_tls.dev_stack_env(files, 5679, 15679)
    assert values["GRIDBUS_BROKER_URL"] == "amqps://guest:guest@127.0.0.1:5679//"
    assert values["GRIDBUS_MANAGEMENT_URL"] == "https://guest:guest@127.0.0.1:15679"
    assert values["GRIDBUS_TLS_CA"] == str(files.ca) and values["GRIDBUS_TLS_CERT"] == str(files.client_cert("gridbus"))
    assert values["ADMS_AMQP_CERT"] == str(files.client_cert("adms"))
    assert dev_tls.as_tls_url("amqp://adms:pw@127.0.0.1:5679/%2F") == "amqps://adms:pw@127.0.0.1:5679/%2F"

"""TLS on every hop to the broker: a node that speaks TLS only, the bus's processes on it.

One RabbitMQ node for this module (devstack's TLS layout: no plain AMQP listener, the
management API over HTTPS only, client certificates required, EXTERNAL offered beside
passwords), certificates from a throw-away CA (gridbus_dev.tls).  A file and alarms travel
gateway, ingress and worker to the stand-ins and are counted there; a client certificate
logs in as its common name with no password; what is refused is refused at once, saying why.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bus.broker_admin import BrokerAdmin
from bus.errors import BrokerError
from bus.messaging import connect, pika_connect
from bus.messaging.publisher import ConfirmingPublisher
from gridbus_dev import devstack
from gridbus_dev import tls as dev_tls
from tests.integration.fault_stack import FaultStack, alarm
from tests.support import ROOT, ROUTE_ENV, free_port, run_cli, wait_for

pytestmark = pytest.mark.broker
CERT_USER = "meter-reader"  # a client certificate's common name, and the broker user it logs in as


class TlsOnlyNode:
    """A RabbitMQ node for this module alone, TLS only, on free loopback ports."""

    def __init__(self, base: Path, files: dev_tls.TlsFiles):
        self.base = base / "node"
        self.name = f"gridbus-tls-{uuid.uuid4().hex[:6]}@localhost"
        self.amqp, self.management, self.dist = free_port(), free_port(), free_port()
        tls = devstack.TlsNode(files.ca, files.server_cert, files.server_key, require_client_cert=True,
                               cert_login=True)
        self.env = devstack.rabbit_env(self.base, self.amqp, self.management, self.dist, self.name, tls)
        out = open(self.base / "server.out", "ab")
        self.server = subprocess.Popen([str(devstack.RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=out,
                                       stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        devstack.wait_for_port(self.amqp, 90, "rabbitmq-server (TLS)")
        devstack.wait_for_port(self.management, 60, "rabbitmq management (HTTPS)")

    def stop(self) -> None:
        try:
            subprocess.run([str(devstack.RABBIT_BIN / "rabbitmqctl"), "stop"], env=self.env, capture_output=True,
                           timeout=30)
        except (subprocess.SubprocessError, OSError):
            pass
        try:
            self.server.wait(30)
        except subprocess.TimeoutExpired:  # only the group this module started
            os.killpg(self.server.pid, 9)
            self.server.wait(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    if not (devstack.RABBIT_BIN / "rabbitmq-server").exists():
        pytest.skip(f"no RabbitMQ here ({devstack.RABBIT_BIN}/rabbitmq-server missing)")
    tmp = tmp_path_factory.mktemp("tls-node")
    files = dev_tls.make(tmp / "tls", clients=("gridbus", CERT_USER))
    started = TlsOnlyNode(tmp, files)
    started.files, started.tmp = files, tmp
    # this process (the test's own clients, BrokerAdmin) reads the settings as the processes do,
    # and never a developer's .gridbus/dev.env
    saved = {k: os.environ.get(k) for k in ("GRIDBUS_ENV_FILE", "GRIDBUS_TLS_CA", "GRIDBUS_TLS_CERT",
                                            "GRIDBUS_TLS_KEY", "GRIDBUS_BROKER_AUTH")}
    os.environ.update(GRIDBUS_ENV_FILE=str(tmp / "none.env"), **files.client_env("gridbus"))
    os.environ.pop("GRIDBUS_BROKER_AUTH", None)
    try:
        wait_for(lambda: _answers(started), 60, "the management API over HTTPS")
        yield started
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        started.stop()


def _answers(node: TlsOnlyNode) -> bool:
    try:
        return bool(BrokerAdmin(_management_url(node)).users())
    except BrokerError:
        return False


def _management_url(node: TlsOnlyNode) -> str:
    return f"https://guest:guest@127.0.0.1:{node.management}"


def _broker_url(node: TlsOnlyNode, user: str = "guest:guest@") -> str:
    return f"amqps://{user}127.0.0.1:{node.amqp}//"


def _env(node: TlsOnlyNode, **extra: str) -> dict:
    home = node.tmp / "home"
    home.mkdir(exist_ok=True)
    # the use-case-1 routes, with addresses no one calls: enough for a process to start
    return {**os.environ, **ROUTE_ENV, "GRIDBUS_ROUTES": str(ROOT / "routes" / "uc1-meter-data-files.yaml"),
            "GRIDBUS_BROKER_URL": _broker_url(node), "GRIDBUS_MANAGEMENT_URL": _management_url(node),
            "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(node.tmp / "none.env"), "PYTHONUNBUFFERED": "1",
            **node.files.client_env("gridbus"), **extra}


@pytest.fixture(scope="module")
def stack(node):
    bus = FaultStack(_env(node), node.tmp, _management_url(node))
    try:
        yield bus.start("gateway", "worker", "ingress")
    finally:
        bus.stop()


def test_a_file_and_alarms_travel_a_tls_only_stack_and_arrive_at_the_stand_ins(node, stack):
    # Given a block-load file of 10 meters for a day, and MDMS-1's and the ADMS's counts before
    summary = stack.generate("--profile", "block-load", "--meters", "10", "--days", "1", "--first-serial", "3000")
    readings, events, adms_events = (stack.mdms.stats()["readings"], stack.mdms.stats()["events"],
                                     stack.systems["adms"].stats()["events"])
    # When the file is dropped in the HES-A inbox and 40 last gasps are pushed to the gateway
    stack.drop(Path(summary["path"]))
    assert stack.push([alarm(n) for n in range(1, 41)]).status_code == 202
    # Then the file is reported complete and every reading is at MDMS-1
    wait_for(lambda: stack.reports(), 90, f"the file's report ({stack.log_tails()})")
    expected = summary["expected_readings"]
    wait_for(lambda: stack.mdms.stats()["readings"] - readings >= expected, 60, f"{expected} readings at MDMS-1")
    assert stack.mdms.stats()["readings"] - readings == expected
    # and every alarm at MDMS-1 and at the ADMS, once
    wait_for(lambda: stack.mdms.stats()["events"] - events >= 40, 60, "40 alarms at MDMS-1")
    wait_for(lambda: stack.systems["adms"].stats()["events"] - adms_events >= 40, 60, "40 alarms at the ADMS")
    assert stack.mdms.stats()["events"] - events == 40
    assert stack.rejected() == []
    # and every connection the broker holds (gateway, ingress, Celery's and the publishers') is TLS,
    # each with the client certificate it was given
    connections = BrokerAdmin(_management_url(node))._get("connections")
    assert connections and all(c.get("ssl") for c in connections), [(c["name"], c.get("ssl")) for c in connections]
    assert all("CN=gridbus" in (c.get("peer_cert_subject") or "") for c in connections)


def test_a_client_certificate_logs_in_as_its_common_name_with_no_password(node):
    # Given a broker user named as the certificate's common name, with no password at all
    admin = BrokerAdmin(_management_url(node))
    admin._send("PUT", f"users/{CERT_USER}", {"password_hash": "", "tags": ""})
    admin.set_permissions(CERT_USER, "^cert-login\\.", "^cert-login\\.|^amq\\.default$", "^cert-login\\.")
    with connect(_broker_url(node), "test-setup") as conn:
        conn.channel().queue_declare("cert-login.q", durable=True, auto_delete=False)
    # When a publisher logs in by its certificate (SASL EXTERNAL; the URL names no user)
    os.environ.update(GRIDBUS_BROKER_AUTH="external", GRIDBUS_TLS_CERT=str(node.files.client_cert(CERT_USER)),
                      GRIDBUS_TLS_KEY=str(node.files.client_key(CERT_USER)))
    try:
        with ConfirmingPublisher(_broker_url(node, user=""), "test-cert-login") as pub:
            for n in range(5):
                pub.publish("", "cert-login.q", f"reading {n}".encode(), {"delivery_mode": 2}, {})
            pub.flush()
            # Then the broker knows the connection as that user, logged in by EXTERNAL (the management
            # API lists a connection once its stats came, within seconds)
            def logged_in():
                return [(c.get("user"), c.get("auth_mechanism")) for c in admin._get("connections")
                        if c.get("client_properties", {}).get("connection_name") == "test-cert-login"]
            assert wait_for(logged_in, 30, "the connection in the management API") == [(CERT_USER, "EXTERNAL")]
    finally:
        os.environ.pop("GRIDBUS_BROKER_AUTH")
        os.environ.update(node.files.client_env("gridbus"))
    # and the queue holds the five messages
    wait_for(lambda: admin.queue("cert-login.q").get("messages") == 5, 20, "5 messages in cert-login.q")
    # and the same user cannot log in with a password (it has none)
    with pytest.raises(BrokerError, match="ACCESS_REFUSED|authentication|Authentication"):
        pika_connect(_broker_url(node, user=f"{CERT_USER}:@"), "test-password").close()


def test_a_client_trusting_another_ca_is_refused_at_once_saying_so(node):
    # Given a gridbus process whose GRIDBUS_TLS_CA did not sign the node's certificate
    env = _env(node, GRIDBUS_TLS_CA=str(dev_tls.other_ca_bundle(node.tmp / "other-ca.pem")))
    # When the worker starts (it declares the topology before Celery runs)
    started = time.monotonic()
    done = run_cli(env, "worker", "-c", "1", "--kind", "deliveries", timeout=60)
    # Then it exits 1 within seconds, naming the failed verification and the setting, no retry loop
    assert done.returncode == 1, done.stderr[-2000:]
    assert "certificate verify failed" in done.stderr and "GRIDBUS_TLS_CA" in done.stderr, done.stderr[-2000:]
    assert time.monotonic() - started < 30


def test_a_plain_client_on_the_tls_port_is_told_to_use_amqps(node):
    # Given the node's only AMQP port, named as plain amqp://
    url = f"amqp://guest:guest@127.0.0.1:{node.amqp}//"
    # When a client connects, Then it is refused at once, with a hint at amqps://
    started = time.monotonic()
    with pytest.raises(BrokerError, match="amqps://"):
        connect(url, "test-plain")
    assert time.monotonic() - started < 10
    # and the management port takes no plain HTTP either
    with pytest.raises(BrokerError):
        BrokerAdmin(f"http://guest:guest@127.0.0.1:{node.management}").users()


def test_a_client_without_a_certificate_is_refused_by_a_node_that_requires_one(node):
    # Given the right CA but no client certificate
    env = {k: v for k, v in _env(node).items() if k not in ("GRIDBUS_TLS_CERT", "GRIDBUS_TLS_KEY")}
    # When `routes apply` connects, Then it exits 1, pointing at the missing client certificate
    done = run_cli(env, "routes", "apply", timeout=60)
    assert done.returncode == 1 and "GRIDBUS_TLS_CERT" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("ca", ["expired", "garbage", "missing"])
def test_an_unusable_ca_file_stops_a_process_at_start_naming_the_variable_and_the_file(node, ca):
    # Given GRIDBUS_TLS_CA naming an expired CA, a file of garbage, or no file
    path = node.tmp / f"{ca}-ca.pem"
    if ca == "expired":
        dev_tls.expired_ca_bundle(path)
    elif ca == "garbage":
        path.write_text("this is not a certificate\n")
    # When the ingress starts
    done = run_cli(_env(node, GRIDBUS_TLS_CA=str(path)), "ingress", timeout=60)
    # Then it stops at once with a configuration error naming the variable and the file
    assert done.returncode == 1, done.stderr[-2000:]
    assert "GRIDBUS_TLS_CA" in done.stderr and str(path) in done.stderr, done.stderr[-2000:]

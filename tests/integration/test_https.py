"""TLS on the HTTP hops, with real processes: the gateway serving HTTPS (and asking for client
certificates), the Celery worker and the event-loop request worker delivering over HTTPS to
stand-ins on 127.0.0.1 whose certificates a throw-away CA (trustme) signed, or did not.

One stack for the module (a gateway, both workers, three HTTPS stand-ins in this process):
built once, about 10 s, as CI runs it once on a 2-core machine.
"""
from __future__ import annotations

import json
import socket
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import trustme

from bus.broker_admin import BrokerAdmin
from tests.support import HttpsStandIn, Proc, drop_vhost, env_of_its_own, gridbus, run_cli, start_gateway, wait_for

pytestmark = pytest.mark.broker

READINGS = {"noun": "MeterReadings", "source": "hes-a", "MeterReading": [
    {"meter": "UPM00000777", "intervalBlocks": [{"readingType": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
                                                 "intervalReadings": [{"timeStamp": "2026-11-01T00:15:00Z",
                                                                       "value": 0.25}]}]}]}
DETERMINANTS = {"usagePoint": "UP-UPM00000500", "from": "2026-11-01T00:00:00+05:30", "to": "2026-11-02T00:00:00+05:30"}
STANDS = ("good", "foreign", "misnamed")


def _routes(stands: dict) -> str:
    push = "".join(f"""\
          - id: p-{name}
            source: {{system: hes-a, connector: http-push, path: hes-a/{name}}}
            method: push
            message: {{noun: MeterReadings}}
            transform: [canonical, to_mdms_json]
            destinations:
              - {{system: mdms-{name}, connector: rest, url: "{stands[name].url}/messages", timeout_s: 5}}
            retry: {{attempts: 3, first_delay_s: 1, max_delay_s: 2}}
""" for name in STANDS)
    ask = "".join(f"""\
          - id: r-{name}
            source: {{system: billing-1, connector: http-request, path: billing-1/{name},
                     kind: billing-determinants, timeout_s: 10}}
            method: request-response
            destinations:
              - {{system: mdms-{name}, connector: rest-request, url: "{stands[name].url}/requests/x", timeout_s: 5}}
            retry: {{attempts: 3, first_delay_s: 1, max_delay_s: 2}}
""" for name in ("good", "foreign"))
    return "use_case: 2\nroutes:\n" + textwrap.indent(textwrap.dedent(push + ask), "  ")


@pytest.fixture(scope="module")
def tls_stack(rabbitmq_proc, management_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("https")
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp, "tls")
    logs = tmp / "logs"
    logs.mkdir()
    # the utility's CA: it signed the gateway's certificate, the stand-ins' but one, and the
    # source systems' client certificates; another CA signed the "foreign" stand-in's
    ca, stranger = trustme.CA(), trustme.CA()
    files = {name: str(tmp / f"{name}.pem") for name in ("ca", "gateway", "gateway-key", "client", "stranger-client")}
    ca.cert_pem.write_to_path(files["ca"])
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(files["gateway"])
    leaf.private_key_pem.write_to_path(files["gateway-key"])
    ca.issue_cert("hes-a.example").private_key_and_cert_chain_pem.write_to_path(files["client"])
    stranger.issue_cert("hes-a.example").private_key_and_cert_chain_pem.write_to_path(files["stranger-client"])
    stands = {"good": HttpsStandIn(ca.issue_cert("127.0.0.1")),
              "foreign": HttpsStandIn(stranger.issue_cert("127.0.0.1")),
              "misnamed": HttpsStandIn(ca.issue_cert("mdms.example"))}
    routes = tmp / "routes"
    routes.mkdir()
    (routes / "tls.yaml").write_text(_routes(stands))
    env.update({"GRIDBUS_ROUTES": str(routes), "GRIDBUS_DESTINATION_CA": files["ca"]})
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip() for s in ("hes-a", "billing-1")}
    admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost)
    procs = [Proc("worker", gridbus("worker", "-c", "2", "--kind", "deliveries"), env, logs).start(),
             Proc("request-worker", gridbus("worker", "--kind", "requests", "--pool", "asyncio"), env, logs).start()]
    try:
        gateway, url = start_gateway(env, logs, "--tls-cert", files["gateway"], "--tls-key", files["gateway-key"],
                                     "--header-timeout-s", "2", tls={"verify": files["ca"]})
        procs.append(gateway)

        def consuming():
            try:
                return all(admin.queue(f"gridbus.route.{r}").get("consumers", 0) > 0
                           for r in [f"p-{s}" for s in STANDS] + ["r-good", "r-foreign"])
            except Exception:  # noqa: BLE001 - not declared yet
                return False
        wait_for(consuming, 60, f"the workers (logs: {procs[0].log()[-1500:]} {procs[1].log()[-1500:]})")
        yield {"env": env, "url": url, "keys": keys, "files": files, "stands": stands, "logs": logs, "tmp": tmp,
               "admin": admin, "vhost": vhost, "management": management_url, "procs": procs}
    finally:
        with ThreadPoolExecutor(len(procs)) as stopping:  # side by side: a Celery worker takes seconds
            list(stopping.map(Proc.stop, procs))
        for stand in stands.values():
            stand.stop()
        drop_vhost(management_url, vhost)


def push(stack, path: str, **kw) -> requests.Response:
    kw.setdefault("verify", stack["files"]["ca"])
    return requests.post(f"{kw.pop('url', stack['url'])}/v1/push/hes-a/{path}", json=READINGS, timeout=10,
                         headers={"X-API-Key": stack["keys"]["hes-a"]}, **kw)


def dead_letters(stack, route: str, at_least: int = 1) -> list[dict]:
    """The headers of the route's dead letters (read through the management API, left in place)."""
    api = f"{stack['management']}/api/queues/{stack['vhost']}/gridbus.dlq.{route}/get"

    def some():
        got = requests.post(api, auth=("guest", "guest"), timeout=10, json={
            "count": 50, "ackmode": "ack_requeue_true", "encoding": "auto"})
        letters = [m["properties"].get("headers", {}) for m in got.json()] if got.ok else []
        return letters if len(letters) >= at_least else None
    return wait_for(some, 30, f"a dead letter on {route}")


# -- the gateway serves HTTPS ----------------------------------------------------------------

def test_a_push_over_https_with_the_ca_is_taken_and_delivered_over_https(tls_stack):
    # Given the gateway serving HTTPS with a certificate the utility's CA signed
    before = len(tls_stack["stands"]["good"].received)
    # When HES-A pushes over HTTPS, verifying against that CA
    answer = push(tls_stack, "good")
    # Then the push is taken
    assert answer.status_code == 202, answer.text
    # and the Celery worker delivers it over HTTPS to the destination GRIDBUS_DESTINATION_CA verifies
    wait_for(lambda: len(tls_stack["stands"]["good"].received) > before, 30,
             f"the delivery (worker log: {tls_stack['procs'][0].log()[-2000:]})")
    assert tls_stack["stands"]["good"].received[-1][0] == "/messages"


def test_a_plain_http_client_on_the_https_port_gets_nothing_useful(tls_stack):
    plain = tls_stack["url"].replace("https://", "http://")
    # When a client speaks plain HTTP to the HTTPS port  Then no answer, only a closed connection
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{plain}/v1/push/hes-a/good", json=READINGS, timeout=5,
                      headers={"X-API-Key": tls_stack["keys"]["hes-a"]})
    # and a client that does not trust the gateway's CA does not go on
    with pytest.raises(requests.exceptions.SSLError):
        push(tls_stack, "good", verify=True)


def test_clients_that_never_finish_a_handshake_hold_no_one_up_and_are_closed(tls_stack):
    port = int(tls_stack["url"].rsplit(":", 1)[1])
    # Given 20 connections that open TCP and never send a ClientHello
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        # When another client pushes meanwhile  Then it is answered at once
        started = time.monotonic()
        assert push(tls_stack, "good").status_code == 202
        assert time.monotonic() - started < 3
        # and the silent ones are closed by the handshake deadline (--header-timeout-s 2), not after
        # asyncio's default 60 s
        for s in silent:
            s.settimeout(10)
            assert s.recv(1) == b""
        assert time.monotonic() - started < 8
    finally:
        for s in silent:
            s.close()


def test_with_client_certificates_required_a_client_without_one_is_refused(tls_stack):
    # Given a gateway that asks for a client certificate signed by the utility's CA (routes of
    # pushes only, so it takes no replies of the other gateway's requests)
    files, routes = tls_stack["files"], tls_stack["tmp"] / "push-only"
    routes.mkdir(exist_ok=True)
    (routes / "p.yaml").write_text(_routes(tls_stack["stands"]).split("  - id: r-good")[0])
    env = {**tls_stack["env"], "GRIDBUS_GATEWAY_TLS_CERT": files["gateway"],
           "GRIDBUS_GATEWAY_TLS_KEY": files["gateway-key"], "GRIDBUS_GATEWAY_TLS_CLIENT_CA": files["ca"]}
    server, url = start_gateway(env, tls_stack["logs"], "--routes-dir", str(routes), name="gateway-mtls",
                                tls={"verify": files["ca"], "cert": files["client"]})
    try:
        # When a client presents no certificate, or one another CA signed  Then the handshake fails
        for cert in (None, files["stranger-client"]):
            with pytest.raises(requests.ConnectionError):
                push(tls_stack, "good", url=url, cert=cert)
        # When it presents one the CA signed  Then its push is taken
        assert push(tls_stack, "good", url=url, cert=files["client"]).status_code == 202
        # and the API key is still required on top of the certificate
        anonymous = requests.post(f"{url}/v1/push/hes-a/good", json=READINGS, timeout=10, verify=files["ca"],
                                  cert=files["client"])
        assert anonymous.status_code == 401, anonymous.text
    finally:
        server.stop()


# -- destinations over HTTPS -----------------------------------------------------------------

@pytest.mark.parametrize("stand, why", [("foreign", "unable to get local issuer certificate"),
                                        ("misnamed", "certificate is not valid for '127.0.0.1'")])
def test_a_destination_whose_certificate_does_not_verify_is_dead_lettered_saying_so(tls_stack, stand, why):
    # Given a destination whose certificate another CA signed, or that names another host
    before = len(tls_stack["stands"][stand].received)
    # When a push for it is taken
    assert push(tls_stack, stand).status_code == 202
    # Then the Celery worker dead-letters it at once, with the reason, and sends it nothing
    letter = dead_letters(tls_stack, f"p-{stand}")[0]
    assert "certificate verification failed" in letter["gridbus-dl-reason"] and why in letter["gridbus-dl-reason"]
    assert letter["gridbus-dl-error-class"] == "PermanentDeliveryError" and letter["gridbus-dl-attempts"] == 1
    assert len(tls_stack["stands"][stand].received) == before


def test_the_event_loop_request_worker_asks_over_https_and_refuses_an_unverified_destination(tls_stack):
    def ask(path: str) -> requests.Response:
        return requests.post(f"{tls_stack['url']}/v1/requests/billing-1/{path}", timeout=30,
                             verify=tls_stack["files"]["ca"], headers={"X-API-Key": tls_stack["keys"]["billing-1"]},
                             json={"Header": {"MessageID": str(uuid.uuid4())}, "Request": DETERMINANTS})
    # When billing asks over HTTPS for a destination GRIDBUS_DESTINATION_CA verifies
    answer = ask("good")
    # Then `gridbus worker --pool asyncio` asked it over HTTPS and the reply came back
    assert answer.status_code == 200 and answer.json()["Reply"]["Result"] == "OK", answer.text
    assert tls_stack["stands"]["good"].received[-1][0] == "/requests/x"
    # When the destination's certificate does not verify
    answer = ask("foreign")
    # Then the requester is told why, and the request is dead-lettered with the reason
    reply = answer.json()
    assert reply["Reply"]["Result"] == "FAILED", answer.text
    errors = json.dumps(reply["Reply"].get("Error"))
    assert "DESTINATION_FAILED" in errors and "certificate verification failed" in errors, answer.text
    letter = dead_letters(tls_stack, "r-foreign")[0]
    assert "certificate verification failed" in letter["gridbus-dl-reason"]

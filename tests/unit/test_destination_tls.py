"""Outgoing HTTPS: destinations verify against GRIDBUS_DESTINATION_CA (else the system's store),
optionally with a client certificate, and a certificate that does not verify is a permanent
delivery failure that says so.  Real HTTPS stand-ins in this process (a throw-away CA from
trustme, 127.0.0.1); the worker processes over HTTPS: tests/integration/test_https.py."""
from __future__ import annotations

import asyncio
import ssl

import pytest
import requests
import trustme

from bus.envelope import Envelope
from bus.errors import ConfigError, PermanentDeliveryError
from bus.routes.model import Endpoint
from bus.tls import DestinationTls
from bus.transform import Outbound
from connectors.hes_request import HesRequestDestination
from connectors.http_session import LoopSessions, ThreadSessions
from connectors.rest_out import RestDestination
from connectors.rest_request import RestRequestDestination
from tests.support import HttpsStandIn

ENVELOPE = Envelope(route_id="r", source="hes-a", verb="created", noun="MeterReadings", message_id="m-1")
OUTBOUND = Outbound(b'{"readings": []}', "application/json", "MeterReadings")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throw-away CA, its certificate in a file, and three stand-ins: one it signed for
    127.0.0.1, one another CA signed, one it signed for another host name."""
    tmp = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("billing-gridbus.example")
    client_file = tmp / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))
    stands = {"good": HttpsStandIn(ca.issue_cert("127.0.0.1")),
              "foreign": HttpsStandIn(stranger.issue_cert("127.0.0.1")),
              "misnamed": HttpsStandIn(ca.issue_cert("mdms.example")),
              "mutual": HttpsStandIn(ca.issue_cert("127.0.0.1"), client_ca=ca)}
    yield {"ca": str(ca_file), "client": str(client_file), "tmp": tmp, **stands}
    for stand in stands.values():
        stand.stop()


def rest(url: str) -> Endpoint:
    return Endpoint("mdms-1", "rest", {"url": f"{url}/messages", "timeout_s": 5.0, "headers": {}})


def deliver(tls: DestinationTls, url: str):
    destination = RestDestination()
    destination.sessions = ThreadSessions(tls)
    return destination.deliver(OUTBOUND, ENVELOPE, rest(url))


def test_a_destination_whose_certificate_the_configured_ca_signed_is_delivered_to(pki):
    # Given GRIDBUS_DESTINATION_CA naming the CA that signed the destination's certificate
    tls = DestinationTls(ca=pki["ca"])
    # When the REST destination delivers  Then the destination took it
    receipt = deliver(tls, pki["good"].url)
    assert receipt.status == "200" and pki["good"].received[-1][0] == "/messages"


@pytest.mark.parametrize("stand, why", [("foreign", "unable to get local issuer certificate"),
                                        ("misnamed", "mismatch, certificate is not valid for '127.0.0.1'")])
def test_a_certificate_that_does_not_verify_is_a_permanent_failure_that_says_so(pki, stand, why):
    # Given the configured CA, and a destination whose certificate another CA signed, or that
    # names another host
    before = len(pki[stand].received)
    # When the REST destination delivers
    with pytest.raises(PermanentDeliveryError) as failed:
        deliver(DestinationTls(ca=pki["ca"]), pki[stand].url)
    # Then it is dead-lettered at once (permanent), saying the certificate did not verify and why,
    # and nothing reached the destination (so the command of a request is failed, not unknown)
    assert "certificate verification failed" in str(failed.value) and why in str(failed.value)
    assert failed.value.destination == "mdms-1" and failed.value.maybe_sent is False
    assert len(pki[stand].received) == before


def test_without_a_configured_ca_the_system_store_is_used(pki, monkeypatch):
    # Given no GRIDBUS_DESTINATION_CA (and no REQUESTS_CA_BUNDLE): the system's store, which
    # does not hold the throw-away CA
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    # Then the destination's certificate does not verify
    with pytest.raises(PermanentDeliveryError, match="certificate verification failed"):
        deliver(DestinationTls(), pki["good"].url)


def test_the_configured_ca_wins_over_the_environments_bundle_even_with_a_proxy_set(pki, monkeypatch):
    # Given a proxy variable (requests then reads the environment per call) and a REQUESTS_CA_BUNDLE
    # naming another CA, for the utility's other software
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    sessions = ThreadSessions(DestinationTls(ca=pki["ca"]))
    assert sessions.trust_env is True
    # When the destination is asked  Then GRIDBUS_DESTINATION_CA is the one used
    answer = sessions.get().post(f"{pki['good'].url}/messages", data=b"{}", timeout=5)
    assert answer.status_code == 200


def test_the_client_certificate_is_presented_when_configured(pki):
    # Given a destination that requires a client certificate its CA signed (mutual TLS), and
    # GRIDBUS_DESTINATION_CERT naming a file with such a certificate and its key
    tls = DestinationTls.from_environment({"GRIDBUS_DESTINATION_CA": pki["ca"],
                                           "GRIDBUS_DESTINATION_CERT": pki["client"]})
    # When the thread worker's REST destination delivers  Then the destination took it
    assert deliver(tls, pki["mutual"].url).status == "200"
    # When the event-loop worker asks it  Then it answers too
    destination = RestRequestDestination()
    destination.loop_sessions = LoopSessions(tls)

    async def ask():
        try:
            return await destination.request_async({"Header": {}, "Request": {}}, ENVELOPE, Endpoint(
                "mdms-1", "rest-request", {"url": f"{pki['mutual'].url}/requests/x", "timeout_s": 5.0, "headers": {}}))
        finally:
            await destination.close_async()
    assert asyncio.run(ask())["Reply"]["Result"] == "OK"
    context = LoopSessions(tls).ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_the_event_loop_worker_verifies_the_same_way(pki):
    # Given the request destination of `gridbus worker --pool asyncio`, with the configured CA
    destination = RestRequestDestination()
    destination.loop_sessions = LoopSessions(DestinationTls(ca=pki["ca"]))
    document = {"Header": {}, "Request": {"usagePoint": "UP-1"}}

    async def ask(url: str):
        try:
            return await destination.request_async(document, ENVELOPE, Endpoint(
                "mdms-1", "rest-request", {"url": f"{url}/requests/x", "timeout_s": 5.0, "headers": {}}))
        finally:
            await destination.close_async()

    # When it asks a destination the CA signed  Then it has the reply
    assert asyncio.run(ask(pki["good"].url))["Reply"]["Result"] == "OK"
    # When it asks one whose certificate does not verify  Then a permanent failure that says why
    for stand in ("foreign", "misnamed"):
        with pytest.raises(PermanentDeliveryError, match="certificate verification failed"):
            asyncio.run(ask(pki[stand].url))


@pytest.mark.parametrize("loop", [False, True], ids=["threads", "event-loop"])
def test_an_hes_whose_certificate_does_not_verify_fails_its_meters_at_once(pki, tmp_path, loop):
    # Given meters on an HES whose certificate another CA signed
    assignment = tmp_path / "assignment.csv"
    assignment.write_text("meter,hes\nM1,hes-a\nM2,hes-a\n")
    tls = DestinationTls(ca=pki["ca"])
    destination = HesRequestDestination()
    destination.sessions, destination.loop_sessions = ThreadSessions(tls), LoopSessions(tls)
    endpoint = Endpoint("hes", "hes-request", {"assignment": str(assignment), "hes": {"hes-a": pki["foreign"].url},
                                               "operation": "meter-readings", "timeout_s": 5.0, "retry_for_s": 30.0})
    document = {"Header": {}, "Request": {"meters": ["M1", "M2"]}}

    async def ask_async():
        try:
            return await destination.request_async(document, ENVELOPE, endpoint)
        finally:
            await destination.close_async()

    # When a read is asked
    reply = asyncio.run(ask_async()) if loop else destination.request(document, ENVELOPE, endpoint)
    # Then each meter fails HES_UNTRUSTED saying why, without the retry budget (30 s) being spent
    errors = reply["Reply"]["Error"]
    assert [e["code"] for e in errors] == ["HES_UNTRUSTED", "HES_UNTRUSTED"]
    assert "certificate verification failed" in errors[0]["reason"]


def test_bad_files_are_named_at_start(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [({"GRIDBUS_DESTINATION_CA": str(tmp_path / "missing.pem")}, "GRIDBUS_DESTINATION_CA"),
             ({"GRIDBUS_DESTINATION_CA": str(garbage)}, "GRIDBUS_DESTINATION_CA"),
             ({"GRIDBUS_DESTINATION_CERT": str(garbage)}, "GRIDBUS_DESTINATION_CERT"),
             ({"GRIDBUS_DESTINATION_KEY": pki["client"]}, "GRIDBUS_DESTINATION_KEY")]
    for env, named in cases:
        with pytest.raises(ConfigError) as bad:
            DestinationTls.from_environment(env)
        assert named in str(bad.value), bad.value
        path = next(iter(env.values()))
        assert path in str(bad.value) or "without" in str(bad.value)
    # And nothing set: the system's store, no client certificate
    assert DestinationTls.from_environment({}) == DestinationTls()


def test_a_connection_refused_is_still_transient_not_a_certificate_failure():
    from connectors.http_outcome import certificate_failure, not_answered

    try:
        requests.get("https://127.0.0.1:9/", timeout=2)
    except requests.RequestException as exc:
        assert certificate_failure(exc) is None
        assert not isinstance(not_answered("mdms-1", exc, maybe_sent=False), PermanentDeliveryError)

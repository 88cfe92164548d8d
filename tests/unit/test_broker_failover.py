"""Failover logic without a broker: which errors move to the next node, and where the next attempt goes."""
from __future__ import annotations

import socket

import amqp
import pytest

from bus.errors import BrokerBlocked, BrokerError, BrokerUnavailable
from bus.messaging.aio import next_address
from bus.messaging.connect import first_answering
from bus.messaging.errors import amqp_errors

THREE = "amqp://u:p@n1:5672//;amqp://u:p@n2:5672//;amqp://u:p@n3:5672//"


def test_each_reconnect_attempt_goes_to_the_next_address_round_the_list():
    # Given three addresses  When attempts end one after another from the first  Then they go 2, 3, 1, 2
    urls = THREE.split(";")
    at, seen = 0, []
    for _ in range(4):
        at = next_address(urls, at)
        seen.append(at)
    assert seen == [1, 2, 0, 1]
    # and with one address every attempt goes to it
    assert next_address(urls[:1], 0) == 0


def test_the_first_address_that_answers_is_used_after_nodes_that_are_away():
    # Given node 1 refuses connections (it died) and node 2 answers
    tried = []

    def open_one(address):
        tried.append(address.host)
        if address.host == "n1":
            with amqp_errors(f"connecting to {address}"):
                raise ConnectionRefusedError(111, "Connection refused")
        return f"connection to {address.host}"

    # When a connection is made  Then it is node 2's, and node 3 is never tried
    assert first_answering(THREE, open_one) == "connection to n2"
    assert tried == ["n1", "n2"]


def test_no_node_answering_is_unavailable_but_every_node_refusing_is_a_plain_broker_error():
    # Given every node away  Then the error says so (BrokerUnavailable: trying again may work) and names each
    def away(address):
        with amqp_errors(f"connecting to {address}"):
            raise socket.timeout("timed out")

    with pytest.raises(BrokerUnavailable) as error:
        first_answering(THREE, away)
    assert all(f"n{i}:5672" in str(error.value) for i in (1, 2, 3))

    # Given every node refusing the login  Then it is a BrokerError that is not "unavailable"
    def refused(address):
        with amqp_errors(f"connecting to {address}"):
            raise amqp.exceptions.AccessRefused("ACCESS_REFUSED")

    with pytest.raises(BrokerError) as error:
        first_answering(THREE, refused)
    assert not isinstance(error.value, BrokerUnavailable)


@pytest.mark.parametrize("raised, lost", [
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (amqp.exceptions.RecoverableConnectionError("connection already closed"), True),
    (amqp.exceptions.ConnectionForced("node shutting down"), True),
    (amqp.exceptions.NotFound("no exchange 'gridbus.x'"), False),
    (amqp.exceptions.PreconditionFailed("inequivalent arg"), False),
])
def test_a_lost_connection_is_unavailable_and_a_refusal_is_not(raised, lost):
    # Given an error of py-amqp  When it crosses the boundary  Then only a lost connection is BrokerUnavailable
    with pytest.raises(BrokerError) as error:
        with amqp_errors("publishing"):
            raise raised
    assert isinstance(error.value, BrokerUnavailable) is lost
    assert error.value.__cause__ is raised


def test_blocked_and_unavailable_are_broker_errors():
    # callers that catch BrokerError (the worker's requeue, the gateway's 503) see both
    assert issubclass(BrokerBlocked, BrokerError) and issubclass(BrokerUnavailable, BrokerError)

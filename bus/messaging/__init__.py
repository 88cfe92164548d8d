"""The messaging layer: everything gridbus does with AMQP, in one place.

    addresses   the broker URL setting, possibly several brokers ``;``-separated
    connect     py-amqp and pika connections to the first broker that answers
    reconnect   ``until_stopped`` with ``Backoff`` (0.5 s doubling to 15 s, jittered)
    consumer    ``BatchConsumer``: batches by count or time window, acked after ``handle``
    publisher   ``ConfirmingPublisher`` (py-amqp): many in flight, ``flush`` waits for confirms
    aio         aio-pika for event loops: ``connect``, ``ConfirmedPublisher``
    tls         ``amqps://``: GRIDBUS_TLS_* read and checked, the client context and options
    errors      ``amqp_errors``, ``pika_errors``, ``aio_errors``: the client libraries'
                exceptions become ``bus.errors.BrokerError`` here and nowhere else

docs/messaging.md says which client library is used where, and why.
"""
from bus.messaging.addresses import BrokerAddress, broker_addresses, broker_urls
from bus.messaging.connect import connect, pika_connect
from bus.messaging.consumer import BatchConsumer, Delivery
from bus.messaging.errors import aio_errors, amqp_errors, pika_errors
from bus.messaging.publisher import ConfirmingPublisher
from bus.messaging.reconnect import Backoff, until_stopped

__all__ = ["Backoff", "BatchConsumer", "BrokerAddress", "ConfirmingPublisher", "Delivery", "aio_errors",
           "amqp_errors", "broker_addresses", "broker_urls", "connect", "pika_connect", "pika_errors",
           "until_stopped"]

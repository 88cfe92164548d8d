"""Old import path of ``bus.messaging``, kept for ``bus/bench`` until it imports the new one."""
from bus.messaging.connect import connect, pika_connect
from bus.messaging.errors import amqp_errors as broker_errors
from bus.messaging.errors import pika_errors
from bus.messaging.reconnect import until_stopped

__all__ = ["broker_errors", "connect", "pika_connect", "pika_errors", "until_stopped"]

"""The messaging layer against a real RabbitMQ: the batch consumer, broker address lists, errors."""
from __future__ import annotations

import asyncio
import threading

import pytest

from bus.errors import BrokerError
from bus.messaging import Backoff, BatchConsumer, ConfirmingPublisher, connect, pika_connect
from bus.messaging import aio as messaging_aio
from tests.support import free_port, wait_for


@pytest.fixture
def broker_url(rabbitmq_proc, vhost) -> str:
    return f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/{vhost}"


def declare(url: str, *queues: str) -> None:
    conn = connect(url, "test-declare")
    ch = conn.channel()
    for queue in queues:
        ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    conn.close()


def publish(url: str, queue: str, count: int, start: int = 0) -> None:
    with ConfirmingPublisher(url, "test-publisher") as pub:
        for n in range(start, start + count):
            pub.publish("", queue, f"m{n}".encode(), {"message_id": f"id-{n}", "delivery_mode": 2}, {"n": n})
        pub.flush()


def ready(url: str, queue: str) -> int:
    conn = pika_connect(url, "test-count")
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def consuming(consumer: BatchConsumer, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=consumer.consume, args=(stop,), daemon=True)
    thread.start()
    return thread


def test_a_batch_is_acked_once_the_function_returned_and_hands_over_what_was_delivered(broker_url):
    # Given 5 messages on a queue
    declare(broker_url, "q.a")
    publish(broker_url, "q.a", 5)
    batches = []
    # When they are consumed, the function taking the batch and the consumer then stopped
    stop = threading.Event()
    consumer = BatchConsumer(broker_url, ["q.a"], batches.append, name="test", batch_max=5, window_s=5)
    thread = consuming(consumer, stop)
    wait_for(lambda: batches, 20, "a batch")
    stop.set()
    thread.join(10)
    # Then the function got all five at once, with queue, body, properties and headers
    [batch] = batches
    assert [(d.queue, d.body, d.properties["message_id"], d.headers["n"], d.redelivered) for d in batch] == [
        ("q.a", f"m{n}".encode(), f"id-{n}", n, False) for n in range(5)]
    # and once the consumer's connection is gone nothing returns to the queue: they were acked
    assert ready(broker_url, "q.a") == 0


def test_a_batch_whose_function_raised_is_not_acked_and_comes_back_redelivered(broker_url):
    # Given 3 messages, and a function that refuses the first batch it is given
    declare(broker_url, "q.b")
    publish(broker_url, "q.b", 3)
    seen = []

    def refuse_once(batch):
        seen.append([(d.body, d.redelivered) for d in batch])
        if len(seen) == 1:
            raise ValueError("the store is away")

    stop = threading.Event()
    consumer = BatchConsumer(broker_url, ["q.b"], refuse_once, name="test", batch_max=3, window_s=5,
                             backoff=Backoff(first_s=0.05, cap_s=0.05))
    # When the consumer serves (reconnecting after the failure)
    thread = threading.Thread(target=consumer.serve, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: len(seen) >= 2, 20, "the batch again")
    stop.set()
    thread.join(10)
    # Then the same three came back, marked redelivered, and were acked the second time
    assert seen[0] == [(b"m0", False), (b"m1", False), (b"m2", False)]
    assert seen[1] == [(b"m0", True), (b"m1", True), (b"m2", True)]
    assert ready(broker_url, "q.b") == 0


def test_the_time_window_hands_over_a_batch_that_is_not_full(broker_url):
    # Given a consumer of batches of up to 100 within 0.3 s, running
    declare(broker_url, "q.c")
    batches = []
    stop = threading.Event()
    thread = consuming(BatchConsumer(broker_url, ["q.c"], batches.append, name="test", batch_max=100,
                                     window_s=0.3), stop)
    # When only 3 messages come
    publish(broker_url, "q.c", 3)
    # Then they are handed over as one batch while the consumer still runs
    wait_for(lambda: batches, 10, "the partial batch")
    assert [len(b) for b in batches] == [3]
    stop.set()
    thread.join(10)


def test_a_drain_takes_what_the_queues_hold_and_returns(broker_url):
    # Given 4 messages on one queue and 3 on another, and batches of 2
    declare(broker_url, "q.d1", "q.d2")
    publish(broker_url, "q.d1", 4)
    publish(broker_url, "q.d2", 3, start=10)
    batches = []
    consumer = BatchConsumer(broker_url, ["q.d1", "q.d2"], batches.append, name="test", batch_max=2, window_s=5)
    # When drained once
    moved = consumer.drain()
    # Then all 7 were handed over, in batches of at most 2, each with the queue it came from
    assert moved == 7
    assert max(len(b) for b in batches) == 2
    assert sorted((d.queue, d.body) for b in batches for d in b) == sorted(
        [("q.d1", f"m{n}".encode()) for n in range(4)] + [("q.d2", f"m{n}".encode()) for n in range(10, 13)])
    # and a drain of empty queues returns at once with nothing
    assert consumer.drain() == 0
    assert ready(broker_url, "q.d1") == ready(broker_url, "q.d2") == 0


def test_a_broker_address_list_whose_first_address_refuses_connects_to_the_next(broker_url):
    # Given a setting that names a port where nothing listens first, then the broker
    refused = f"amqp://guest:guest@127.0.0.1:{free_port()}/x"
    both = f"{refused};{broker_url}"
    declare(both, "q.e")
    publish(both, "q.e", 2)
    # When the consumer drains through it  Then it reached the second address
    assert BatchConsumer(both, ["q.e"], lambda batch: None, name="test").drain() == 2
    # and the event-loop client does the same
    async def reach() -> None:
        connection = await messaging_aio.connect(both, "test-aio")
        await connection.close()
    asyncio.run(reach())


def test_what_the_client_libraries_raise_comes_out_as_broker_error(broker_url):
    # Given addresses where nothing listens
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}//;amqp://guest:guest@127.0.0.1:{free_port()}//"
    # When py-amqp, pika and aio-pika connect there  Then each raises BrokerError naming both addresses
    for attempt in (lambda: connect(nowhere), lambda: pika_connect(nowhere),
                    lambda: asyncio.run(messaging_aio.connect(nowhere, "test-aio"))):
        with pytest.raises(BrokerError, match=r"127\.0\.0\.1:\d+.*; .*127\.0\.0\.1:\d+"):
            attempt()
    # When a consumer meets a queue that does not exist  Then BrokerError too
    with pytest.raises(BrokerError, match="NOT_FOUND"):
        BatchConsumer(broker_url, ["q.none"], lambda batch: None, name="test").consume(threading.Event())

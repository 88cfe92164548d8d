"""The hand-written baseline for `gridbus bench rpc`: the least an HTTP → RabbitMQ → HES round trip costs.

    python -m gridbus_dev.bench.rpc_pika front PORT URL REQUEST_QUEUE REPLY_QUEUE
    python -m gridbus_dev.bench.rpc_pika worker URL REQUEST_QUEUE HES_A_URL HES_B_URL THREADS

``front`` is an HTTP server (waitress, a thread per request, as the gateway was until it moved to an event loop) whose request threads
publish the posted document, persistent and confirmed, to a quorum queue with
``reply_to`` and ``correlation_id``, then wait for the reply that its consumer
thread takes from a quorum reply queue.  ``worker`` takes requests (manual
acks), POSTs each to the HES that holds the meter, publishes the answer
(confirmed) and acks.  The same broker guarantees as gridbus, and nothing
else: no routes, validation, request store, audit, tracing or Celery.  What
gridbus costs beyond this is what its features cost.
"""
from __future__ import annotations

import json
import sys
import threading
import uuid

import pika
import requests


def hes_of(meter: str) -> str:
    """The benchmark's meter → HES assignment (UPM00000001 …): odd meters on HES-B, even on HES-A."""
    return "hes-a" if int(meter[3:]) % 2 == 0 else "hes-b"


def _connect(url: str, name: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def declare(url: str, *queues: str) -> None:
    conn = _connect(url, "rpc-baseline-declare")
    ch = conn.channel()
    for q in queues:
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()


def front(port: int, url: str, request_queue: str, reply_queue: str) -> None:
    import waitress

    declare(url, request_queue, reply_queue)
    waiting: dict[str, list] = {}
    lock = threading.Lock()
    local = threading.local()

    def consume_replies() -> None:
        conn = _connect(url, "rpc-baseline-replies")
        ch = conn.channel()
        ch.basic_qos(prefetch_count=200)

        def on_reply(channel, method, props, body):
            with lock:
                slot = waiting.get(props.correlation_id)
            if slot is not None:
                slot.append(body)
                slot[0].set()
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(reply_queue, on_reply)
        ch.start_consuming()

    threading.Thread(target=consume_replies, daemon=True).start()

    def channel():
        ch = getattr(local, "channel", None)
        if ch is None:
            ch = local.channel = _connect(url, "rpc-baseline-front").channel()
            ch.confirm_delivery()
        return ch

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/health":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        cid = uuid.uuid4().hex
        slot = [threading.Event()]
        with lock:
            waiting[cid] = slot
        try:
            channel().basic_publish("", request_queue, body, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", correlation_id=cid, reply_to=reply_queue))
            if not slot[0].wait(10):
                start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
                return [b"timeout"]
        finally:
            with lock:
                waiting.pop(cid, None)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [slot[1]]

    waitress.serve(app, host="127.0.0.1", port=port, threads=32, _quiet=True)


def worker(url: str, request_queue: str, hes_a: str, hes_b: str, threads: int) -> None:
    declare(url, request_queue)

    def one_consumer() -> None:
        conn = _connect(url, "rpc-baseline-worker")
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_qos(prefetch_count=4)
        session = requests.Session()

        def on_request(channel, method, props, body):
            meter = json.loads(body)["Request"]["meters"][0]
            hes = hes_a if hes_of(meter) == "hes-a" else hes_b
            answer = session.post(f"{hes}/requests/meter-readings", data=body,
                                  headers={"Content-Type": "application/json"}, timeout=10)
            channel.basic_publish("", props.reply_to, answer.content, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", correlation_id=props.correlation_id))
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(request_queue, on_request)
        ch.start_consuming()

    pool = [threading.Thread(target=one_consumer, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "front":
        front(int(args[0]), *args[1:4])
    elif command == "worker":
        worker(*args[:4], int(args[4]))
    else:
        sys.exit(f"unknown command {command!r}: front or worker")

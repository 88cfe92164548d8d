"""The gateway's reply consumer: replies from ``gridbus.replies`` into the request store.

Every reply is kept (insert, then ack), whether or not anyone still waits for
it: a request whose sync wait timed out gets its late reply by
``GET /v1/requests/{id}``.  A waiting gateway thread is woken; an asynchronous
request's reply is handed to the callback route.  Replies are matched by
correlation id = request id only, so a reply can never reach another request.
"""
from __future__ import annotations

import json
import logging
import threading

from bus import naming
from bus.amqp_client import pika_connect, pika_errors
from bus.publisher import ConfirmingPublisher
from bus.requests.dispatch import publish_callback
from bus.requests.store import RequestStore
from bus.routes.model import Route

log = logging.getLogger("gridbus.gateway.replies")


def state_of(kind: str, reply: dict, hinted: str | None) -> str:
    if hinted:
        return hinted
    if kind != "commands":
        return "replied"
    return "failed" if (reply.get("Reply") or {}).get("Result") == "FAILED" else "executed"


class ReplyConsumer:
    def __init__(self, broker_url: str, store: RequestStore, waiters, routes: list[Route]):
        self.broker_url, self.store, self.waiters, self.routes = broker_url, store, waiters, routes
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._forever, name="gateway-replies", daemon=True)

    def start(self) -> "ReplyConsumer":
        self.thread.start()
        return self

    def _forever(self) -> None:
        while not self.stop.is_set():
            try:
                self._consume()
            except Exception as exc:  # broker restart: replies wait in their quorum queue
                log.warning("reply consumer: %s; reconnecting in 2s", exc)
                self.stop.wait(2)

    def _consume(self) -> None:
        conn = pika_connect(self.broker_url, "gridbus-gateway-replies")
        publisher = ConfirmingPublisher(self.broker_url, "gridbus-gateway-callbacks")
        try:
            with pika_errors("consuming replies"):
                ch = conn.channel()
                ch.basic_qos(prefetch_count=200)

                taken = []

                def on_reply(channel, method, props, body):
                    self._take(props, body, publisher)  # stored (committed) before it is acked
                    taken.append(method.delivery_tag)

                ch.basic_consume(naming.REPLIES_QUEUE, on_reply)
                while not self.stop.is_set():
                    conn.process_data_events(time_limit=0.2)
                    if taken:  # one ack for what this round took, not a frame per reply
                        ch.basic_ack(taken[-1], multiple=True)
                        taken.clear()
        finally:
            publisher.close()
            try:
                conn.close()
            except Exception:
                pass

    def _take(self, props, body: bytes, publisher: ConfirmingPublisher) -> None:
        request_id = props.correlation_id
        try:
            reply = json.loads(body)
        except ValueError:
            log.error("reply to %s is not JSON; dropped", request_id)
            return
        request = self.store.get(request_id) if request_id else None
        if request is None:
            log.warning("reply for a request this gateway does not hold: %s", request_id)
            return
        hinted = (props.headers or {}).get(naming.H_REPLY_STATE)
        kept = self.store.record_reply(request_id, reply, state_of(request.kind, reply, hinted))
        if kept is not None and kept.reply_address and kept.reply == reply:
            publish_callback(publisher, self.routes, kept, reply)
        self.waiters.done(request_id, kept if kept is not None and kept.reply is not None else None)

"""Every exchange, queue, routing key and task name, derived from a route id.

Nobody spells a broker name anywhere else: code, tests and the CLI call these.
"""
from __future__ import annotations

import re

PREFIX = "gridbus"
ROUTE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")

INGRESS_EXCHANGE = f"{PREFIX}.ingress"          # topic; connectors publish here
EVENTS_EXCHANGE = f"{PREFIX}.events"            # topic; canonical events <Noun>.<verb>.<source>
UNROUTABLE_EXCHANGE = f"{PREFIX}.unroutable"    # fanout; alternate exchange of the two above
UNROUTABLE_QUEUE = f"{PREFIX}.unroutable"
RECONCILIATION_QUEUE = f"{PREFIX}.reconciliation"  # chunk outcomes back to the file-drop ingress
FILE_REPORTS_QUEUE = f"{PREFIX}.file-reports"      # FileReconciliation events, for operators' tools
FILE_REPORTS_KEY = "FileReconciliation.#"
TRACE_EXCHANGE = f"{PREFIX}.trace"       # fanout; trace events (JSON arrays) from every hop
TRACE_QUEUE = f"{PREFIX}.trace"          # quorum, bounded; the recorder consumes it
REPLIES_QUEUE = f"{PREFIX}.replies"      # quorum; replies to requests, by correlation_id = request id
# headers of request-response messages
H_REQUEST_KIND = f"{PREFIX}-request-kind"
H_EXPIRES_AT = f"{PREFIX}-expires-at"    # epoch seconds; a command is never executed after it
H_REDELIVERED = f"{PREFIX}-redelivered"  # set by the worker, never sent: the broker redelivered it
H_REPLY_STATE = f"{PREFIX}-reply-state"  # on a reply: the state it puts the request in (e.g. expired)


def route_routing_key(route_id: str) -> str:
    """Key a connector publishes with; dot-free ids keep topic matching exact."""
    return f"route.{route_id}"


def route_binding_key(route_id: str) -> str:
    # '#.' lets Celery's native delayed delivery (which prefixes 28 delay bits)
    # reach the same queue as a plain publish.
    return f"#.{route_routing_key(route_id)}"


def route_queue_name(route_id: str) -> str:
    return f"{PREFIX}.route.{route_id}"


def dead_letter_exchange_name(route_id: str) -> str:
    return f"{PREFIX}.dlx.{route_id}"


def dead_letter_queue_name(route_id: str) -> str:
    return f"{PREFIX}.dlq.{route_id}"


def inbound_queue_name(route_id: str) -> str:
    """Raw messages from a system that publishes over AMQP, before the ingress batches them."""
    return f"{PREFIX}.in.{route_id}"


HES_INGRESS_EXCHANGE = f"{PREFIX}.hes-ingress"  # topic; external systems publish raw messages here


def task_name(route_id: str) -> str:
    return f"{PREFIX}.route.{route_id}"


def events_routing_key(noun: str, verb: str, source: str) -> str:
    return f"{noun}.{verb}.{source}"


def is_owned(name: str) -> bool:
    """Broker objects that ``routes plan`` compares (ours and Celery's delay set)."""
    return name.startswith(PREFIX + ".") or name.startswith("celery_delayed_")
